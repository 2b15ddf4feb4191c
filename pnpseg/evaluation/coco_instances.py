"""COCO instance annotations → a semantic label map, as the authors' COCO-Object ground truth.

Every annotation of the image is painted in the file's order with its class, crowd regions
included; a pixel keeps the first instance that covers it, and every pixel no instance
covers is background (0). Needs pycocotools (``pip install 'pnpseg[coco]'``).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np

from pnpseg.errors import MissingDependencyError
from pnpseg.evaluation.datasets import DatasetError


class InstancePainter:
    """One loaded ``instances_*.json``; class k + 1 is the k-th category by ascending id."""

    def __init__(self, annotations: Path):
        try:
            from pycocotools.coco import COCO
        except ImportError:
            raise MissingDependencyError(
                "COCO-Object from instance annotations needs pycocotools: pip install 'pnpseg[coco]'"
            ) from None
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
                self.coco = COCO(str(annotations))
        except (OSError, ValueError, KeyError) as error:
            raise DatasetError(f"cannot read COCO annotations {annotations}: {error}") from None
        self.path = Path(annotations)
        self.classes = {cat: k + 1 for k, cat in enumerate(sorted(self.coco.getCatIds()))}

    def paint(self, image_id: int) -> np.ndarray:
        """(H, W) int64 labels of one image: 0 = background, k + 1 = category k."""
        if image_id not in self.coco.imgs:
            raise DatasetError(f"image id {image_id} is not in {self.path}")
        info = self.coco.imgs[image_id]
        labels = np.zeros((info["height"], info["width"]), dtype=np.int64)
        for annotation in self.coco.loadAnns(self.coco.getAnnIds(imgIds=image_id, iscrowd=None)):
            with warnings.catch_warnings():  # pycocotools' decode predates numpy 2's copy keyword
                warnings.simplefilter("ignore", DeprecationWarning)
                mask = self.coco.annToMask(annotation)
            free = (mask > 0) & (labels == 0)
            labels[free] = self.classes[annotation["category_id"]]
        return labels
