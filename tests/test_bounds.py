"""Secrets, time and memory are bounded (issue 21, items 17-21): option values that cannot
work are refused up front, before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_run import cli

from pnpseg.testing import SyntheticAdapter


@pytest.fixture(scope="module")
def labels(scene) -> Path:
    path = scene.parent / "labels.json"
    path.write_text(json.dumps({"a.png": ["red", "blue"]}))
    return path


@pytest.fixture
def passes(monkeypatch):
    """The model passes a command made (none, if it refused up front)."""
    calls: list = []
    monkeypatch.setattr(SyntheticAdapter, "forward", lambda *args: calls.append(args))
    return calls


COMMANDS = {
    "segment": ["segment", "{scene}", "--classes", "red,blue", "--out", "{tmp}/o"],
    "explain": ["explain", "{scene}/a.png", "--classes", "red,blue", "--out", "{tmp}/x"],
    "tune": ["tune", "{scene}", "--labels", "{labels}", "--scorer", "synthetic", "--out", "{tmp}/p.json"],
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
def test_values_that_cannot_work_are_refused_before_the_model(
    scene, labels, tmp_path, passes, command, flag, value, words
):
    if command == "tune" and flag == "--blur-sigma":
        flag = "--blur-scales"
    args = [a.format(scene=scene, tmp=tmp_path, labels=labels) for a in COMMANDS[command]]
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


def test_demo_on_a_taken_port_is_one_line_exit_3_before_the_model(passes):
    """Issue 21.20: exit 4 (a traceback from the web server) when the port was taken."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("demo", "--adapter", "synthetic", "--port", port)
    assert result.exit_code == 3, result.output
    line = " ".join(result.output.split())
    assert line.startswith("error: cannot serve on") and f"127.0.0.1:{port}" in line and "--port" in line
    assert passes == []
