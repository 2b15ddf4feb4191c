"""`pnpseg segment` and `pnpseg plugins` in the LAVIS environment, with the tiny LAVIS models."""

from __future__ import annotations

import pytest

pytest.importorskip("lavis", reason="LAVIS tests run in the LAVIS environment (requirements-lavis.txt)")

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from pnpseg.cli import app
from pnpseg.testing import make_scene


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    make_scene(60, 100, ["red", "blue"], seed=0)[0].save(folder / "wide.jpg")
    make_scene(90, 40, ["green"], seed=1)[0].save(folder / "tall.png")
    return folder


def segment(*args):
    """The tiny models have 2 heads and 3 (BLIP) or 2 (ALBEF) cross-attention layers."""
    return CliRunner().invoke(app, ["segment", *args, "--device", "cpu", "--layer", "2", "--head", "1"])


@pytest.mark.parametrize("adapter, checkpoint", [("lavis-blip", "blip_checkpoint"), ("albef", "albef_checkpoint")])
def test_segment_with_tiny_lavis_models(adapter, checkpoint, images, tmp_path, request):
    model = str(request.getfixturevalue(checkpoint))
    result = segment(
        str(images),
        "-c",
        "cat,dog,grass",
        "--adapter",
        adapter,
        "--model",
        model,
        "--out",
        str(tmp_path),
        "--image-size",
        "64x96",
    )
    assert result.exit_code == 0, result.output
    for name, size in (("wide.png", (100, 60)), ("tall.png", (40, 90))):
        png = Image.open(tmp_path / name)
        assert png.mode == "P" and png.size == size
        assert set(np.unique(np.array(png))) <= {0, 1, 2, 3}
    records = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert records[0]["settings"]["adapter"] == adapter and records[0]["settings"]["model"] == model


def test_missing_checkpoint_is_one_line(images, tmp_path):
    result = segment(
        str(images),
        "-c",
        "cat",
        "--adapter",
        "albef",
        "--model",
        str(tmp_path / "nope.pth"),
        "--out",
        str(tmp_path / "o"),
    )
    assert result.exit_code == 3 and "Traceback" not in result.output  # environment: no such model
    assert f"no checkpoint file at {str(tmp_path / 'nope.pth')!r}" in result.output.replace("\n", "")
    assert not (tmp_path / "o").exists()


def test_plugins_lists_the_lavis_adapters():
    result = CliRunner().invoke(app, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    lavis = next(p for p in json.loads(result.output) if p["package"] == "pnpseg-lavis")
    assert lavis["provides"]["adapters"] == ["albef", "lavis-blip"]
