"""Options are declared once: every option of every command sits in a help panel, and an
option several commands take is one shared declaration (pnpseg/cli/options.py)."""

from __future__ import annotations

from collections import defaultdict

import pytest
import typer

import pnpseg.cli  # noqa: F401  (registers every command)
from pnpseg.cli.app import app

CORE = ["segment", "tune", "eval", "explain", "demo", "plugins"]
#: One name, a different thing per command: each command's output, eval's dataset root
#: against segment's naming root, explain's atlas switch against tune's searched heads, and
#: segment's blur/CRF processes against eval's Ray actors.
OWN_MEANING = {"--out", "--root", "--heads", "--workers"}


def options(name: str) -> list:
    command = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
    return [p for p in command.params if p.param_type_name == "option" and p.name != "help"]


@pytest.mark.parametrize("name", CORE)
def test_every_option_of_every_command_sits_in_a_help_panel(name):
    loose = [p.opts[0] for p in options(name) if not getattr(p, "rich_help_panel", None)]
    assert not loose, f"{name}: {loose} have no rich_help_panel"


def test_an_option_several_commands_take_is_declared_once():
    declared = defaultdict(set)
    for name in CORE:
        for option in options(name):
            if option.opts[0] not in OWN_MEANING:
                declared[option.opts[0]].add((tuple(option.opts), option.help, option.rich_help_panel))
    differing = {flag: ways for flag, ways in declared.items() if len(ways) > 1}
    assert not differing, differing
    for flag in ("--json", "--overwrite", "--adapter", "--classes"):
        assert flag in declared, flag
