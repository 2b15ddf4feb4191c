"""The flag → SegmentParams field table: every method flag sets the field of its name, and one
value reaches the same field from the command line, a preset and Python alike."""

from __future__ import annotations

import json

import pytest
import typer

import pnpseg.cli  # noqa: F401  (registers every command)
from pnpseg.cli import options as o
from pnpseg.cli.app import app
from pnpseg.io.preset import choose_method
from pnpseg.method.params import SegmentParams

#: Method-panel options that are not SegmentParams: the model choice, the class source and
#: eval's protocol options (docs/evaluation.md).
NOT_PARAMS = {"adapter", "model", "preset", "class_source"} | {
    "protocol",
    "synonyms",
    "pnp_background",
    "bg_threshold",
    "slide",
    "short_side",
}
#: Flags whose name is not a field's: the field they set.
RENAMED = {"background_if_fewer": "background"}

#: One non-default value per flag: (command-line words, the field's value).
VALUES = {
    "image_size": (["--image-size", "96x128"], (96, 128)),
    "layer": (["--layer", "3"], 3),
    "head": (["--head", "2"], 2),
    "threshold": (["--threshold", "0.3"], 0.3),
    "blur_sigma": (["--blur-sigma", "0.1"], 0.1),
    "drop_rounds": (["--drop-rounds", "2"], 2),
    "drop_rule": (["--drop-rule", "topk:5"], "topk:5"),
    "postprocess": (["--postprocess", "blur"], ("blur",)),
    "background": (["--no-background"], False),
    "background_if_fewer": (["--background-if-fewer", "3"], "if-fewer-prompted:3"),
    "compat": (["--compat", "authors"], "authors"),
}


def method_flags(command: str) -> dict[str, str]:
    """Method-panel options of ``command`` that set a parameter: option name → field name."""
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return {
        param.name: RENAMED.get(param.name, param.name)
        for param in click_command.params
        if getattr(param, "rich_help_panel", None) == o.METHOD and param.name not in NOT_PARAMS
    }


def cli_params(command: str, words: list[str]) -> SegmentParams:
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    required = {"segment": ["in.png"], "eval": ["--dataset", "voc21", "--root", "."], "explain": ["in.png"]}
    ctx = click_command.make_context(command, [*required.get(command, []), *words])
    return SegmentParams.build(o.method_choice(ctx).params)


@pytest.mark.parametrize("command", ["segment", "eval", "explain"])
def test_every_method_flag_sets_the_segment_params_field_of_its_name(command):
    flags = method_flags(command)
    assert flags, f"{command} has no method flags"
    assert set(flags.values()) <= set(SegmentParams.model_fields), flags
    assert set(flags) <= set(VALUES), f"a new flag needs its row in VALUES: {set(flags) - set(VALUES)}"


@pytest.mark.parametrize("flag", sorted(VALUES))
def test_a_value_reaches_the_same_field_from_cli_preset_and_python(flag, tmp_path):
    words, value = VALUES[flag]
    field = RENAMED.get(flag, flag)
    from_cli = cli_params("segment", words)
    preset = tmp_path / "preset.json"
    preset.write_text(json.dumps({"format": "pnpseg-preset", "version": 1, "params": {field: value}}))
    from_preset = SegmentParams.build(choose_method(str(preset), None, None, {}).params)
    from_python = SegmentParams(**{field: value})
    assert getattr(from_cli, field) == getattr(from_preset, field) == getattr(from_python, field) == value
    assert from_cli == from_preset == from_python
