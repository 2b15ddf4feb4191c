"""The Typer app of ``pnpseg``: the console, exit codes and error handling every command shares.

Commands live one per module beside this one and register themselves on :data:`app`;
:mod:`pnpseg.cli` imports them and the plugins' ``register_commands`` hooks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from pnpseg.errors import EnvironmentProblem, PnpsegError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Open-vocabulary semantic segmentation from off-the-shelf vision-language models (PnP-OVSS).",
)
console = Console(stderr=True)

EXIT_INPUT_FAILED = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3


def print_json(summary: Any) -> None:
    """A command's ``--json`` summary: one JSON document on stdout (everything else goes to stderr)."""
    import json

    typer.echo(json.dumps(summary, ensure_ascii=False, default=str))


def friendly(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn PnpsegError into one red line and exit status 2 (3 for an environment problem), never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except PnpsegError as error:  # escaped: "pip install 'pnpseg[ray]'" is not markup
            console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_ENVIRONMENT if isinstance(error, EnvironmentProblem) else EXIT_USAGE) from None

    return wrapper


@app.callback()
def main_options(
    plugins_dir: Optional[Path] = typer.Option(
        None, "--plugins-dir", help="Also load every *.py file in this folder as a plugin.", envvar="PNPSEG_PLUGINS_DIR"
    ),
) -> None:
    if plugins_dir is not None:
        from pnpseg.plugins import load_plugins, load_plugins_dir

        load_plugins()
        try:
            load_plugins_dir(plugins_dir)
        except PnpsegError as error:
            console.print(f"[bold red]error:[/] {error}", highlight=False)
            raise typer.Exit(EXIT_USAGE) from None
