"""``pnpseg segment --format png,coco,cvat,labelstudio``, ``--json`` and ``-`` (stdin), checked
through each format's own library: pycocotools, Label Studio's brush decoder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pnpseg.cli import app
from pnpseg.io.outputs import palette
from pnpseg.method.segmenter import Segmenter
from pnpseg.testing import COLOURS, make_scene

VOCAB = list(COLOURS)[:4]
SIZE = (64, 80)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmt_scenes")
    (root / "sub").mkdir()
    for i, where in enumerate(["a.png", "b.png", "sub/c.png"]):
        make_scene(*SIZE, VOCAB[i % 2 : i % 2 + 2], seed=i)[0].save(root / where)
    return root


def segment(*args: str, stdin: str | None = None):
    return CliRunner().invoke(
        app,
        ["segment", *args, "--classes", ",".join(VOCAB), "--adapter", "synthetic", "--device", "cpu"]
        + ["--image-size", f"{SIZE[0]}x{SIZE[1]}"],
        input=stdin,
    )


def labels_of(out: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(out).with_suffix("").as_posix(): np.array(Image.open(p)) for p in sorted(out.rglob("*.png"))}


@pytest.fixture(scope="module")
def run(scenes, tmp_path_factory):
    out = tmp_path_factory.mktemp("fmt") / "out"
    result = segment(str(scenes), "--out", str(out), "--format", "png,coco,cvat,labelstudio", "--json")
    assert result.exit_code == 0, result.output
    pngs = {k: v for k, v in labels_of(out).items() if not k.startswith("cvat/")}
    assert set(pngs) == {"a", "b", "sub/c"}
    return out, pngs, result


@pytest.mark.slow
def test_json_summary_is_the_only_stdout(run):
    out, _, result = run
    summary = json.loads(result.stdout)  # one JSON document, nothing else
    assert summary["command"] == "segment" and summary["segmented"] == 3 and summary["failed"] == 0
    assert summary["manifest"].endswith("manifest.jsonl")
    assert set(summary["formats"]) == {"coco", "cvat", "labelstudio"}
    assert all(Path(p).is_file() for paths in summary["formats"].values() for p in paths)
    assert "Segmenting" in result.stderr  # progress and the table stay on stderr


@pytest.mark.slow
def test_coco_round_trips_through_pycocotools(run):
    coco_api = pytest.importorskip("pycocotools.coco")
    out, pngs, _ = run
    coco = coco_api.COCO(str(out / "coco.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == VOCAB
    for image in coco.loadImgs(coco.getImgIds()):
        labels = pngs[Path(image["pnpseg_output"]).with_suffix("").as_posix()]
        assert (image["height"], image["width"]) == labels.shape
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        assert sorted(a["category_id"] for a in anns) == [v for v in np.unique(labels) if v]  # one per class present
        for ann in anns:
            mask = coco.annToMask(ann)
            np.testing.assert_array_equal(mask.astype(bool), labels == ann["category_id"])
            assert ann["area"] == mask.sum()


def test_cvat_layout_and_labelmap_colours_match_the_palette(run):
    out, pngs, _ = run
    lines = (out / "cvat" / "labelmap.txt").read_text().splitlines()
    assert lines[0] == "# label:color_rgb:parts:actions"
    colours = {}
    for value, line in enumerate(lines[1:]):
        name, rgb, parts, actions = line.split(":")
        assert name == (["background", *VOCAB][value]) and parts == actions == ""
        colours[tuple(int(c) for c in rgb.split(","))] = value
        assert list(colours)[-1] == tuple(palette(value + 1)[3 * value :])
    assert (out / "cvat" / "ImageSets" / "Segmentation" / "default.txt").read_text().split() == ["a", "b", "sub/c"]
    for name, labels in pngs.items():
        rgb = np.array(Image.open(out / "cvat" / "SegmentationClass" / f"{name}.png").convert("RGB"))
        decoded = np.vectorize(lambda r, g, b: colours[(r, g, b)])(rgb[..., 0], rgb[..., 1], rgb[..., 2])
        np.testing.assert_array_equal(decoded, labels)


def test_labelstudio_tasks_decode_with_label_studios_brush_decoder(run):
    brush = pytest.importorskip("label_studio_converter.brush")
    out, pngs, _ = run
    tasks = json.loads((out / "labelstudio.json").read_text())
    config = (out / "labelstudio-config.xml").read_text()
    assert all(f'<Label value="{name}"/>' in config for name in VOCAB)
    assert len(tasks) == 3
    for task in tasks:
        assert task["data"]["image"].startswith("/data/local-files/?d=")
        stem = Path(task["data"]["pnpseg_input"]).with_suffix("")
        labels = pngs[stem.relative_to(stem.parents[1] if stem.parent.name == "sub" else stem.parent).as_posix()]
        (prediction,) = task["predictions"]
        found = []
        for region in prediction["result"]:
            assert (region["from_name"], region["to_name"], region["type"]) == ("tag", "image", "brushlabels")
            assert (region["original_height"], region["original_width"]) == labels.shape
            (name,) = region["value"]["brushlabels"]
            alpha = brush.decode_rle(region["value"]["rle"]).reshape(*labels.shape, 4)[..., 3]
            np.testing.assert_array_equal(alpha == 255, labels == VOCAB.index(name) + 1)
            found.append(VOCAB.index(name) + 1)
        assert found == [v for v in np.unique(labels) if v]


def test_resume_rebuilds_every_format_from_all_finished_images(run, scenes, tmp_path):
    out, _, _ = run
    before = {p: (out / p).read_bytes() for p in ("coco.json", "cvat/labelmap.txt", "labelstudio.json")}
    result = segment(str(scenes), "--out", str(out), "--format", "coco,cvat,labelstudio", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["segmented"] == 0 and summary["already_done"] == 3
    assert all((out / p).read_bytes() == data for p, data in before.items())
    assert not list(out.rglob(".*.tmp-*"))


def test_stdin_inputs(scenes, tmp_path):
    paths = f"{scenes / 'a.png'}\n\n{scenes / 'sub' / 'c.png'}\n"
    result = segment("-", "--out", str(tmp_path / "out"), "--json", "--root", str(scenes), stdin=paths)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["segmented"] == 2
    assert segment("-", "--out", str(tmp_path / "o2"), stdin="").exit_code == 2


def test_unknown_format_and_missing_library_fail_before_the_model_loads(scenes, tmp_path, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(Segmenter, "from_pretrained", no_model)
    result = segment(str(scenes), "--out", str(tmp_path / "o"), "--format", "png,yolo")
    assert result.exit_code == 2 and "choose from png, coco, cvat, labelstudio" in result.output
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    result = segment(str(scenes), "--out", str(tmp_path / "o"), "--format", "coco")
    assert result.exit_code == 3 and "pnpseg[coco]" in result.output
