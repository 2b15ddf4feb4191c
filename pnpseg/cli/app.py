"""The Typer app of ``pnpseg``: the console, exit codes and error handling every command shares.

Commands live one per module beside this one and register themselves on :data:`app`;
:mod:`pnpseg.cli` imports them and the plugins' ``register_commands`` hooks. Errors are
handled once, in :class:`FriendlyGroup`, so plugin commands get the same treatment.

Exit codes (README "Exit codes", docs/reliability.md):

=====  =====================================================================
0      everything asked for was done
1      some inputs failed (each is recorded in the manifest / report)
2      usage: a bad option, value, preset, class list or file
3      environment: a missing model, optional dependency or unreachable service
4      an unexpected error (a bug): one line, the traceback saved to a file
=====  =====================================================================
"""

from __future__ import annotations

import importlib.metadata
import tempfile
import traceback
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from typer._click.exceptions import ClickException

from pnpseg.errors import PnpsegError, shorten

EXIT_OK = 0
EXIT_INPUT_FAILED = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
EXIT_BUG = 4

console = Console(stderr=True)


def error_line(message: str) -> None:
    """Print one red ``error:`` line; the message is escaped (``pnpseg[ray]`` is not markup)."""
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def print_json(summary: Any) -> None:
    """A command's ``--json`` summary: one JSON document on stdout (everything else goes to stderr)."""
    import json

    typer.echo(json.dumps(summary, ensure_ascii=False, default=str))


def warning_line(message: str) -> None:
    console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def save_traceback(error: BaseException) -> Path:
    """Write the traceback of an unexpected error to a new file and return its path."""
    handle, name = tempfile.mkstemp(prefix="pnpseg-crash-", suffix=".txt")
    with open(handle, "w", encoding="utf-8") as file:
        file.write("".join(traceback.format_exception(type(error), error, error.__traceback__)))
    return Path(name)


def _one_line(text: str, limit: int = 200) -> str:
    return shorten(" ".join(text.split()), limit)


class FriendlyGroup(typer.core.TyperGroup):
    """Runs every command (built-in or a plugin's) so that no user ever sees a traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, ClickException, KeyboardInterrupt, BrokenPipeError):  # typer handles these
            raise
        except PnpsegError as error:
            error_line(_one_line(str(error), 1000))
            raise typer.Exit(error.exit_code) from None
        except Exception as error:  # a bug: one line here, the traceback in a file
            path = save_traceback(error)
            error_line(
                f"unexpected {type(error).__name__}: {_one_line(str(error))} "
                f"(a bug; traceback saved to {path}; please include it in a report)"
            )
            raise typer.Exit(EXIT_BUG) from None


app = typer.Typer(
    cls=FriendlyGroup,
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Open-vocabulary semantic segmentation from off-the-shelf vision-language models (PnP-OVSS).\n\n"
    "Exit codes: 0 ok, 1 some inputs failed, 2 usage, 3 environment (missing model, dependency "
    "or service), 4 unexpected error (traceback saved to a file).",
)


def version() -> str:
    try:
        return importlib.metadata.version("pnpseg")
    except importlib.metadata.PackageNotFoundError:  # a source tree that is not installed
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"pnpseg {version()}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def main_options(
    plugins_dir: Optional[Path] = typer.Option(
        None, "--plugins-dir", help="Also load every *.py file in this folder as a plugin (as PNPSEG_PLUGINS_DIR does)."
    ),
    show_version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
    ),
) -> None:
    from pnpseg.plugins import broken_plugins, check_hooks, load_installed, load_plugins_dir, on_broken

    load_installed()
    if plugins_dir is not None:
        load_plugins_dir(plugins_dir)
    check_hooks()
    for problem in broken_plugins():
        warning_line(problem.message)
    on_broken(lambda problem: warning_line(problem.message))  # found later: a name another plugin has
