"""Predictors: ``predictor(sample, label) -> (H, W) dataset-index labels`` for the evaluation
loop, either read from label PNGs on disk (:class:`PredictionFolder`) or made by a
Segmenter under a protocol (:class:`ModelPredictor`).

Besides ``__call__`` a predictor has ``settings()`` (what the saved state must match) and
``inputs(sample)``: the files its prediction for ``sample`` depends on, whose *content* keys
a resumed record (docs/evaluation.md, "Resuming").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pnpseg.errors import PnpsegError
from pnpseg.evaluation.datasets import Dataset, DatasetError, Sample, background_policy, parse_background_policy
from pnpseg.evaluation.protocols import PROTOCOLS, ClassMap, map_prediction_names
from pnpseg.io.images import load_image
from pnpseg.io.jsontext import parse_json


class Predictor(Protocol):
    def __call__(self, sample: Sample, label: np.ndarray) -> np.ndarray: ...

    def settings(self) -> dict[str, Any]: ...

    def inputs(self, sample: Sample) -> list[Path]: ...


def image_inputs(sample: Sample) -> list[Path]:
    """A model's prediction depends on the image (its settings are checked separately)."""
    return [sample.image]


class PredictionFolder:
    """Scores label PNGs already on disk: ``DIR/<sample id>.png``, or ``DIR/<image path relative
    to the image folder, suffix .png>`` as ``pnpseg segment IMG_DIR`` writes (see module doc)."""

    def __init__(self, folder: Path, dataset: Dataset):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DatasetError(f"predictions folder {self.folder} not found")
        self.table = table_path = self.folder / "classes.json"
        if table_path.exists():
            try:
                table = parse_json(table_path.read_text(encoding="utf-8-sig"))
            except (OSError, ValueError) as error:
                raise DatasetError(f"cannot read {table_path}: {error}") from None
            self.lut = map_prediction_names(table, dataset, table_path)
        else:
            cmap = ClassMap(dataset)
            self.lut = np.full(256, -1, dtype=np.int64)
            self.lut[: len(cmap.lut)] = cmap.lut
        self.dataset = dataset

    def settings(self) -> dict[str, Any]:
        return {"predictions": str(self.folder.resolve())}

    def path_for(self, sample: Sample) -> Path:
        """``DIR/<id>.png``, else ``DIR/<image path relative to the image folder>.png``."""
        path = self.folder / f"{sample.id}.png"
        if not path.is_file():  # `pnpseg segment IMG_DIR` keeps the image's full name
            try:
                relative = sample.image.relative_to(self.dataset.resolve(self.dataset.img_dir))
            except ValueError:
                relative = None
            if relative is not None and (self.folder / relative.with_suffix(".png")).is_file():
                path = self.folder / relative.with_suffix(".png")
            else:
                raise DatasetError(f"prediction {path} for {sample.image} not found")
        return path

    def inputs(self, sample: Sample) -> list[Path]:
        """The prediction PNG, and ``classes.json`` where it gives the values' meaning."""
        return [self.path_for(sample), *([self.table] if self.table.exists() else [])]

    def __call__(self, sample: Sample, label: np.ndarray) -> np.ndarray:
        path = self.path_for(sample)
        try:
            with Image.open(path) as im:
                if im.mode not in ("P", "L"):
                    raise DatasetError(f"prediction {path} has mode {im.mode}: expected an 8-bit label PNG")
                raw = np.array(im)
        except DatasetError:
            raise
        except Exception as error:  # noqa: BLE001
            raise DatasetError(f"cannot read prediction {path}: {error}") from None
        if raw.shape != label.shape:
            raise DatasetError(
                f"prediction {path} is {raw.shape[1]}x{raw.shape[0]} but label {sample.label} "
                f"is {label.shape[1]}x{label.shape[0]}"
            )
        pred = self.lut[raw]
        if (pred < 0).any():
            values = np.unique(raw[pred < 0])[:10].tolist()
            raise DatasetError(f"prediction {path} has value(s) {values} with no class (see classes.json)")
        return pred


def parse_slide(text: str) -> tuple[int, int]:
    """``--slide CROP:STRIDE`` (or ``CROPxSTRIDE``) → two positive integers."""
    parts = text.replace("x", ":").split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts) or min(int(p) for p in parts) < 1:
        raise PnpsegError(f"--slide must be CROP:STRIDE with positive integers, e.g. 336:224; got {text!r}")
    return int(parts[0]), int(parts[1])


class ModelPredictor:
    """Runs a Segmenter under one protocol and returns dataset-index label maps."""

    def __init__(
        self,
        segmenter,
        dataset: Dataset,
        protocol: str = "pnp",
        *,
        synonyms: bool | None = None,
        pnp_background: str | None = None,
        bg_threshold: float = 0.0,
        slide: tuple[int, int] | None = None,
        short_side: int | None = None,
    ):
        from pnpseg.method.segmenter import Segmenter

        if protocol not in PROTOCOLS:
            raise PnpsegError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        self.dataset, self.protocol = dataset, protocol
        self.cmap = ClassMap(dataset, synonyms=(protocol == "standard") if synonyms is None else synonyms)
        self.policy = background_policy(pnp_background or dataset.pnp_background)
        self.kind, self.fewer_than = parse_background_policy(self.policy)
        self.bg_threshold, self.slide, self.short_side = bg_threshold, slide, short_side
        if slide is not None and (slide[0] < 1 or slide[1] < 1):
            raise PnpsegError(f"--slide CROP:STRIDE needs positive numbers, got {slide}")
        segmenter.plan(self.cmap.flat)  # tokenizer-level checks before any image
        params = segmenter.params
        self.plain = Segmenter(segmenter.adapter, params, background=False)
        self.with_bg = Segmenter(segmenter.adapter, params, background=True)
        self.segmenter = segmenter

    def settings(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "synonyms": self.cmap.synonyms,
            "params": self.segmenter.params.to_dict(),
            "pnp_background": self.policy if self.protocol == "pnp" else None,
            "bg_threshold": self.bg_threshold if self.protocol == "standard" else None,
            "slide": list(self.slide) if self.slide else None,
            "short_side": self.short_side,
        }

    inputs = staticmethod(image_inputs)

    def __call__(self, sample: Sample, label: np.ndarray) -> np.ndarray:
        image = load_image(sample.image)
        self.dataset.check_size(sample, label, image.size)
        work = image
        if self.short_side:
            scale = self.short_side / min(image.size)
            work = image.resize(
                (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BILINEAR
            )
        labels = self._labels(work)
        if labels.shape != label.shape:
            labels = np.asarray(Image.fromarray(labels.astype(np.uint8)).resize(image.size, Image.Resampling.NEAREST))
        return self.cmap.lut[labels.astype(np.int64)]

    def _windows(self, image: Image.Image):
        if self.slide is None:
            yield (0, 0, image.height, image.width)
            return
        crop, stride = self.slide
        h, w = image.height, image.width
        rows = max(h - crop + stride - 1, 0) // stride + 1
        cols = max(w - crop + stride - 1, 0) // stride + 1
        for r in range(rows):
            for c in range(cols):
                y2, x2 = min(r * stride + crop, h), min(c * stride + crop, w)
                yield (max(y2 - crop, 0), max(x2 - crop, 0), y2, x2)

    def _labels(self, image: Image.Image) -> np.ndarray:
        """(H, W) labels at ``image`` size: 0 = background, i = prompted class i."""
        flat = self.cmap.flat
        if self.protocol == "pnp" and self.slide is None:
            saliency = self.plain.saliency([image], [flat])[0]
            if self.kind == "always":
                return self._pnp_labels(self.with_bg.finish(image, saliency, flat), True, image)
            result = self.plain.finish(image, saliency, flat)
            labels = self._pnp_labels(result, False, image)
            if self.kind == "if-fewer-predicted" and len(np.unique(labels)) < self.fewer_than:
                labels = self._pnp_labels(self.with_bg.finish(image, saliency, flat), True, image)
            return labels
        if self.protocol == "standard":
            return self._window_labels(image, self.dataset.has_background)
        if self.kind == "if-fewer-predicted":
            labels = self._window_labels(image, False)
            return labels if len(np.unique(labels)) >= self.fewer_than else self._window_labels(image, True)
        return self._window_labels(image, self.kind == "always")

    def _window_labels(self, image: Image.Image, background: bool) -> np.ndarray:
        """Per-pixel probabilities (scores normalised over channels), averaged over the windows."""
        flat = self.cmap.flat
        segmenter = self.with_bg if background else self.plain
        channels = len(self.cmap.groups) + background
        total = torch.zeros((channels, image.height, image.width))
        count = torch.zeros((1, image.height, image.width))
        for y1, x1, y2, x2 in self._windows(image):
            result = segmenter(image.crop((x1, y1, x2, y2)), flat)
            raw = result.scores.float().cpu()
            probs = raw / raw.sum(0, keepdim=True).clamp_min(1e-12)
            folded = self.cmap.fold(probs[1:] if background else probs)
            if background:
                folded = torch.cat([probs[:1], folded])
            if folded.shape[-2:] != (y2 - y1, x2 - x1):
                folded = F.interpolate(folded[None], size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False)[0]
            total[:, y1:y2, x1:x2] += folded
            count[:, y1:y2, x1:x2] += 1
        mean = total / count.clamp_min(1)
        labels = mean.argmax(0).numpy() + (0 if background else 1)
        if background and self.protocol == "standard" and self.bg_threshold > 0:
            top = mean[1:].max(0).values.numpy()
            labels[top < self.bg_threshold] = 0
        return labels

    def _pnp_labels(self, result, background: bool, image: Image.Image) -> np.ndarray:
        scores = result.scores.float().cpu()
        folded = self.cmap.fold(scores[1:] if background else scores)
        labels = torch.cat([scores[:1], folded]).argmax(0).numpy() if background else folded.argmax(0).numpy() + 1
        labels = labels.astype(np.uint8 if labels.max() < 256 else np.int32)
        if labels.shape != (image.height, image.width):
            labels = np.asarray(Image.fromarray(labels).resize(image.size, Image.Resampling.NEAREST))
        return labels
