"""`pnpseg eval`: dataset layouts, metrics against plain numpy, predictions mode, synthetic
end to end through a dataset plugin, resume, and the error messages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import pnpseg
from pnpseg.cli import app
from pnpseg.evaluation.datasets import (
    DatasetError,
    builtin_classes,
    coco_object_from_stuff,
    folder_dataset,
    get_dataset,
)
from pnpseg.evaluation.evaluate import Evaluation
from pnpseg.evaluation.metrics import confusion_matrix, scores
from pnpseg.evaluation.predictors import PredictionFolder
from pnpseg.evaluation.protocols import ClassMap
from pnpseg.io.outputs import palette
from pnpseg.plugins import pm
from pnpseg.testing import SyntheticAdapter, make_scene, miou


def run(*args: str):
    return CliRunner().invoke(app, ["eval", *args])


def png(path: Path, array: np.ndarray, mode: str = "P") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.asarray(array, np.uint8))
    if mode == "P":
        im.putpalette(palette(256))  # an "L" image becomes "P"
    im.save(path)


def rgb(path: Path, h: int, w: int, seed: int = 0, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)


def raw_label(h: int, w: int, values: list[int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = rng.choice(values, size=(h, w)).astype(np.uint8)
    lab[0, :] = 255  # an ignore/boundary row
    return lab


# -- dataset layouts ------------------------------------------------------------------------

# name: (class count, raw values written, mapping raw → expected train id)
LAYOUTS = {
    "voc21": (21, [0, 5, 20], lambda v: v),
    "voc20": (20, [0, 5, 20], lambda v: 255 if v in (0, 255) else v - 1),
    "pc60": (60, [0, 7, 59], lambda v: v),
    "pc59": (59, [0, 7, 59], lambda v: 255 if v in (0, 255) else v - 1),
    "coco-object": (81, [0, 1, 80], lambda v: v),
    "coco-stuff": (171, [0, 90, 170], lambda v: v),
    "ade20k": (150, [0, 1, 150], lambda v: 255 if v in (0, 255) else v - 1),
    "cityscapes": (19, [0, 11, 18], lambda v: v),
}


def write_layout(name: str, root: Path, values: list[int], count: int = 3, sizes=None) -> list[np.ndarray]:
    """A tiny copy of ``name``'s on-disk layout; returns the raw labels written, in id order."""
    sizes = sizes or [(12, 16)] * count
    labels = []
    ids = [f"2008_{i:06d}" for i in range(count)]
    for i, (sample, (h, w)) in enumerate(zip(ids, sizes)):
        lab = raw_label(h, w, values, seed=i)
        labels.append(lab)
        mode = "P" if i % 2 == 0 else "L"  # palette and plain grayscale label PNGs
        if name in ("voc21", "voc20"):
            rgb(root / "JPEGImages" / f"{sample}.jpg", h, w, i)
            png(root / "SegmentationClass" / f"{sample}.png", lab, mode)
        elif name in ("pc60", "pc59"):
            rgb(root / "JPEGImages" / f"{sample}.jpg", h, w, i)
            png(root / "SegmentationClassContext" / f"{sample}.png", lab, mode)
        elif name in ("coco-object", "coco-stuff"):
            rgb(root / "images/val2017" / f"{sample}.jpg", h, w, i)
            suffix = "_instanceTrainIds.png" if name == "coco-object" else "_labelTrainIds.png"
            png(root / "annotations/val2017" / f"{sample}{suffix}", lab, mode)
            other = "_labelTrainIds.png" if name == "coco-object" else "_instanceTrainIds.png"
            png(root / "annotations/val2017" / f"{sample}{other}", np.zeros_like(lab), "L")  # must be skipped
        elif name == "ade20k":
            rgb(root / "images/validation" / f"ADE_val_{sample}.jpg", h, w, i)
            png(root / "annotations/validation" / f"ADE_val_{sample}.png", lab, mode)
        elif name == "cityscapes":
            city = "frankfurt" if i % 2 else "lindau"
            rgb(root / "leftImg8bit/val" / city / f"{city}_{sample}_leftImg8bit.png", h, w, i, "PNG")
            png(root / "gtFine/val" / city / f"{city}_{sample}_gtFine_labelTrainIds.png", lab, mode)
    if name in ("voc21", "voc20"):
        split = root / "ImageSets/Segmentation/val.txt"
    elif name in ("pc60", "pc59"):
        split = root / "ImageSets/SegmentationContext/val.txt"
    else:
        split = None
    if split is not None:
        split.parent.mkdir(parents=True, exist_ok=True)
        split.write_text("\n".join(ids) + "\n")
    if name == "cityscapes":  # samples are sorted by relative path: frankfurt/ before lindau/
        order = sorted(range(count), key=lambda i: ("frankfurt" if i % 2 else "lindau", i))
        labels = [labels[i] for i in order]
    return labels


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_builtin_layouts_load_with_class_counts_and_ignore(tmp_path, name):
    count, values, expect = LAYOUTS[name]
    raws = write_layout(name, tmp_path, values)
    data = get_dataset(name, tmp_path)
    assert data.num_classes == count
    samples = data.samples()
    assert len(samples) == 3
    for sample, raw in zip(samples, raws):
        got = data.load_label(sample)
        want = np.vectorize(expect)(raw.astype(np.int64))
        np.testing.assert_array_equal(got, want)
        assert (got[0] == 255).all()  # the boundary row is ignored
        data.check_size(sample, got)


def test_class_lists_have_the_standard_lengths_and_synonyms():
    lengths = {
        "cls_voc21": 21,
        "cls_voc20": 20,
        "cls_context60": 60,
        "cls_context59": 59,
        "cls_coco_object": 81,
        "cls_coco_stuff": 171,
        "cls_ade20k": 150,
        "cls_city_scapes": 19,
    }
    for name, length in lengths.items():
        classes = builtin_classes(name)
        assert len(classes) == length, name
        flat = [s.casefold() for c in classes for s in c]
        assert len(flat) == len(set(flat)), name
    assert builtin_classes("cls_voc21")[0] == ["background"]
    assert builtin_classes("cls_context60")[0] == ["background"]
    assert builtin_classes("cls_voc21")[1:] == builtin_classes("cls_voc20")
    assert builtin_classes("cls_coco_stuff")[:80] == builtin_classes("cls_coco_object")[1:]
    assert builtin_classes("cls_voc20")[14][:2] == ["person", "person in shirt"]
    assert builtin_classes("cls_ade20k")[149] == ["flag"] and builtin_classes("cls_city_scapes")[18] == ["bicycle"]


def test_synonyms_fold_by_max_and_background_lookup(tmp_path):
    data = folder_dataset(img_dir="i", ann_dir="l", classes=[["cat", "kitten"], ["dog"], ["puppy", "kitten"]])(tmp_path)
    cmap = ClassMap(data)
    assert cmap.flat == ["cat", "kitten", "dog", "puppy"] and cmap.groups == [[0, 1], [2], [3, 1]]
    channels = torch.tensor([[[0.1]], [[0.7]], [[0.3]], [[0.2]]])
    assert cmap.fold(channels).flatten().tolist() == pytest.approx([0.7, 0.3, 0.7])
    assert cmap.lut.tolist() == [3, 0, 1, 2]  # no background class: 0 → none (3)
    assert ClassMap(data, synonyms=False).flat == ["cat", "dog", "puppy"]


def test_coco_object_conversion():
    stuff = np.array([[0, 79, 80], [170, 255, 5]], np.uint8)
    np.testing.assert_array_equal(coco_object_from_stuff(stuff), [[1, 80, 0], [0, 255, 6]])


# -- metrics --------------------------------------------------------------------------------


def plain_miou(gts, preds, n, rule):
    gt = np.concatenate([g.ravel() for g in gts]).astype(int)
    pred = np.concatenate([p.ravel() for p in preds]).astype(int)
    keep = gt != 255
    gt, pred = gt[keep], pred[keep]
    ious = []
    for c in range(n):
        inter = np.sum((gt == c) & (pred == c))
        union = np.sum((gt == c) | (pred == c))
        if (rule == "present" and np.sum(gt == c) > 0) or (rule == "union" and union > 0):
            ious.append(inter / union)
    return np.mean(ious), np.sum(gt == pred) / gt.size


@pytest.mark.parametrize("seed", range(4))
def test_miou_matches_plain_numpy(seed):
    rng = np.random.default_rng(seed)
    n = 9
    gts, preds = [], []
    cm = np.zeros((n, n + 1), np.int64)
    for _ in range(3):
        gt = rng.choice([0, 1, 2, 4, 255], size=(20, 30))  # classes 3, 5..8 absent from gt
        pred = rng.choice([0, 1, 3, 4, 7, n], size=(20, 30))  # 7 predicted only; n = none
        match = rng.random(gt.shape) < 0.5
        pred[match & (gt != 255)] = gt[match & (gt != 255)]
        gts.append(gt)
        preds.append(pred)
        cm += confusion_matrix(gt, pred, n)
    for rule in ("present", "union"):
        want_miou, want_acc = plain_miou(gts, preds, n, rule)
        got = scores(cm, rule)
        assert got.miou == pytest.approx(want_miou)
        assert got.aacc == pytest.approx(want_acc)
    # the two rules really differ here: classes 3 and 7 are predicted but never in the gt
    assert scores(cm, "present").miou != pytest.approx(scores(cm, "union").miou)
    assert scores(cm, "present").evaluated.tolist() == [True, True, True, False, True, False, False, False, False]


# -- predictions mode -----------------------------------------------------------------------


def voc_with_known_predictions(root: Path, preds_dir: Path, table: dict | None = None):
    # raw gt (VOC: 0 bg, 1 aeroplane, 2 bicycle, 255 boundary)
    gt = np.array([[0, 1, 1, 1], [1, 1, 1, 1], [2, 2, 2, 2], [2, 2, 2, 255]], np.uint8)
    # prediction in segment's convention: 0 bg, 1 aeroplane, 2 bicycle, 3 bird
    pred = np.array([[1, 1, 1, 1], [2, 1, 1, 1], [0, 3, 2, 2], [2, 2, 2, 2]], np.uint8)
    rgb(root / "JPEGImages/a.jpg", 4, 4)
    png(root / "SegmentationClass/a.png", gt)
    (root / "ImageSets/Segmentation").mkdir(parents=True)
    (root / "ImageSets/Segmentation/val.txt").write_text("a\n")
    if table is not None:  # the prediction's own class order
        inverse = {v: int(k) for k, v in table.items()}
        order = {0: "background", 1: "airplane", 2: "Bicycle", 3: "bird"}  # the names the table uses
        pred = np.vectorize(lambda v: inverse[order[v]])(pred).astype(np.uint8)
        preds_dir.mkdir(parents=True, exist_ok=True)
        (preds_dir / "classes.json").write_text(json.dumps(table))
    png(preds_dir / "a.png", pred)


def test_predictions_mode_gives_the_exact_miou(tmp_path):
    root, preds = tmp_path / "voc", tmp_path / "preds"
    voc_with_known_predictions(root, preds)
    # VOC20 (bg ignored). aeroplane: gt 7, pred 6 (pixel (1,0) went to bicycle), inter 6 → 6/7.
    # bicycle: gt 7, pred 6 + (1,0) = 7, inter 5 ((2,0) none, (2,1) bird) → 5/9. bird: gt 0, pred 1 → 0.
    pnp = run("--dataset", "voc20", "--root", str(root), "--predictions", str(preds), "--out", str(tmp_path / "o1"))
    assert pnp.exit_code == 0, pnp.output
    result = json.loads((tmp_path / "o1/results.json").read_text())
    assert result["mIoU"] == pytest.approx(100 * (6 / 7 + 5 / 8) / 2, abs=1e-3)  # present in gt only
    assert result["aAcc"] == pytest.approx(100 * 11 / 14, abs=1e-3)
    assert result["images"] == 1 and result["per_class_iou"]["bird"] is None
    std = run(
        "--dataset",
        "voc20",
        "--root",
        str(root),
        "--predictions",
        str(preds),
        "--protocol",
        "standard",
        "--out",
        str(tmp_path / "o2"),
    )
    assert std.exit_code == 0, std.output
    result = json.loads((tmp_path / "o2/results.json").read_text())
    assert result["mIoU"] == pytest.approx(100 * (6 / 7 + 5 / 8 + 0) / 3, abs=1e-3)  # non-empty union
    # VOC21: background is a class: gt 1 (pixel (0,0)), pred 1 ((2,0)), inter 0 → 0;
    # aeroplane: gt 7, pred 7 (+ (0,0)), inter 6 → 6/8; bicycle 5/8; bird 0/1 (standard only).
    v21 = run(
        "--dataset",
        "voc21",
        "--root",
        str(root),
        "--predictions",
        str(preds),
        "--protocol",
        "standard",
        "--out",
        str(tmp_path / "o3"),
    )
    assert v21.exit_code == 0, v21.output
    result = json.loads((tmp_path / "o3/results.json").read_text())
    assert result["mIoU"] == pytest.approx(100 * (0 + 6 / 8 + 5 / 8 + 0) / 4, abs=1e-3)
    assert "mIoU" in v21.output
    out = tmp_path / "o3"
    assert (out / "results.md").read_text().count("| aeroplane | 75.00 |") == 1
    csv = (out / "per_class_iou.csv").read_text().splitlines()
    assert csv[0].startswith("class,iou") and csv[2].startswith("aeroplane,75.0000,1,6,8,7,7")
    assert Image.open(out / "confusion.png").size[0] > 50


def test_predictions_mode_honours_classes_json(tmp_path):
    root, preds = tmp_path / "voc", tmp_path / "preds"
    table = {"0": "background", "1": "bird", "2": "Bicycle", "3": "airplane"}  # reordered; a synonym
    voc_with_known_predictions(root, preds, table)
    result = run("--dataset", "voc20", "--root", str(root), "--predictions", str(preds), "--out", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "o/results.json").read_text())["mIoU"] == pytest.approx(
        100 * (6 / 7 + 5 / 8) / 2, abs=1e-3
    )
    (preds / "classes.json").write_text(json.dumps({"0": "background", "1": "zebra"}))
    bad = run("--dataset", "voc20", "--root", str(root), "--predictions", str(preds), "--out", str(tmp_path / "o4"))
    assert bad.exit_code == 2 and "zebra" in bad.output and "classes.json" in bad.output


# -- synthetic end to end through a dataset plugin ------------------------------------------

COLOURS = ["red", "green", "blue"]


class ColourDatasetPlugin:
    def __init__(self, classes_file: Path):
        self.classes_file = classes_file

    @pnpseg.hookimpl
    def register_datasets(self, register):
        register(
            "colours",
            folder_dataset(
                name="colours",
                img_dir="images",
                ann_dir="labels",
                classes=self.classes_file,
                img_suffix=".png",
                has_background=True,
                pnp_background="always",
            ),
        )


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    root = tmp_path_factory.mktemp("colours")
    for i, (h, w) in enumerate([(160, 224), (176, 144), (144, 192)]):
        image, labels = make_scene(h, w, COLOURS, seed=10 + i)
        (root / "images").mkdir(exist_ok=True)
        image.save(root / "images" / f"s{i}.png")
        png(root / "labels" / f"s{i}.png", labels, "P" if i else "L")
    (root / "classes.txt").write_text("background\nred, the red\ngreen\nblue\n")
    plugin = ColourDatasetPlugin(root / "classes.txt")
    pm.register(plugin, name="test-colour-datasets")
    yield root
    pm.unregister(plugin)


@pytest.mark.slow
def test_synthetic_end_to_end_and_rescoring_saved_predictions(colours, tmp_path):
    out = tmp_path / "eval"
    result = run(
        "--dataset",
        "colours",
        "--root",
        str(colours),
        "--adapter",
        "synthetic",
        "--device",
        "cpu",
        "--image-size",
        "160x224",
        "--out",
        str(out),
        "--save-predictions",
    )
    assert result.exit_code == 0, result.output
    scored = json.loads((out / "results.json").read_text())
    assert scored["images"] == 3 and scored["mIoU"] >= 85, scored
    assert set(scored["per_class_iou"]) == {"background", "red", "green", "blue"}
    assert json.loads((out / "predictions/classes.json").read_text())["1"] == "red"
    again = run(
        "--dataset",
        "colours",
        "--root",
        str(colours),
        "--predictions",
        str(out / "predictions"),
        "--out",
        str(tmp_path / "rescored"),
    )
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "rescored/results.json").read_text())["mIoU"] == scored["mIoU"]


@pytest.mark.slow
def test_synthetic_standard_protocol_with_sliding_window(colours, tmp_path):
    out = tmp_path / "std"
    result = run(
        "--dataset",
        "colours",
        "--root",
        str(colours),
        "--adapter",
        "synthetic",
        "--device",
        "cpu",
        "--protocol",
        "standard",
        "--image-size",
        "160",
        "--slide",
        "160:112",
        "--limit",
        "2",
        "--bg-threshold",
        "0.2",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    scored = json.loads((out / "results.json").read_text())
    assert scored["images"] == 2 and scored["settings"]["slide"] == [160, 112] and scored["settings"]["synonyms"]
    assert scored["mIoU"] >= 85, scored  # synonyms "red" and "the red" max-pooled into one class


# -- resume ---------------------------------------------------------------------------------


class Interrupting:
    def __init__(self, inner, after: int | None):
        self.inner, self.after, self.calls = inner, after, 0

    def __call__(self, sample, label):
        if self.after is not None and self.calls == self.after:
            raise KeyboardInterrupt
        self.calls += 1
        return self.inner(sample, label)

    def inputs(self, sample):
        return self.inner.inputs(sample)


def test_resume_after_interruption_gives_the_same_result(tmp_path):
    root, preds = tmp_path / "ade", tmp_path / "preds"
    write_layout("ade20k", root, [0, 1, 2, 3, 150], count=7)
    rng = np.random.default_rng(0)
    data = get_dataset("ade20k", root)
    for sample in data.samples():
        png(preds / f"{sample.id}.png", rng.integers(0, 5, (12, 16)))
    folder = PredictionFolder(preds, data)
    fresh = Evaluation(data, Interrupting(folder, None), tmp_path / "fresh", protocol="pnp").run()

    out = tmp_path / "resumed"
    first = Interrupting(folder, after=5)
    with pytest.raises(KeyboardInterrupt):
        Evaluation(get_dataset("ade20k", root), first, out, checkpoint_every=2).run()
    assert (out / "eval_state.npz").exists() and not (out / "results.json").exists()
    second = Interrupting(folder, None)
    resumed = Evaluation(get_dataset("ade20k", root), second, out, checkpoint_every=2).run()
    assert second.calls == 2  # only what was left
    assert resumed.images == 7 and resumed.miou == fresh.miou
    np.testing.assert_array_equal(resumed.confusion, fresh.confusion)
    assert (out / "results.json").read_text().replace(str(out), "") != ""
    # a different protocol must not silently reuse the saved state
    other = run(
        "--dataset",
        "ade20k",
        "--root",
        str(root),
        "--predictions",
        str(preds),
        "--protocol",
        "standard",
        "--out",
        str(out),
    )
    assert other.exit_code == 2 and "other settings" in other.output


# -- errors ---------------------------------------------------------------------------------


def test_missing_folder_is_named(tmp_path):
    write_layout("voc21", tmp_path, [0, 1])
    (tmp_path / "SegmentationClass").rename(tmp_path / "elsewhere")
    result = run("--dataset", "voc21", "--root", str(tmp_path), "--predictions", str(tmp_path))
    assert result.exit_code == 2 and "SegmentationClass" in result.output and "not found" in result.output


def test_split_entry_without_label_is_named(tmp_path):
    write_layout("voc20", tmp_path, [0, 1])
    (tmp_path / "SegmentationClass/2008_000001.png").unlink()
    with pytest.raises(DatasetError, match=r"2008_000001\.png .*val\.txt"):
        get_dataset("voc20", tmp_path).samples()


def test_mismatched_image_and_label_counts_are_named(tmp_path):
    write_layout("ade20k", tmp_path, [0, 1])
    png(tmp_path / "annotations/validation/ADE_val_extra.png", np.zeros((12, 16)))
    result = run(
        "--dataset", "ade20k", "--root", str(tmp_path), "--predictions", str(tmp_path), "--out", str(tmp_path / "o")
    )
    assert result.exit_code == 2, result.output
    assert "3 images" in result.output and "4 labels" in result.output and "ADE_val_extra.png" in result.output


def test_label_values_outside_the_class_range_are_named(tmp_path):
    write_layout("voc21", tmp_path, [0, 1])
    png(tmp_path / "SegmentationClass/2008_000002.png", np.full((12, 16), 21), "L")  # 21 > 20, not 255
    data = get_dataset("voc21", tmp_path)
    with pytest.raises(DatasetError, match=r"2008_000002\.png has value\(s\) 21 outside the class range 0\.\.20"):
        data.load_label(data.samples()[2])
    write_layout("ade20k", tmp_path / "ade", [0, 1])
    png(tmp_path / "ade/annotations/validation/ADE_val_2008_000000.png", np.full((12, 16), 151))
    data = get_dataset("ade20k", tmp_path / "ade")
    with pytest.raises(DatasetError, match=r"value\(s\) 151 outside the class range 0\.\.150"):
        data.load_label(data.samples()[0])
    # an RGB "label" is refused too
    Image.new("RGB", (16, 12)).save(tmp_path / "SegmentationClass/2008_000002.png")
    with pytest.raises(DatasetError, match="single-channel"):
        data_voc = get_dataset("voc21", tmp_path)
        data_voc.load_label(data_voc.samples()[2])


def test_image_and_label_sizes_must_agree(tmp_path, colours):
    root = tmp_path / "colours"
    shutil.copytree(colours, root)
    make_scene(150, 144, COLOURS, seed=11)[0].save(root / "images/s1.png")  # label is 144x176
    result = run(
        "--dataset",
        "colours",
        "--root",
        str(root),
        "--adapter",
        "synthetic",
        "--device",
        "cpu",
        "--image-size",
        "64",
        "--drop-rounds",
        "1",
        "--out",
        str(tmp_path / "o"),
    )
    assert result.exit_code == 2, result.output
    assert "s1.png is 144x150 but its label" in result.output.replace("\n", "")
    write_layout("voc21", tmp_path, [0, 1])
    # predictions of the wrong size are named as well
    png(tmp_path / "preds/2008_000000.png", np.zeros((5, 5)))
    bad = run(
        "--dataset",
        "voc21",
        "--root",
        str(tmp_path),
        "--predictions",
        str(tmp_path / "preds"),
        "--out",
        str(tmp_path / "o2"),
    )
    assert bad.exit_code == 2 and "2008_000000.png is 5x5" in bad.output.replace("\n", "")


def test_unknown_dataset_lists_the_registered_ones(tmp_path):
    result = run("--dataset", "nope", "--root", str(tmp_path))
    assert result.exit_code == 2 and "voc20" in result.output and "cityscapes" in result.output


@pytest.mark.slow
def test_pnp_background_policies(tmp_path):
    from pnpseg.evaluation.predictors import ModelPredictor
    from pnpseg.method.segmenter import Segmenter

    data = folder_dataset(img_dir="i", ann_dir="l", classes=["red", "blue"], reduce_zero_label=True)(tmp_path)
    image, truth = make_scene(160, 160, ["red", "blue"], seed=3)
    segmenter = Segmenter(SyntheticAdapter(), image_size=(160, 160), drop_rounds=1, postprocess="blur")
    labels = {
        policy: ModelPredictor(segmenter, data, "pnp", pnp_background=policy)._labels(image)
        for policy in ("never", "few:1", "few:4", "always")
    }
    assert 0 not in labels["never"] and 0 not in labels["few:1"]  # ≥ 1 class predicted: no background
    assert 0 in labels["few:4"] and 0 in labels["always"]  # < 4 classes predicted: background added
    np.testing.assert_array_equal(labels["few:4"], labels["always"])
    assert miou(labels["always"], truth, 3) > 0.7
    with pytest.raises(pnpseg.PnpsegError, match="few:N"):
        ModelPredictor(segmenter, data, "pnp", pnp_background="sometimes")
    # few:N was renamed for what it counts (issue 20); the old spelling is respelled, with a warning
    renamed = ModelPredictor(segmenter, data, "pnp", pnp_background="if-fewer-predicted:4")
    np.testing.assert_array_equal(renamed._labels(image), labels["few:4"])
    with pytest.warns(pnpseg.errors.PnpsegDeprecationWarning, match="'if-fewer-predicted:4' now"):
        assert ModelPredictor(segmenter, data, "pnp", pnp_background="few:4").settings()["pnp_background"] == (
            "if-fewer-predicted:4"
        )


def test_predictions_named_like_segment_outputs_are_found(tmp_path):
    raws = write_layout("cityscapes", tmp_path / "city", [0, 11, 18], count=2)
    data = get_dataset("cityscapes", tmp_path / "city")
    preds = tmp_path / "preds"
    for sample, raw in zip(data.samples(), raws):  # perfect predictions, segment's naming and values
        relative = sample.image.relative_to(tmp_path / "city/leftImg8bit/val").with_suffix(".png")
        assert relative.name.endswith("_leftImg8bit.png")
        png(preds / relative, np.where(raw == 255, 0, raw + 1))
    result = run(
        "--dataset",
        "cityscapes",
        "--root",
        str(tmp_path / "city"),
        "--predictions",
        str(preds),
        "--out",
        str(tmp_path / "o"),
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "o/results.json").read_text())["mIoU"] == 100.0
    (preds / relative).unlink()
    missing = run(
        "--dataset",
        "cityscapes",
        "--root",
        str(tmp_path / "city"),
        "--predictions",
        str(preds),
        "--out",
        str(tmp_path / "o2"),
    )
    assert missing.exit_code == 2 and "not found" in missing.output


def test_relative_class_file_resolves_against_the_dataset_root(tmp_path, monkeypatch):
    """Issue 13.9: ``classes="classes.txt"`` is read from the root, like img_dir/ann_dir."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("sky\nsea\n")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    (elsewhere / "classes.txt").write_text("wrong\n")
    monkeypatch.chdir(elsewhere)
    data = folder_dataset(img_dir="images", ann_dir="labels", classes="classes.txt")(root)
    assert data.class_names == ["sky", "sea"]


# -- issue 12.2: resume never reuses a stale record; the library API ----------------------


def test_eval_never_reuses_a_record_whose_prediction_or_label_changed(tmp_path):
    """Regenerated predictions printed the old mIoU (100.00 instead of 17.46) with the default --out."""
    root, preds = tmp_path / "ade", tmp_path / "preds"
    labels = write_layout("ade20k", root, [0, 1, 2, 3, 150], count=4)
    data = get_dataset("ade20k", root)
    for sample, raw in zip(data.samples(), labels):  # perfect predictions (ade20k: raw v → prompted v)
        png(preds / f"{sample.id}.png", np.where(raw == 255, 0, raw))
    common = ["--dataset", "ade20k", "--root", str(root), "--predictions", str(preds), "--out", str(tmp_path / "o")]
    first = run(*common)
    assert first.exit_code == 0, first.output
    assert json.loads((tmp_path / "o/results.json").read_text())["mIoU"] == 100.0
    assert "4 image(s) scored in this run, 0 result(s) reused" in first.output.replace("\n", " ")

    rng = np.random.default_rng(1)
    changed = data.samples()[1]
    png(preds / f"{changed.id}.png", rng.integers(0, 5, labels[1].shape))  # one prediction regenerated
    second = run(*common)
    assert second.exit_code == 0, second.output
    assert "1 image(s) scored in this run, 3 result(s) reused" in second.output.replace("\n", " ")
    fresh = pnpseg.evaluate("ade20k", root, predictions=preds)
    assert fresh.miou < 1.0 and fresh.reused == 0 and fresh.images == 4
    again = json.loads((tmp_path / "o/results.json").read_text())
    assert again["mIoU"] == pytest.approx(100 * fresh.miou, abs=1e-3)

    png(changed.label, np.where(labels[0][: labels[1].shape[0]] == 255, 255, 2))  # a label edited
    third = run(*common)
    assert "1 image(s) scored in this run, 3 result(s) reused" in third.output.replace("\n", " ")
    assert json.loads((tmp_path / "o/results.json").read_text())["mIoU"] == pytest.approx(
        100 * pnpseg.evaluate("ade20k", root, predictions=preds).miou, abs=1e-3
    )
    unchanged = run(*common)
    assert "0 image(s) scored in this run, 4 result(s) reused" in unchanged.output.replace("\n", " ")


def test_evaluate_is_a_library_call_with_a_result_and_no_console_output(tmp_path, capsys):
    root, preds = tmp_path / "voc", tmp_path / "preds"
    voc_with_known_predictions(root, preds)
    seen = []
    result = pnpseg.evaluate("voc20", root, predictions=preds, progress=lambda *e: seen.append(e))
    assert capsys.readouterr() == ("", "") and sorted(p.name for p in tmp_path.iterdir()) == ["preds", "voc"]
    assert result.miou == pytest.approx((6 / 7 + 5 / 8) / 2) and result.aacc == pytest.approx(11 / 14)
    assert result.per_class["bird"] is None and result.images == 1 and result.reused == 0
    assert result.confusion.shape == (20, 21) and int(result.confusion.sum()) == 14
    assert seen[0][:2] == (0, 1) and seen[-1][:2] == (1, 1)
    with pytest.raises(pnpseg.PnpsegError, match="root folder"):
        pnpseg.evaluate("voc20", predictions=preds)
    saved = pnpseg.evaluate("voc20", root, predictions=preds, out=tmp_path / "o")
    assert saved.out == tmp_path / "o" and (tmp_path / "o" / "results.json").exists()
    assert pnpseg.evaluate("voc20", root, predictions=preds, out=tmp_path / "o").reused == 1


def test_a_model_result_is_redone_when_its_image_changes_and_old_state_files_are_refused(tmp_path):
    root = tmp_path / "voc"
    write_layout("voc21", root, [0, 5, 20], count=3)
    data = get_dataset("voc21", root)
    calls = []

    def predictor(sample, label):  # a model: its prediction depends on the image only
        calls.append(sample.id)
        return np.zeros_like(label)

    out = tmp_path / "o"
    Evaluation(data, predictor, out).run()
    assert Evaluation(data, predictor, out).run().reused == 3 and len(calls) == 3
    rgb(data.samples()[2].image, 12, 16, seed=99)  # the image is replaced
    again = Evaluation(data, predictor, out).run()
    assert (again.reused, calls[3:]) == (2, [data.samples()[2].id])
    np.savez(out / "eval_state.npz", confusion=np.zeros((21, 22)), done=np.array(["x"]), settings="{}")  # 0.1.0
    with pytest.raises(pnpseg.PnpsegError, match="older pnpseg; use --overwrite"):
        Evaluation(data, predictor, out).run()
    assert Evaluation(data, predictor, out, overwrite=True).run().reused == 0


def test_json_summary_on_stdout(tmp_path):
    """``eval --json``: one JSON document on stdout with the numbers of results.json; tables on stderr."""
    root, preds = tmp_path / "voc", tmp_path / "preds"
    voc_with_known_predictions(root, preds)
    out = tmp_path / "o"
    result = run("--dataset", "voc20", "--root", str(root), "--predictions", str(preds), "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    saved = json.loads((out / "results.json").read_text())
    assert summary["command"] == "eval" and summary["output"] == str(out) and summary["reused"] == 0
    assert summary["mIoU"] == saved["mIoU"] == pytest.approx(100 * (6 / 7 + 5 / 8) / 2, abs=1e-3)
    assert summary["per_class_iou"] == saved["per_class_iou"]
    assert "mIoU" in result.stderr
