"""``pnpseg plugins``: what is installed and what each plugin registers."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from pnpseg.cli.app import app, friendly


@app.command()
@friendly
def plugins(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List installed plugins and what each registers (adapters, postprocessors, scorers, ...)."""
    from pnpseg.plugins import KINDS, plugin_info

    infos = plugin_info()
    if as_json:
        typer.echo(json.dumps([info.__dict__ for info in infos], indent=2))
        return
    table = Table(title="pnpseg plugins")
    for column in ("plugin", "package", "version", *KINDS):
        table.add_column(column)
    for info in infos:
        table.add_row(info.name, info.package, info.version, *(", ".join(info.provides[k]) or "-" for k in KINDS))
    Console().print(table)
