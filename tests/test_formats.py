"""``pnpseg segment --format png,coco,cvat,labelstudio``, ``--json`` and ``-`` (stdin), checked
through each format's own library: pycocotools, Label Studio's brush decoder."""

from __future__ import annotations

import json
import os
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
    coco = coco_api.COCO(str(out / "coco" / "annotations" / "instances_default.json"))
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
    brush = pytest.importorskip("label_studio_sdk.converter.brush")
    out, pngs, _ = run
    tasks = json.loads((out / "labelstudio.json").read_text())
    config = (out / "labelstudio-config.xml").read_text()
    for value, name in enumerate(VOCAB, start=1):  # each label in its palette colour, as in the PNGs
        assert f'<Label value="{name}" background="#{bytes(palette(value + 1)[-3:]).hex()}"/>' in config
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
    before = {
        p: (out / p).read_bytes()
        for p in ("coco/annotations/instances_default.json", "cvat/labelmap.txt", "labelstudio.json")
    }
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


def test_coco_masks_score_ap_1_against_themselves_in_cocoeval(run):
    """Issue 22: ``iscrowd`` 0 (1 makes COCOeval ignore every mask: AP -1), each image named
    relative to its input folder, the annotations where COCO loaders look for them."""
    coco_api = pytest.importorskip("pycocotools.coco")
    from pycocotools.cocoeval import COCOeval

    out, _, _ = run
    coco = coco_api.COCO(str(out / "coco" / "annotations" / "instances_default.json"))
    anns = coco.loadAnns(coco.getAnnIds())
    assert anns and {a["iscrowd"] for a in anns} == {0}
    assert sorted(im["file_name"] for im in coco.loadImgs(coco.getImgIds())) == ["a.png", "b.png", "sub/c.png"]
    detections = coco.loadRes([{**a, "score": 1.0} for a in anns])
    evaluation = COCOeval(coco, detections, iouType="segm")
    evaluation.evaluate(), evaluation.accumulate(), evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)  # AP over IoU .50:.95


def test_cvat_labels_json_is_the_labelmap_for_the_raw_label_editor(run):
    out, _, _ = run
    labels = json.loads((out / "cvat" / "labels.json").read_text())
    assert [label["name"] for label in labels] == ["background", *VOCAB]
    assert all(label["type"] == "any" and label["attributes"] == [] for label in labels)
    flat = palette(len(VOCAB) + 1)
    assert [label["color"] for label in labels] == [
        f"#{bytes(flat[3 * v : 3 * v + 3]).hex()}" for v in range(len(labels))
    ]


def test_labelstudio_urls_are_percent_encoded(tmp_path):
    """Issue 22: ``+ & # %`` in a path are encoded, so the local-files URL names the file."""
    from urllib.parse import parse_qs, urlsplit

    photos = tmp_path / "R&D photos"
    photos.mkdir()
    names = ["a+b.png", "shot #1.png", "100%.png", "é ü.png"]
    for i, name in enumerate(names):
        make_scene(*SIZE, VOCAB[:2], seed=i)[0].save(photos / name)
    out = tmp_path / "out"
    assert segment(str(photos), "--out", str(out), "--format", "labelstudio").exit_code == 0
    for task in json.loads((out / "labelstudio.json").read_text()):
        url = urlsplit(task["data"]["image"])
        assert url.path == "/data/local-files/" and not url.fragment
        (served,) = parse_qs(url.query)["d"]  # what Label Studio's server reads
        assert Path("/" + served) == (photos / Path(task["data"]["pnpseg_input"]).name).resolve()


def test_labelstudio_images_stay_found_after_a_resume_from_another_directory(scenes, tmp_path, monkeypatch):
    """Issue 21 item 9: records keep the input as given (relative to the first run's working
    directory); the tasks point at the files wherever the resume runs from."""
    from urllib.parse import parse_qs, urlsplit

    first, second = tmp_path / "first", tmp_path / "elsewhere" / "deeper"
    first.mkdir(), second.mkdir(parents=True)
    out = tmp_path / "out"
    monkeypatch.chdir(first)
    assert segment(os.path.relpath(scenes), "--out", "../out", "--format", "labelstudio").exit_code == 0
    monkeypatch.chdir(second)
    again = segment(os.path.relpath(scenes), "--out", "../../out", "--format", "labelstudio", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["already_done"] == 3
    tasks = json.loads((out / "labelstudio.json").read_text())
    for task in tasks:
        (served,) = parse_qs(urlsplit(task["data"]["image"]).query)["d"]
        assert Path("/" + served).is_file()
    assert len(tasks) == 3


@pytest.mark.parametrize("name", ["red:1", "background"])
def test_cvat_refuses_a_class_name_labelmap_cannot_hold(scenes, tmp_path, monkeypatch, name):
    """Issue 21 item 11: ``red:1`` was written as ``red 1``, a second label of that name."""
    monkeypatch.setattr(Segmenter, "from_pretrained", lambda *a, **k: pytest.fail("the model must not load"))
    result = CliRunner().invoke(
        app,
        ["segment", str(scenes), "--classes-file", str(_classes_file(tmp_path, ["red 1", name])), "--adapter"]
        + ["synthetic", "--out", str(tmp_path / "out"), "--format", "cvat"],
    )
    assert result.exit_code == 2, result.output
    assert "--format cvat: class name" in result.output and "labelmap.txt" in result.output
    assert not (tmp_path / "out" / "cvat").exists()


@pytest.mark.parametrize("name", ["#red", " red", "red\t", "a\rb"])
def test_cvat_check_refuses_what_a_stripped_commented_line_changes(name):
    from pnpseg.errors import PnpsegError
    from pnpseg.io.formats.cvat import check

    with pytest.raises(PnpsegError, match="labelmap.txt cannot hold"):
        check([name], [])
    with pytest.raises(PnpsegError, match="image list cannot hold"):
        check(["red"], ["a", name])
    check(["red", "red 1", "a#b"], ["a", "sub/b c", "d#e"])  # what reads back as written is kept


def _classes_file(tmp_path: Path, names: list[str]) -> Path:
    path = tmp_path / "classes.txt"
    path.write_text("\n".join(names) + "\n")
    return path


def test_cvat_refuses_an_image_name_its_image_list_cannot_hold(tmp_path, monkeypatch):
    """Issue 21 item 10: a newline in a file name split ``default.txt`` into two names."""
    photos = tmp_path / "photos"
    photos.mkdir()
    make_scene(*SIZE, VOCAB[:2], seed=0)[0].save(photos / "ok.png")
    make_scene(*SIZE, VOCAB[:2], seed=1)[0].save(photos / "two\nlines.png")
    monkeypatch.setattr(Segmenter, "from_pretrained", lambda *a, **k: pytest.fail("the model must not load"))
    result = segment(str(photos), "--out", str(tmp_path / "out"), "--format", "cvat")
    assert result.exit_code == 2, result.output
    assert "--format cvat: image 'two\\nlines'" in result.output
    assert not (tmp_path / "out" / "cvat").exists()
