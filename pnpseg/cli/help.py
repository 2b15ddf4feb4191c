"""Help screens that stay legible at any width: plain text, wrapped, never cut.

Rich's boxed tables cut long option names (``--background-if-…``) at 80 columns and read
``[ray]`` in ``pnpseg[ray]`` as markup, so every ``--help`` (plugins' commands included) is
rendered by click's plain formatter instead: an option whose name is too long for the name
column gets its help on the next line, and text is wrapped between words, never inside a
word, a hyphenated name (``docs/class-sources.md``) or an option. Options stay grouped
under their ``rich_help_panel`` heading, and a command list shows each command's first
paragraph as one wrapped sentence, whatever line breaks its docstring has.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from collections.abc import Sequence
from types import MethodType
from typing import Any

import typer

ARGUMENTS, OPTIONS, COMMANDS = "Arguments", "Options", "Commands"


def wrap(text: str, width: int) -> list[str]:
    """``text``'s paragraphs wrapped at spaces only (not inside ``[default: x]``); a paragraph
    that starts with ``\\b`` is kept as written."""
    text = text.replace("[default: ", "[default:\N{NO-BREAK SPACE}")  # textwrap breaks at ASCII whitespace only
    lines: list[str] = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        if lines:
            lines.append("")
        if paragraph.startswith("\b"):
            lines += paragraph.strip("\b\n").splitlines()
        else:
            flat = re.sub(r"[ \t\r\n]+", " ", paragraph).strip()
            lines += textwrap.wrap(flat, width, break_on_hyphens=False, break_long_words=False)
    return [line.replace("\N{NO-BREAK SPACE}", " ") for line in lines]


class Formatter(typer.Context.formatter_class):  # type: ignore[misc,valid-type]  # click's HelpFormatter, as typer exposes it
    """click's formatter, wrapping between words only (see :func:`wrap`)."""

    def write_text(self, text: str) -> None:
        indent = " " * self.current_indent
        self.write("".join(f"{indent}{line}\n" if line else "\n" for line in wrap(text, self.width - len(indent))))

    def write_dl(self, rows: Sequence[tuple[str, str]], col_max: int = 30, col_spacing: int = 2) -> None:
        """Terms and their text; a term longer than ``col_max`` has its text on the next line."""
        column = min(max(len(term) for term, _ in rows), col_max) + col_spacing
        indent = " " * self.current_indent
        for term, text in rows:
            lines = wrap(text, max(self.width - self.current_indent - column, 20)) or [""]
            if len(term) + col_spacing > column:
                self.write(f"{indent}{term}\n")
                lines = lines if lines != [""] else []
            else:
                self.write(f"{indent}{term:<{column}}{lines.pop(0)}\n")
            self.write("".join(f"{indent}{' ' * column}{line}\n" for line in lines))


class HelpContext(typer.Context):
    formatter_class = Formatter


def format_options(command: Any, ctx: Any, formatter: Any) -> None:
    """Each parameter under its panel's heading (panels in the order they first appear),
    then, for a group, its commands."""
    panels: dict[str, list[tuple[str, str]]] = {}
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is not None:
            default = ARGUMENTS if param.param_type_name == "argument" else OPTIONS
            panels.setdefault(getattr(param, "rich_help_panel", None) or default, []).append(record)
    for name, rows in panels.items():
        with formatter.section(name):
            formatter.write_dl(rows)
    if hasattr(command, "list_commands"):
        rows = [
            (name, summary(sub))
            for name in command.list_commands(ctx)
            if (sub := command.get_command(ctx, name)) is not None and not sub.hidden
        ]
        if rows:
            with formatter.section(COMMANDS):
                formatter.write_dl(rows)


def summary(command: Any) -> str:
    """A command's first paragraph on one line (click would cut it at ~45 characters)."""
    text = command.short_help or inspect.cleandoc(command.help or "")
    return " ".join(text.split("\n\n")[0].split())


def adopt(command: Any) -> Any:
    """Render ``command``'s help, and its subcommands' for a group, the legible way."""
    command.rich_markup_mode = None
    command.context_class = HelpContext
    command.format_options = MethodType(format_options, command)
    for sub in getattr(command, "commands", {}).values():
        adopt(sub)
    return command
