"""What an evaluation returns (:class:`EvalResult`) and the files it writes into ``--out``
(through :class:`~pnpseg.evaluation.folder.EvalFolder`): ``results.json``, ``results.md``,
``per_class_iou.csv``, ``confusion.png`` and, on request, label PNGs of the predictions
(``predictions/``, re-scorable with ``--predictions``)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pnpseg.evaluation.datasets import Dataset
from pnpseg.evaluation.folder import EvalFolder
from pnpseg.evaluation.metrics import Scores, top_confusions
from pnpseg.io.outputs import encode_label_png, json_bytes


@dataclass
class EvalResult:
    """mIoU, per-class IoU (None: not evaluated), pixel accuracy, the confusion matrix
    (rows: ground truth; last column: "none") and how many images were scored or reused."""

    dataset: str
    protocol: str
    rule: str
    images: int
    miou: float
    aacc: float
    per_class: dict[str, float | None]
    confusion: np.ndarray
    seconds: float
    reused: int = 0
    out: Path | None = None

    @property
    def computed(self) -> int:
        """Images predicted in this run (the others were reused from the saved state)."""
        return self.images - self.reused

    def to_json(self) -> dict[str, Any]:
        """The ``eval --json`` summary: the headline numbers of ``results.json`` (percent)."""
        return {
            "dataset": self.dataset,
            "protocol": self.protocol,
            "averaging": self.rule,
            "images": self.images,
            "reused": self.reused,
            "mIoU": percent(self.miou),
            "aAcc": percent(self.aacc),
            "per_class_iou": {k: percent(v) for k, v in self.per_class.items()},
            "seconds": round(self.seconds, 3),
            "output": str(self.out) if self.out is not None else None,
        }


def percent(value: float | None) -> float | None:
    """A fraction as a percentage rounded for the reports; None for a missing value."""
    return None if value is None or math.isnan(value) else round(100 * value, 4)


def format_percent(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def prediction_classes(dataset: Dataset) -> dict[str, str]:
    """The ``classes.json`` of saved predictions: 0 background, i the i-th prompted class."""
    names = [c[0] for c in dataset.prompt_classes]
    return {"0": "background", **{str(i + 1): name for i, name in enumerate(names)}}


def prediction_png(dataset: Dataset, pred: np.ndarray) -> bytes:
    """A saved prediction's label PNG in ``pnpseg segment``'s convention (0 background, i class i)."""
    n = dataset.num_classes
    return encode_label_png(pred if dataset.has_background else np.where(pred == n, 0, pred + 1))


def write_reports(
    folder: EvalFolder, result: EvalResult, s: Scores, class_names: Sequence[str], settings: dict[str, Any]
) -> None:
    """results.json, results.md, per_class_iou.csv and confusion.png, each written atomically."""
    folder.write(
        "results.json",
        json_bytes(
            {
                "dataset": result.dataset,
                "protocol": result.protocol,
                "averaging": result.rule,
                "images": result.images,
                "mIoU": percent(result.miou),
                "aAcc": percent(result.aacc),
                "settings": settings,
                "per_class_iou": {k: percent(v) for k, v in result.per_class.items()},
            }
        ),
    )
    folder.write("results.md", markdown(result).encode("utf-8"))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["class", "iou", "evaluated", "intersection", "union", "gt_pixels", "pred_pixels"])
    for i, name in enumerate(class_names):
        iou = "" if math.isnan(s.iou[i]) else f"{100 * s.iou[i]:.4f}"
        writer.writerow(
            [name, iou, int(s.evaluated[i]), s.intersection[i], s.union[i], s.gt_pixels[i], s.pred_pixels[i]]
        )
    folder.write("per_class_iou.csv", buffer.getvalue().encode("utf-8"))
    png = io.BytesIO()
    render_confusion(result.confusion, class_names).save(png, format="PNG")
    folder.write("confusion.png", png.getvalue())


def markdown(result: EvalResult) -> str:
    lines = [
        f"# pnpseg eval: {result.dataset} ({result.protocol} protocol)",
        "",
        "| dataset | protocol | images | mIoU | aAcc |",
        "|---|---|---|---|---|",
        f"| {result.dataset} | {result.protocol} | {result.images} | {format_percent(result.miou)} | {format_percent(result.aacc)} |",
        "",
        "| class | IoU |",
        "|---|---|",
    ]
    lines += [f"| {name} | {format_percent(iou)} |" for name, iou in result.per_class.items()]
    return "\n".join(lines) + "\n"


def render_confusion(cm: np.ndarray, names: Sequence[str], pairs: int = 10) -> Image.Image:
    """Row-normalised confusion sub-matrix of the classes in the ``pairs`` most confused pairs."""
    top = top_confusions(cm, pairs)
    n = cm.shape[0]
    labels = list(names) + ["(none)"]
    involved: list[int] = []
    for g, p, _ in top:
        for k in (g, p):
            if k not in involved:
                involved.append(k)
    font = ImageFont.load_default()
    cell, pad = 28, 6
    if not involved:
        im = Image.new("RGB", (360, 40), "white")
        ImageDraw.Draw(im).text((pad, pad), "no confusions", fill="black", font=font)
        return im
    rows = [k for k in involved if k < n]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = int(max(probe.textbbox((0, 0), labels[k][:30], font=font)[2] for k in involved)) + 2 * pad
    legend = ["top confusions (ground truth -> predicted, % of its pixels):"]
    legend += [f"{labels[g]} -> {labels[p]}: {100 * rate:.1f}%" for g, p, rate in top]
    legend_w = int(max(probe.textbbox((0, 0), line, font=font)[2] for line in legend)) + 2 * pad
    width = max(text_w + cell * len(involved) + pad, legend_w)
    height = text_w + cell * len(rows) + pad + 16 * (len(top) + 2)
    im = Image.new("RGB", (width, max(height, 100)), "white")
    draw = ImageDraw.Draw(im)
    totals = cm.sum(1)
    for c, k in enumerate(involved):  # column labels, written vertically
        tag = Image.new("RGB", (text_w, cell), "white")
        ImageDraw.Draw(tag).text((pad, 8), labels[k][:30], fill="black", font=font)
        im.paste(tag.rotate(90, expand=True), (text_w + c * cell, 0))
    for r, g in enumerate(rows):
        y = text_w + r * cell
        draw.text((pad, y + 8), labels[g][:30], fill="black", font=font)
        for c, p in enumerate(involved):
            rate = cm[g, p] / totals[g] if totals[g] else 0.0
            shade = int(255 * (1 - rate))
            colour = (255, shade, shade) if g != p else (shade, 255, shade)
            x = text_w + c * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour, outline=(200, 200, 200))
            if rate >= 0.005:
                draw.text((x + 3, y + 8), f"{100 * rate:.0f}", fill="black", font=font)
    y = text_w + len(rows) * cell + 8
    for i, line in enumerate(legend):
        draw.text((pad, y + 16 * i), line, fill="black", font=font)
    return im
