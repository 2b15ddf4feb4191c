"""Every ``--help`` screen, plugins' commands included, is legible at 80 columns: no line
wider, every option name whole, every help text and command summary there word for word
(no ``[ray]`` eaten as markup, nothing cut with an ellipsis), the command list aligned; and
shell completion is on."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from pnpseg.cli import app
from pnpseg.cli.help import summary


def command_paths() -> list[tuple[str, ...]]:
    """``()`` for ``pnpseg`` itself, then every command and subcommand."""
    paths: list[tuple[str, ...]] = []

    def walk(command, path):
        paths.append(path)
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            if not sub.hidden:
                walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return paths


def resolve(path: tuple[str, ...]):
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


def flat(text: str) -> str:
    return " ".join(text.split())


def render(path: tuple[str, ...], columns: int = 80) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(("pnpseg", *p)))
def test_help_is_legible_at_80_columns(path):
    text = render(path)
    assert text.strip()
    assert [line for line in text.splitlines() if len(line) > 80] == []
    assert "…" not in text
    command = resolve(path)
    words = flat(text)
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        for name in [*param.opts, *param.secondary_opts]:
            if name.startswith("-"):
                assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), name
        if getattr(param, "help", None):
            assert flat(param.help) in words, param.help  # word for word: brackets kept, nothing cut
    if command.help:
        assert flat(command.help.split("\n\n")[0]) in words
    for name, sub in getattr(command, "commands", {}).items():
        if not sub.hidden:
            assert flat(f"{name} {summary(sub)}") in words


@pytest.mark.parametrize(
    "path", [p for p in command_paths() if hasattr(resolve(p), "commands")], ids=lambda p: " ".join(("pnpseg", *p))
)
def test_command_lists_are_aligned(path):
    """Every line of a command list starts at the name column or at the summary column."""
    text = render(path)
    listing = text.split("\nCommands:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    names = [line for line in listing if not line.startswith("    ")]
    column = len(names[0]) - len(names[0][2:].split(" ", 1)[1].lstrip())
    for line in listing:
        assert line.startswith("  ") and not line.startswith("   ") or line[:column].isspace(), line
        assert line in names or line[column] != " ", line


def test_brackets_survive():
    """``pnpseg[ray]`` is text, not markup."""
    assert "pnpseg[ray]" in render(("segment",))


def test_help_never_gets_wider_than_80_columns():
    assert max(len(line) for line in render(("segment",), columns=200).splitlines()) <= 80


def test_completion_script_for_bash_in_both_instruction_styles():
    for instruction in ("bash_source", "source_bash"):
        script = subprocess.run(
            [sys.executable, "-m", "pnpseg"],
            env={**os.environ, "_PNPSEG_COMPLETE": instruction},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert script.returncode == 0, script.stderr
        assert "complete -o default -F _pnpseg_completion pnpseg" in script.stdout


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("pnpseg seg", {"segment"}),
        ("pnpseg segment --background-if", {"--background-if-fewer"}),
        ("pnpseg segment --precision bf", {"bf16", "bf16-vision"}),
        ("pnpseg convert b", {"blip"}),
    ],
)
def test_completion_completes_commands_options_and_values(words, expected):
    env = {"_PNPSEG_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)}
    result = CliRunner().invoke(app, [], env=env, prog_name="pnpseg")
    assert set(result.stdout.split()) == expected, result.output
