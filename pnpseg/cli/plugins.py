"""``pnpseg plugins``: what is installed and what each plugin registers."""

from __future__ import annotations

import dataclasses

import typer

from pnpseg.cli.app import app, json_summary


@app.command()
def plugins(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text.")) -> None:
    """List installed plugins and what each registers (adapters, postprocessors, scorers, ...).

    One block per plugin, wrapped rather than cut, so names stay readable at any width;
    plugins that were skipped are listed as BROKEN with the reason.
    """
    from rich.console import Console
    from rich.markup import escape

    from pnpseg.plugins import KINDS, plugin_info

    infos = plugin_info()
    if as_json:
        json_summary([dataclasses.asdict(info) for info in infos])
        return
    out = Console(highlight=False)
    for info in infos:
        origin = " ".join(filter(None, (info.package, info.version)))
        out.print(f"[bold]{escape(info.name)}[/]" + (f"  ({escape(origin)})" if origin else ""))
        if info.broken:
            out.print(f"  [red]BROKEN:[/] {escape(info.broken)}")
        for kind in KINDS:
            if info.provides.get(kind):
                out.print(f"  {kind.replace('_', ' ')}: {escape(', '.join(info.provides[kind]))}")
