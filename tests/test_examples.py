"""The example third-party packages in examples/ work, in-process and when pip-installed."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pnpseg.cli import app
from pnpseg.method.params import SegmentParams
from pnpseg.plugins import pm
from pnpseg.testing import make_scene, miou

EXAMPLES = Path(__file__).parent.parent / "examples"
ADAPTER = EXAMPLES / "pnpseg-example-adapter"
POSTPROCESSOR = EXAMPLES / "pnpseg-example-postprocessor"


@pytest.fixture
def example_plugins(monkeypatch):
    """Register both example plugins in-process, as a notebook would."""
    monkeypatch.syspath_prepend(str(ADAPTER))
    monkeypatch.syspath_prepend(str(POSTPROCESSOR))
    modules = [
        importlib.import_module(m) for m in ("pnpseg_example_adapter.plugin", "pnpseg_example_postprocessor.plugin")
    ]
    for module in modules:
        pm.register(module, name=module.__name__)
    yield
    for module in modules:
        pm.unregister(module)


def test_islands_gives_small_islands_to_the_next_best_label():
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("islands", POSTPROCESSOR / "pnpseg_example_postprocessor" / "islands.py")
    islands = module_from_spec(spec)
    spec.loader.exec_module(islands)
    scores = torch.zeros(3, 100, 100)
    scores[0] = 0.5  # background everywhere...
    scores[1, 10:60, 10:60] = 1.0  # ...a large region of class 1
    scores[1, 80:83, 80:83] = 1.0  # a 9-pixel speck of class 1
    scores[2, 90:92, 5:7] = 1.0  # class 2 exists only as a speck: kept
    out = islands.RemoveIslands(min_area=0.005)(scores, np.zeros((100, 100, 3), np.uint8), SegmentParams())
    labels = out.argmax(0)
    assert (labels[10:60, 10:60] == 1).all()
    assert (labels[80:83, 80:83] == 0).all()
    assert (labels[90:92, 5:7] == 2).all()
    pixels = islands.RemoveIslands(min_area=64)(scores, np.zeros((100, 100, 3), np.uint8), SegmentParams())
    assert torch.equal(pixels, out)  # 64 pixels, as 0.005 of 100×100 is 50: the same specks go
    assert (islands.RemoveIslands(min_area=8)(scores, None, SegmentParams()).argmax(0)[80:83, 80:83] == 1).all()
    with pytest.raises(ValueError, match="min_area"):
        islands.RemoveIslands(min_area=-1)


@pytest.mark.slow
def test_segment_through_example_adapter_and_postprocessor(example_plugins, tmp_path):
    image, truth = make_scene(120, 200, ["red", "blue"], seed=5)
    image.save(tmp_path / "x.png")
    toy = CliRunner().invoke(
        app,
        [
            "segment",
            str(tmp_path / "x.png"),
            "--classes",
            "red,blue",
            "--adapter",
            "toy",
            "--out",
            str(tmp_path / "toy"),
            "--image-size",
            "96x160",
        ],
    )
    assert toy.exit_code == 0, toy.output
    assert Image.open(tmp_path / "toy" / "x.png").size == (200, 120)
    islands = CliRunner().invoke(
        app,
        [
            "segment",
            str(tmp_path / "x.png"),
            "--classes",
            "red,blue",
            "--adapter",
            "synthetic",
            "--postprocess",
            "blur,crf,islands:min_area=64",
            "--out",
            str(tmp_path / "isl"),
        ],
    )
    assert islands.exit_code == 0, islands.output
    record = json.loads((tmp_path / "isl" / "manifest.jsonl").read_text())
    assert record["settings"]["params"]["postprocess"] == ["blur", "crf", "islands:min_area=64"]
    assert miou(np.array(Image.open(tmp_path / "isl" / "x.png")), truth, 3) >= 0.85


@pytest.mark.slow
def test_pip_installed_examples_show_up_in_plugins(tmp_path):
    pytest.importorskip("setuptools")
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(ADAPTER),
            str(POSTPROCESSOR),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}
    listed = subprocess.run(
        [sys.executable, "-m", "pnpseg.cli", "plugins", "--json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    infos = {info["package"]: info["provides"] for info in json.loads(listed)}
    assert infos["pnpseg-example-adapter"]["adapters"] == ["toy"]
    assert infos["pnpseg-example-postprocessor"]["postprocessors"] == ["islands"]
    assert {"blip", "bridgetower", "vilt"} <= {a for p in infos.values() for a in p["adapters"]}
