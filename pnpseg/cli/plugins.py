"""``pnpseg plugins``: what is installed and what each plugin registers."""

from __future__ import annotations

import dataclasses

import pnpseg.cli.options as o
from pnpseg.cli.app import app, json_summary


@app.command()
def plugins(as_json: o.AsJson = False) -> None:
    """List plugins, where each comes from, and what it registers (adapters, commands, ...).

    One block per plugin; long lines wrap under their indent, so names stay readable at any
    width. Plugins that were skipped are listed as BROKEN with the reason.
    """
    from rich.console import Console
    from rich.text import Text

    from pnpseg.plugins import KINDS, plugin_info

    infos = plugin_info()
    if as_json:
        json_summary([dataclasses.asdict(info) for info in infos])
        return
    out = Console(highlight=False)

    def show(text: Text, indent: str) -> None:
        """``text`` wrapped to the terminal, continuation lines two spaces deeper."""
        for i, part in enumerate(text.wrap(out, max(20, out.width - len(indent) - 2))):
            part.rstrip()
            out.print(Text(indent if i == 0 else indent + "  ") + part, soft_wrap=True)

    for info in infos:
        origin = " ".join(filter(None, (info.package, info.version)))
        show(Text(info.name, style="bold") + (Text(f"  ({origin})") if origin else Text()), "")
        rows = [Text.assemble(("BROKEN:", "red"), f" {info.broken}")] if info.broken else []
        rows += [
            Text(f"{kind.replace('_', ' ')}: {', '.join(info.provides[kind])}")
            for kind in KINDS
            if info.provides.get(kind)
        ]
        rows += [Text(f"commands: {', '.join(info.commands)}")] if info.commands else []
        for row in rows:
            show(row, "  ")
