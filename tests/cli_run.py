"""``pnpseg segment`` end to end with a tiny model, for the adapter test modules."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def cli(*args: object, env: dict[str, str] | None = None):
    """``pnpseg ARGS`` in this process (Typer's runner; stdout and stderr kept apart)."""
    from typer.testing import CliRunner

    from pnpseg.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def run_cli_segment(tmp_path: Path, tiny_path: Path, name: str, classes: Sequence[str], *options: str) -> Path:
    """``pnpseg segment`` on two odd-sized images with the tiny model; checks the labels
    (original sizes, class ids in range) and the manifest, returns the output folder."""
    from typer.testing import CliRunner

    from pnpseg.cli import app

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    sizes = {"wide.png": (70, 45), "tall.jpg": (33, 58)}  # (width, height)
    for file, (w, h) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / file)
    out = tmp_path / "out"
    args = ["segment", str(folder), "--classes", ",".join(classes), "--adapter", name]
    args += ["--model", str(tiny_path), "--out", str(out), "--device", "cpu", *options]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for file, size in sizes.items():
        with Image.open(out / (os.path.splitext(file)[0] + ".png")) as label:
            assert label.size == size
            assert np.asarray(label).max() <= len(classes)
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["status"] == "ok" for r in records)
    assert {r["settings"]["adapter"] for r in records} == {name}
    return out
