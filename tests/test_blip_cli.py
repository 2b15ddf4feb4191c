"""`pnpseg segment` with a tiny randomly initialised BLIP loaded from a folder by --model."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pnpseg.cli import app
from pnpseg.method.segmenter import Segmenter
from pnpseg.testing import make_scene

VOC = (
    "aeroplane,bicycle,bird,boat,bottle,bus,car,cat,chair,cow,dining table,dog,horse,"
    "motorbike,person,potted plant,sheep,sofa,train,tv monitor"
)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    make_scene(60, 100, ["red", "blue"], seed=0)[0].save(folder / "wide.jpg")
    (folder / "sub").mkdir()
    make_scene(90, 40, ["green"], seed=1)[0].save(folder / "sub" / "tall.png")
    return folder


def segment(*args):
    """The tiny model has 3 layers of 2 heads, so the paper's layer 8, head 10 do not exist."""
    return CliRunner().invoke(
        app, ["segment", *args, "--adapter", "blip", "--device", "cpu", "--layer", "2", "--head", "1"]
    )


@pytest.mark.slow
def test_segment_folder_with_tiny_blip(tiny_blip, images, tmp_path):
    result = segment(
        str(images),
        "--classes",
        "cat,dog,grass",
        "--model",
        str(tiny_blip),
        "--out",
        str(tmp_path),
        "--image-size",
        "64x96",
    )
    assert result.exit_code == 0, result.output
    for rel, size in (("wide.png", (100, 60)), ("sub/tall.png", (40, 90))):
        png = Image.open(tmp_path / rel)
        assert png.mode == "P" and png.size == size
        assert set(np.unique(np.array(png))) <= {0, 1, 2, 3}
    assert json.loads((tmp_path / "classes.json").read_text())["3"] == "grass"
    records = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert records[0]["settings"]["model"] == str(tiny_blip)
    assert records[0]["settings"]["params"]["image_size"] == [64, 96]


def test_too_many_classes_for_the_text_encoder_are_chunked(tiny_blip, images, tmp_path):
    # No adapter named: the tiny checkpoint's config.json (BlipForImageTextRetrieval) picks BLIP.
    segmenter = Segmenter.from_pretrained(str(tiny_blip), device="cpu", image_size=64, drop_rounds=2, layer=2, head=1)
    assert segmenter.adapter_name == "blip"
    names = VOC.split(",")
    plan = segmenter.plan(names)
    assert len(plan) > 1 and sorted(i for chunk in plan for i in chunk.classes) == list(range(20))
    result = segment(
        str(images / "wide.jpg"),
        "--classes",
        VOC,
        "--model",
        str(tiny_blip),
        "--out",
        str(tmp_path),
        "--image-size",
        "64",
        "--drop-rounds",
        "2",
    )
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "wide.png").size == (100, 60)


@pytest.mark.parametrize(
    "classes, message",
    [("cat," + "x" * 70, "too long for the text encoder"), ("cat,🐱", "cannot represent: 🐱")],
)
def test_names_the_model_cannot_take(tiny_blip, images, tmp_path, classes, message):
    result = segment(str(images), "--classes", classes, "--model", str(tiny_blip), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "o").exists()


def test_missing_local_model_folder(images, tmp_path):
    result = segment(str(images), "--classes", "cat", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert result.exit_code == 3 and "Traceback" not in result.output  # environment: a missing model
    assert str(tmp_path / "nope") in result.output.replace("\n", "")
