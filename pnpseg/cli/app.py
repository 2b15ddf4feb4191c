"""The Typer app of ``pnpseg``: the console, exit codes and error handling every command shares.

Commands live one per module beside this one and register themselves on :data:`app`;
:mod:`pnpseg.cli` imports them and the plugins' ``register_commands`` hooks. Every command,
a plugin's included, runs inside :meth:`FriendlyGroup.invoke`: the one place where an error
becomes its one-line message and its exit code (:func:`exit_code`), and where ``--json``
gets its one document on stdout whatever the exit (:func:`json_summary`).

Exit codes: :class:`pnpseg.errors.ExitCode` and :data:`pnpseg.errors.EXIT_KINDS`, the one
table (the ``--help`` text and README "Exit codes" are written from it).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import tempfile
import traceback
import warnings
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from pnpseg.cli.help import HelpContext, adopt, format_options
from pnpseg.errors import EXIT_KINDS, STORAGE_ERRNOS, ExitCode, PnpsegDeprecationWarning, PnpsegError, shorten

console = Console(stderr=True)


def error_line(message: str) -> None:
    """Print one red ``error:`` line; the message is escaped (``pnpseg[ray]`` is not markup)."""
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


class _JsonOutcome:
    """What the running command hands over for ``--json``: the wrapper prints it, once."""

    document: Any = None


def json_summary(document: Any) -> None:
    """Hand this command's ``--json`` summary to the wrapper, which prints it as the one JSON
    document on stdout when the command ends (with ``exit_code`` and ``error`` added to an
    object), so no exit can print two documents or none."""
    _JsonOutcome.document = document


def warning_line(message: str) -> None:
    console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _deprecation_lines() -> Any:
    """A ``warnings.showwarning`` for one command: each :class:`PnpsegDeprecationWarning` is
    one ``warning:`` line, like every other note, once however often the old spelling is read."""
    shown: set[str] = set()
    other = warnings.showwarning

    def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if not issubclass(category, PnpsegDeprecationWarning):
            other(message, category, *args, **kwargs)
        elif str(message) not in shown:
            shown.add(str(message))
            warning_line(str(message))

    return show


def save_traceback(error: BaseException) -> Path:
    """Write the traceback of an unexpected error to a new file and return its path."""
    handle, name = tempfile.mkstemp(prefix="pnpseg-crash-", suffix=".txt")
    with open(handle, "w", encoding="utf-8") as file:
        file.write("".join(traceback.format_exception(type(error), error, error.__traceback__)))
    return Path(name)


def _one_line(text: str, limit: int = 200) -> str:
    return shorten(" ".join(text.split()), limit)


def exit_code(error: BaseException) -> int:
    """The documented exit code of an error: the one table every command shares."""
    if isinstance(error, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(error, (typer.Exit, typer.TyperException)):
        return error.exit_code
    if isinstance(error, typer.Abort):
        return ExitCode.INPUT_FAILED
    if isinstance(error, PnpsegError):
        return error.exit_code
    if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
        return ExitCode.ENVIRONMENT
    return ExitCode.BUG


def error_message(error: BaseException) -> str:
    """The one line that says what went wrong (also the ``--json`` document's ``error``)."""
    if isinstance(error, typer.TyperException):
        return error.format_message()
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    if isinstance(error, PnpsegError):
        return _one_line(str(error), 1000)
    if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
        where = f" {error.filename}" if error.filename else ""
        return f"cannot write{where}: {error.strerror or error}"
    return ""


def _asks_for_json(args: list[str]) -> bool:
    """``--json`` among the words before ``--`` (read before parsing, so that a usage error
    is answered in JSON too)."""
    words = args[: args.index("--")] if "--" in args else args
    return "--json" in words


def _emit_json(command: str, code: int, message: str) -> None:
    document = _JsonOutcome.document
    if code == ExitCode.OK and document is None:
        return  # --help, or a command that printed no summary
    kind, meaning = EXIT_KINDS.get(code, ("error", "failed"))
    error = None if code == ExitCode.OK else {"kind": kind, "message": message or meaning}
    if isinstance(document, dict):
        document = {**document, "exit_code": code, "error": error}
    elif document is None or code != ExitCode.OK:
        document = {"command": command, "exit_code": code, "error": error}
    typer.echo(json.dumps(document, ensure_ascii=False, default=str))


class FriendlyGroup(typer.core.TyperGroup):
    """Runs every command (built-in or a plugin's) so that no user ever sees a traceback,
    every error exits with its documented code, and ``--json`` always gets one document."""

    context_class = HelpContext  # help legible at any width (pnpseg/cli/help.py)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if ctx.parent is None:
            ctx.meta["pnpseg.args"] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        if ctx.parent is not None:  # a command group inside pnpseg (`convert`): the outer one handles
            return super().invoke(ctx)
        args = ctx.meta.get("pnpseg.args", [])
        wants_json, _JsonOutcome.document = _asks_for_json(args), None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", PnpsegDeprecationWarning)
                warnings.showwarning = _deprecation_lines()
                result = super().invoke(ctx)
        except BrokenPipeError:  # stdout went away: nothing more can be said there
            raise
        except (Exception, KeyboardInterrupt) as error:  # Ctrl+C included: 130 and its JSON document
            code, message = exit_code(error), error_message(error)
            if code == ExitCode.BUG:  # a bug: one line here, the traceback in a file
                path = save_traceback(error)
                message = (
                    f"unexpected {type(error).__name__}: {_one_line(str(error))} "
                    f"(a bug; traceback saved to {path}; please include it in a report)"
                )
            if message and not isinstance(error, (typer.TyperException, KeyboardInterrupt)):
                error_line(message)  # click prints its own usage errors
            if wants_json:
                _emit_json(self._command_name(ctx, args), code, message)
            if isinstance(error, (typer.Exit, typer.TyperException, typer.Abort)):
                raise
            raise typer.Exit(code) from None
        if wants_json:
            _emit_json(self._command_name(ctx, args), ExitCode.OK, "")
        return result

    def _main_shell_completion(self, ctx_args: Any, prog_name: str, complete_var: Optional[str] = None) -> None:
        """Shell completion in both instruction styles: click's documented ``bash_source`` and
        typer's ``source_bash`` (what ``--install-completion`` writes)."""
        complete_var = complete_var or f"_{prog_name}_COMPLETE".replace("-", "_").upper()
        first, _, second = os.environ.get(complete_var, "").partition("_")
        if second in ("source", "complete"):
            os.environ[complete_var] = f"{second}_{first}"
        super()._main_shell_completion(ctx_args, prog_name, complete_var)

    def get_command(self, ctx: Any, name: str) -> Any:
        command = super().get_command(ctx, name)
        return adopt(command) if command is not None else None

    def format_options(self, ctx: Any, formatter: Any) -> None:
        format_options(self, ctx, formatter)

    def _command_name(self, ctx: Any, args: list[str]) -> str:
        """The command's words, ``segment`` or a group's ``convert blip``."""
        name = ctx.invoked_subcommand or ""
        command = self.get_command(ctx, name) if name else None
        if command is None or not hasattr(command, "list_commands") or name not in args:
            return name
        subcommands = command.list_commands(ctx)
        rest = args[args.index(name) + 1 :]
        return " ".join([name, *[word for word in rest if word in subcommands][:1]])


app = typer.Typer(
    cls=FriendlyGroup,
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help, legible at 80 columns (pnpseg/cli/help.py)
    help="Open-vocabulary semantic segmentation from off-the-shelf vision-language models (PnP-OVSS).\n\n"
    "Exit codes: " + "; ".join(f"{code} {kind}" for code, (kind, _) in EXIT_KINDS.items()) + ' (README "Exit codes").',
)


def version() -> str:
    try:
        return importlib.metadata.version("pnpseg")
    except importlib.metadata.PackageNotFoundError:  # a source tree that is not installed
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"pnpseg {version()}")
        raise typer.Exit(ExitCode.OK)


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
