"""A segmentation result in a notebook: a one-line repr, ``overlay()`` with the colours and
legend of ``--viz``, and inline display through ``_repr_png_``."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import pnpseg
from pnpseg.cli import app
from pnpseg.testing import make_scene

CLASSES = ["red", "green", "blue"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nb")
    make_scene(96, 128, ["red", "green"], seed=3)[0].save(folder / "a.png")
    return folder / "a.png"


@pytest.fixture(scope="module")
def result(scene):
    segmenter = pnpseg.Segmenter.from_pretrained(adapter="synthetic", device="cpu")
    return segmenter(scene, CLASSES)


def test_repr_is_one_short_line(result):
    text = repr(result)
    assert "\n" not in text and len(text) < 200, text
    assert text.startswith("SegmentationResult(") and "128×96" in text
    present = {result.class_names[i] for i in result.present()}
    assert present and all(f"{name} " in text for name in present)  # the classes present, with shares
    assert all(name not in text for name in set(CLASSES) - present)
    many = pnpseg.SegmentationResult(
        np.arange(40 * 40).reshape(40, 40) % 200, result.scores, result.saliency, [f"c{i}" for i in range(255)], True
    )
    assert "\n" not in repr(many) and len(repr(many)) < 300


def test_overlay_is_the_viz_overlay(result, scene, tmp_path):
    cli = CliRunner().invoke(
        app,
        ["segment", str(scene), "--classes", ",".join(CLASSES), "--adapter", "synthetic", "--device", "cpu"]
        + ["--out", str(tmp_path / "o"), "--viz"],
    )
    assert cli.exit_code == 0, cli.output
    overlay = result.overlay()
    assert isinstance(overlay, Image.Image) and overlay.mode == "RGB"
    with Image.open(tmp_path / "o" / "overlays" / "a.png") as viz:
        assert np.array_equal(np.asarray(overlay), np.asarray(viz.convert("RGB")))  # same colours, same legend


def test_repr_png_displays_the_overlay_inline(result):
    png = result._repr_png_()
    assert png.startswith(b"\x89PNG")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), np.asarray(result.overlay()))


def test_overlay_of_a_result_without_its_image_needs_one(result, scene):
    bare = pnpseg.SegmentationResult(result.labels, result.scores, result.saliency, result.class_names, True)
    assert bare._repr_png_() is None  # the notebook falls back to the text repr
    with pytest.raises(pnpseg.PnpsegError, match="pass the image"):
        bare.overlay()
    assert np.array_equal(np.asarray(bare.overlay(scene)), np.asarray(result.overlay()))
