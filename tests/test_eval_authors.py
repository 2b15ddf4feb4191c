"""The ``*-authors`` datasets: ground truth read as the released code reads it, scored on
small fixtures against hand-computed IoUs (predictions as ``pnpseg segment`` writes them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pnpseg.cli import app
from pnpseg.errors import MissingDependencyError
from pnpseg.evaluation.datasets import DatasetError, get_dataset
from pnpseg.sources.gpt4o import COCO_THING_IDS


def png(path: Path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)


def jpg(path: Path, h: int, w: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (120, 80, 40)).save(path)


def score(dataset: str, root: Path, predictions: Path, out: Path) -> dict:
    result = CliRunner().invoke(
        app, ["eval", "--dataset", dataset, "--root", str(root), "--predictions", str(predictions), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return json.loads((out / "results.json").read_text())


def voc_layout(root: Path, ann_dir: str, split: str, label, pred, preds: Path) -> None:
    jpg(root / "JPEGImages" / "a.jpg", 2, 3)
    png(root / ann_dir / "a.png", label)
    (root / split).parent.mkdir(parents=True, exist_ok=True)
    (root / split).write_text("a\n")
    png(preds / "a.png", pred)


def test_voc21_authors_scores_the_boundary_as_background(tmp_path):
    label = [[0, 1, 255], [1, 1, 2]]  # the 255 boundary becomes background
    pred = [[0, 1, 1], [1, 1, 2]]
    voc_layout(tmp_path / "voc", "SegmentationClass", "ImageSets/Segmentation/val.txt", label, pred, tmp_path / "p")
    authors = score("voc21-authors", tmp_path / "voc", tmp_path / "p", tmp_path / "o1")
    # background 1/(2+1-1), aeroplane 3/(3+4-3), bicycle 1/1
    assert authors["per_class_iou"]["background"] == 50.0
    assert authors["per_class_iou"]["aeroplane"] == 75.0
    assert authors["mIoU"] == 75.0
    # voc20 ignores background and the boundary: every scored pixel is right.
    assert score("voc20", tmp_path / "voc", tmp_path / "p", tmp_path / "o2")["mIoU"] == 100.0


def test_pc60_authors_scores_background_and_ignores_255(tmp_path):
    label = [[0, 5, 5], [59, 0, 255]]
    pred = [[0, 5, 0], [59, 59, 3]]
    root = tmp_path / "pc"
    voc_layout(root, "SegmentationClassContext", "ImageSets/SegmentationContext/val.txt", label, pred, tmp_path / "p")
    result = score("pc60-authors", root, tmp_path / "p", tmp_path / "o")
    # background 1/(2+2-1), class 5 1/(2+1-1), class 59 1/(1+2-1)
    assert result["mIoU"] == pytest.approx(100 * (1 / 3 + 0.5 + 0.5) / 3, abs=1e-4)
    assert result["per_class_iou"]["tvmonitor"] is None  # not in the ground truth: not averaged


def test_coco_stuff_authors_scores_255_as_a_background_class(tmp_path):
    root = tmp_path / "stuff"
    jpg(root / "images/val2017/000000000139.jpg", 2, 3)
    png(root / "annotations/val2017/000000000139_labelTrainIds.png", [[255, 0, 0], [170, 170, 255]])
    png(tmp_path / "p/000000000139.png", [[0, 1, 171], [171, 171, 1]])
    result = score("coco-stuff-authors", root, tmp_path / "p", tmp_path / "o")
    assert len(result["per_class_iou"]) == 172
    # background 1/(2+1-1), person 1/(2+2-1), the last class 2/(2+3-2)
    assert result["per_class_iou"]["background"] == 50.0
    assert result["mIoU"] == pytest.approx(100 * (0.5 + 1 / 3 + 2 / 3) / 3, abs=1e-4)


def test_ade20k_authors_scores_other_as_class_zero(tmp_path):
    root = tmp_path / "ade"
    jpg(root / "images/validation/ADE_val_00000001.jpg", 2, 3)
    png(root / "annotations/validation/ADE_val_00000001.png", [[0, 0, 1], [150, 1, 1]])
    png(tmp_path / "p/ADE_val_00000001.png", [[0, 1, 1], [150, 1, 1]])
    result = score("ade20k-authors", root, tmp_path / "p", tmp_path / "o")
    assert len(result["per_class_iou"]) == 151
    # other 1/(2+1-1), wall 3/(3+4-3), class 150 1/1
    assert result["per_class_iou"]["other"] == 50.0
    assert result["mIoU"] == 75.0


def rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as coco_mask

    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": encoded["size"], "counts": encoded["counts"].decode()}


def coco_object_root(root: Path) -> Path:
    jpg(root / "images/val2017/000000000139.jpg", 4, 4)
    person, car, brush = np.zeros((3, 4, 4), bool)
    person[0:2, 0:2] = True
    car[1:3, 1:3] = True  # overlaps the person at (1, 1): the first instance keeps it
    brush[3, 3] = True
    annotations = [
        {"id": 1, "image_id": 139, "category_id": 1, "iscrowd": 0, "segmentation": rle(person), "area": 4},
        {"id": 2, "image_id": 139, "category_id": 3, "iscrowd": 1, "segmentation": rle(car), "area": 4},
        {"id": 3, "image_id": 139, "category_id": 90, "iscrowd": 0, "segmentation": rle(brush), "area": 1},
    ]
    data = {
        "images": [{"id": 139, "height": 4, "width": 4, "file_name": "000000000139.jpg"}],
        "annotations": annotations,
        "categories": [{"id": i, "name": f"c{i}"} for i in COCO_THING_IDS],
    }
    (root / "annotations").mkdir(parents=True)
    (root / "annotations/instances_val2017.json").write_text(json.dumps(data))
    return root


def test_coco_object_authors_paints_instances_crowd_included_first_wins(tmp_path):
    root = coco_object_root(tmp_path / "coco")
    dataset = get_dataset("coco-object-authors", root)
    [sample] = dataset.samples()
    expected = np.array([[1, 1, 0, 0], [1, 1, 3, 0], [0, 3, 3, 0], [0, 0, 0, 80]])
    assert (dataset.load_label(sample) == expected).all()
    png(tmp_path / "p/000000000139.png", [[1, 1, 0, 0], [1, 1, 1, 0], [0, 3, 0, 0], [0, 0, 0, 0]])
    result = score("coco-object-authors", root, tmp_path / "p", tmp_path / "o")
    # background 8/(8+10-8), person 4/(4+5-4), car 1/(3+1-1), toothbrush 0
    iou = result["per_class_iou"]
    assert (iou["background"], iou["person"], iou["toothbrush"]) == (80.0, 80.0, 0.0)
    assert result["mIoU"] == pytest.approx(100 * (0.8 + 0.8 + 1 / 3 + 0) / 4, abs=1e-4)


def test_coco_object_authors_errors(tmp_path, monkeypatch):
    root = coco_object_root(tmp_path / "coco")
    jpg(root / "images/val2017/000000000285.jpg", 4, 4)
    dataset = get_dataset("coco-object-authors", root)
    with pytest.raises(DatasetError, match="image id 285 is not in"):
        dataset.load_label(dataset.samples()[1])
    with pytest.raises(DatasetError, match="annotation file .* not found"):
        get_dataset("coco-object-authors", tmp_path).samples()
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'pnpseg\[coco\]'"):
        get_dataset("coco-object-authors", root).load_label(dataset.samples()[0])


def test_authors_label_values_outside_the_classes_are_named(tmp_path):
    label = [[0, 1, 21], [1, 1, 2]]
    voc_layout(tmp_path / "voc", "SegmentationClass", "ImageSets/Segmentation/val.txt", label, label, tmp_path / "p")
    dataset = get_dataset("voc21-authors", tmp_path / "voc")
    with pytest.raises(DatasetError, match="value.s. 21 that are no class of voc21-authors"):
        dataset.load_label(dataset.samples()[0])
