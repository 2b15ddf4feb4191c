"""Behaviour lock: a fixed synthetic run and a fixed tiny-BLIP run give the recorded outputs.

The label PNGs must stay byte-identical through refactors; the manifest is compared after
dropping what legitimately varies (timings, the temp folder the tiny model was saved to).
The hashes hold for the environment requirements-dev.txt installs: Pillow's resampling
changes between major versions, and the tiny model's near-ties show it. They were
checked against the same runs at the commit before the package was restructured.
An intended change of output regenerates the record with ``PNPSEG_UPDATE_GOLDEN=1 pytest
tests/test_golden.py`` and says why in its commit.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pnpseg.cli import app
from pnpseg.testing import make_scene

GOLDEN = Path(__file__).parent / "golden" / "runs.json"
VOLATILE = {"seconds"}


def _scenes(folder: Path) -> None:
    make_scene(120, 160, ["red", "blue"], seed=0)[0].save(folder / "a.png")
    (folder / "sub").mkdir()
    make_scene(90, 60, ["green", "red"], seed=1)[0].save(folder / "sub" / "b.png")


def _normalise(record: dict, model: str | None) -> dict:
    record = {k: v for k, v in record.items() if k not in VOLATILE}
    if model is not None and record.get("settings", {}).get("model") == model:
        record["settings"]["model"] = "<model>"
        record["fingerprint"] = "<fingerprint of settings naming the temp model>"
    return record


def _snapshot(out: Path, model: str | None) -> dict:
    pngs = sorted(p for p in out.rglob("*.png"))
    return {
        "pngs": {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in pngs},
        "classes": json.loads((out / "classes.json").read_text()),
        "manifest": sorted(
            (_normalise(json.loads(line), model) for line in (out / "manifest.jsonl").read_text().splitlines()),
            key=lambda r: r["input"],
        ),
    }


def _run(tmp_path: Path, monkeypatch, name: str, args: list[str], model: str | None) -> dict:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    _scenes(tmp_path / "in")
    result = CliRunner().invoke(app, ["segment", "in", "--out", "out", "--device", "cpu", *args])
    assert result.exit_code == 0, result.output
    return _snapshot(tmp_path / "out", model)


def _check(name: str, snapshot: dict) -> None:
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    if os.environ.get("PNPSEG_UPDATE_GOLDEN") == "1":
        golden[name] = snapshot
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    assert snapshot == golden[name]


@pytest.mark.slow
def test_synthetic_run_is_unchanged(tmp_path, monkeypatch):
    snapshot = _run(tmp_path, monkeypatch, "synthetic", ["--classes", "red,blue,green", "--adapter", "synthetic"], None)
    _check("synthetic", snapshot)


@pytest.mark.slow
def test_tiny_blip_run_is_unchanged(tmp_path, monkeypatch, tiny_blip):
    model = str(tiny_blip)
    args = [
        "--classes",
        "cat,dog,grass",
        "--adapter",
        "blip",
        "--model",
        model,
        "--layer",
        "2",
        "--head",
        "1",
        "--image-size",
        "64x96",
    ]
    _check("tiny-blip", _run(tmp_path, monkeypatch, "tiny-blip", args, model))
