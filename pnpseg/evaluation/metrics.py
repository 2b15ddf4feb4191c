"""Segmentation metrics from an accumulated confusion matrix (pure numpy).

The matrix has ``N`` rows (ground-truth classes 0..N-1) and ``N + 1`` columns: the last
column counts pixels predicted as "none" — background or unlabelled where the dataset has no
background class (e.g. VOC20 with the pnp protocol's background channel). Such pixels are
wrong for their ground-truth class but are no class's false positive. Ground-truth pixels
equal to ``ignore_index`` (255) are not counted at all.

Averaging rules:

* ``"present"`` (pnp protocol, the paper's code): mean IoU over the classes that occur in
  the ground truth of the evaluated images.
* ``"union"`` (standard protocol, MMSegmentation's ``nanmean``): mean IoU over the classes
  with a non-empty union of prediction and ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE = 255
RULES = ("present", "union")


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int = IGNORE) -> np.ndarray:
    """(N, N + 1) int64 counts ``cm[g, p]`` over pixels whose ground truth is not ignored.

    ``pred`` values must lie in ``0..N`` (``N`` = none); ``gt`` in ``0..N-1`` or ``ignore_index``.
    """
    gt = np.asarray(gt).astype(np.int64).ravel()
    pred = np.asarray(pred).astype(np.int64).ravel()
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth has {gt.size} pixels but prediction {pred.size}")
    keep = gt != ignore_index
    gt, pred = gt[keep], pred[keep]
    if gt.size and (gt.min() < 0 or gt.max() >= num_classes):
        raise ValueError(f"ground-truth values outside 0..{num_classes - 1} (and {ignore_index})")
    if pred.size and (pred.min() < 0 or pred.max() > num_classes):
        raise ValueError(f"predicted values outside 0..{num_classes}")
    counts = np.bincount(gt * (num_classes + 1) + pred, minlength=num_classes * (num_classes + 1))
    return counts.reshape(num_classes, num_classes + 1)


@dataclass
class Scores:
    miou: float  # in [0, 1]; nan when no class is evaluated
    aacc: float  # pixel accuracy over non-ignored pixels
    iou: np.ndarray  # (N,) per-class IoU, nan where the union is empty
    evaluated: np.ndarray  # (N,) bool: classes entering the mean
    intersection: np.ndarray
    union: np.ndarray
    gt_pixels: np.ndarray
    pred_pixels: np.ndarray


def scores(cm: np.ndarray, rule: str = "union") -> Scores:
    """Per-class IoU, mean IoU under ``rule`` and pixel accuracy from a confusion matrix."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    cm = np.asarray(cm, dtype=np.int64)
    n = cm.shape[0]
    intersection = np.diag(cm[:, :n]).astype(np.int64)
    gt_pixels = cm.sum(1)
    pred_pixels = cm[:, :n].sum(0)
    union = gt_pixels + pred_pixels - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, intersection / np.maximum(union, 1), np.nan)
    evaluated = gt_pixels > 0 if rule == "present" else union > 0
    miou = float(np.mean(iou[evaluated])) if evaluated.any() else float("nan")
    total = cm.sum()
    aacc = float(intersection.sum() / total) if total else float("nan")
    return Scores(miou, aacc, iou, evaluated, intersection, union, gt_pixels, pred_pixels)


def top_confusions(cm: np.ndarray, count: int = 10) -> list[tuple[int, int, float]]:
    """The ``count`` largest off-diagonal entries as (gt class, predicted class, fraction of the
    gt class's pixels); the predicted class may be ``N`` (none)."""
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(1, keepdims=True)
    rate = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = cm.shape[0]
    rate[np.arange(n), np.arange(n)] = 0
    order = np.argsort(rate, axis=None)[::-1][:count]
    pairs = []
    for flat in order:
        g, p = divmod(int(flat), cm.shape[1])
        if rate[g, p] <= 0:
            break
        pairs.append((g, p, float(rate[g, p])))
    return pairs
