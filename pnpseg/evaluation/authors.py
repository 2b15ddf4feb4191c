"""The authors' scoring: each dataset's ground truth read as the released code reads it.

The released metric is the one of the ``pnp`` protocol (one confusion matrix over the split,
mean IoU over the classes present in the ground truth), but its ground truth scores the
background too (docs/evaluation.md):

* ``voc21-authors``: 21 classes, the boundary label 255 becomes background and is scored;
* ``pc60-authors``: 60 classes, background scored (what ``pc60`` already does);
* ``coco-object-authors``: painted from ``instances_val2017.json`` (:mod:`.coco_instances`),
  every pixel no instance covers is background and scored;
* ``coco-stuff-authors``: 255 becomes a "background" class scored with the 171;
* ``ade20k-authors``: label 0 ("other") is a class of its own, 151 in all.

Their class lists name the classes as the released code prompts them (``tvmonitor``,
``chestofdrawers``), with pnpseg's names as synonyms, so ``--export-classes`` gives their
exact vocabulary.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pnpseg.evaluation.datasets import (
    IGNORE,
    Dataset,
    DatasetError,
    DatasetFactory,
    Sample,
    decode_label,
)
from pnpseg.hookspecs import hookimpl
from pnpseg.io.class_lists import DATASET_CLASSES, dataset_classes


def label_table(num_classes: int, shift: int = 0, boundary: int = IGNORE) -> np.ndarray:
    """Raw 8-bit label value → class index: ``v → v + shift`` for the ``num_classes - shift``
    raw classes, 255 → ``boundary`` (255 = still ignored), anything else -1 (invalid)."""
    table = np.full(256, -1, dtype=np.int64)
    table[: num_classes - shift] = np.arange(shift, num_classes)
    table[IGNORE] = boundary
    return table


@dataclass
class RelabelledDataset(Dataset):
    """A folder dataset whose raw label values go through ``table`` (:func:`label_table`)."""

    table: np.ndarray = field(default_factory=lambda: label_table(256), repr=False)

    def load_label(self, sample: Sample) -> np.ndarray:
        raw = decode_label(sample.label, 256)
        labels = self.table[raw]
        if (labels < 0).any():
            values = ", ".join(map(str, np.unique(raw[labels < 0])[:10].tolist()))
            raise DatasetError(f"label {sample.label} has value(s) {values} that are no class of {self.name}")
        return labels


@dataclass
class CocoInstancesDataset(Dataset):
    """COCO-Object as the released code reads it: labels painted from the instance annotations
    (``ann_file``, a COCO ``instances_*.json``) instead of label PNGs; needs pycocotools."""

    ann_file: str = "annotations/instances_val2017.json"

    def _find_samples(self) -> list[Sample]:  # samples() caches what this finds
        annotations = self.resolve(self.ann_file)
        if not annotations.is_file():
            raise DatasetError(f"{self.name}: annotation file {annotations} not found")
        folder = self.resolve(self.img_dir)
        if not folder.is_dir():
            raise DatasetError(f"{self.name}: image folder {folder} not found")
        images = sorted(folder.glob(f"*{self.img_suffix}"))
        if not images:
            raise DatasetError(f"{self.name}: no *{self.img_suffix} images in {folder}")
        return [Sample(image.stem, image, annotations) for image in images]

    @functools.cached_property
    def painter(self):
        from pnpseg.evaluation.coco_instances import InstancePainter

        painter = InstancePainter(self.resolve(self.ann_file))
        if len(painter.classes) + 1 != self.num_classes:
            raise DatasetError(
                f"{self.name}: {painter.path} has {len(painter.classes)} categories, not {self.num_classes - 1}"
            )
        return painter

    def load_label(self, sample: Sample) -> np.ndarray:
        if not sample.id.isdigit():
            raise DatasetError(f"{self.name}: image {sample.image} is not named by its COCO image id")
        return self.painter.paint(int(sample.id))


_VOC = dict(img_dir="JPEGImages", ann_dir="SegmentationClass", split="ImageSets/Segmentation/val.txt")
_PC = dict(img_dir="JPEGImages", ann_dir="SegmentationClassContext", split="ImageSets/SegmentationContext/val.txt")


def _relabelled(name: str, table: np.ndarray, **layout) -> DatasetFactory:
    def factory(root: Path) -> Dataset:
        background = DATASET_CLASSES[name].background
        return RelabelledDataset(
            name, Path(root), classes=dataset_classes(name), has_background=background, table=table, **layout
        )

    return factory


def _coco_object(root: Path) -> Dataset:
    return CocoInstancesDataset(
        "coco-object-authors",
        Path(root),
        "images/val2017",
        "annotations",
        dataset_classes("coco-object-authors"),
        has_background=DATASET_CLASSES["coco-object-authors"].background,
        pnp_background="always",
    )


AUTHORS: dict[str, DatasetFactory] = {
    "voc21-authors": _relabelled("voc21-authors", label_table(21, boundary=0), **_VOC, pnp_background="always"),
    "pc60-authors": _relabelled("pc60-authors", label_table(60), **_PC, pnp_background="if-fewer-predicted:3"),
    "coco-object-authors": _coco_object,
    "coco-stuff-authors": _relabelled(
        "coco-stuff-authors",
        label_table(172, shift=1, boundary=0),
        img_dir="images/val2017",
        ann_dir="annotations/val2017",
        seg_suffix="_labelTrainIds.png",
        pnp_background="if-fewer-predicted:3",
    ),
    "ade20k-authors": _relabelled(
        "ade20k-authors",
        label_table(151),
        img_dir="images/validation",
        ann_dir="annotations/validation",
        pnp_background="if-fewer-predicted:3",
    ),
}


@hookimpl
def register_datasets(register) -> None:
    for name, factory in AUTHORS.items():
        register(name, factory)
