"""Secrets, time and memory are bounded (issue 21, items 17-21): option values that cannot
work are refused up front, before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pnpseg.cli import app
from pnpseg.testing import SyntheticAdapter, make_scene


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scene")
    make_scene(64, 64, ["red", "blue"], seed=0)[0].save(folder / "a.png")
    (folder.parent / "labels.json").write_text(json.dumps({"a.png": ["red", "blue"]}))
    return folder


@pytest.fixture
def passes(monkeypatch):
    """The model passes a command made (none, if it refused up front)."""
    calls: list = []
    monkeypatch.setattr(SyntheticAdapter, "forward", lambda *args: calls.append(args))
    return calls


COMMANDS = {
    "segment": ["segment", "{scene}", "--classes", "red,blue", "--out", "{tmp}/o"],
    "explain": ["explain", "{scene}/a.png", "--classes", "red,blue", "--out", "{tmp}/x"],
    "tune": ["tune", "{scene}", "--labels", "{scene}/../labels.json", "--scorer", "synthetic", "--out", "{tmp}/p.json"],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [
        ("--image-size", "99999999", "at most 4096"),
        ("--image-size", "5000x64", "at most 4096"),
        ("--blur-sigma", "1e308", "less than or equal to 1"),
        ("--blur-sigma", "1000", "less than or equal to 1"),
    ],
)
def test_values_that_cannot_work_are_refused_before_the_model(scene, tmp_path, passes, command, flag, value, words):
    if command == "tune" and flag == "--blur-sigma":
        flag = "--blur-scales"
    args = [a.format(scene=scene, tmp=tmp_path) for a in COMMANDS[command]]
    result = cli(*args, "--adapter", "synthetic", flag, value)
    assert result.exit_code == 2, result.output
    assert words in result.output and passes == [], result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1  # one line, said once


def test_a_blur_of_the_whole_image_is_still_allowed(scene, tmp_path):
    result = cli(
        *COMMANDS["segment"][:1],
        scene,
        "--adapter",
        "synthetic",
        "--classes",
        "red,blue",
        "--blur-sigma",
        "1",
        "--out",
        tmp_path / "o",
    )
    assert result.exit_code == 0, result.output
