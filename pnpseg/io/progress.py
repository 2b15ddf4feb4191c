"""The one progress bar every long-running command shows (segment on either engine, eval, tune)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_bar(console: Console, *fields: str, eta: bool = True) -> Progress:
    """Description, bar, done/total, then ``fields`` (rich format strings such as
    ``"{task.fields[rate]}"``), elapsed time and, with ``eta``, the time remaining."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn(field) for field in fields]
    columns += [TimeElapsedColumn(), *([TimeRemainingColumn()] if eta else [])]
    return Progress(*columns, console=console, transient=False)
