"""Annotation-free hyper-parameter search with the CLIP reward (paper §3.4; docs/method.md §5).

Two stages, as in the paper:

1. ``(layer, head, threshold)`` on plain GradCAM masks (one round, no DropOut): the mask of
   class k is ``upsample(thresholded normalised map) > 0`` and the masked image keeps the
   image's pixels there and is black elsewhere.
2. ``blur_sigma`` with stage 1's best fixed, on blurred masks before the CRF: the class
   masks are the argmax of the blurred score channels (background channel included).

One VLM forward + gradient per image captures the attention and its gradient of *all*
layers and heads (:func:`pnpseg.method.gradcam.capture`); the per-class GradCAM maps of every
(layer, head) are kept in memory and on disk (one ``torch.save`` file per image, keyed by
adapter, model, image content, classes and input size), so trials cost postprocessing and
scorer calls only. Identical masks are scored once per image.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from pnpseg.errors import PnpsegError
from pnpseg.io.images import InputItem, load_image
from pnpseg.io.outputs import atomic_path
from pnpseg.io.overlay import font
from pnpseg.method.gradcam import capture, gradcam
from pnpseg.method.labels import labels_from_scores, scores_from_saliency
from pnpseg.method.postprocess.blur import GaussianBlur
from pnpseg.method.prompts import token_weights
from pnpseg.method.saliency import Batch
from pnpseg.method.segmenter import Segmenter
from pnpseg.sources.image_classes import ImageClasses
from pnpseg.tuning.reward import RewardSummary, image_margins, image_wins

#: Masked images are made (and scored) with the longest side at most this many pixels.
SCORE_SIDE = 448
#: Images per scorer call.
SCORER_BATCH = 32
CACHE_VERSION = 1
DEFAULT_THRESHOLDS = "0.05:0.5:0.1"
DEFAULT_BLUR_SCALES = "0.01:0.11:0.02"


# -- search spaces ----------------------------------------------------------------------
def parse_int_range(text: str, low: int, high: int, what: str) -> list[int]:
    """``"1-12"``, ``"3"``, ``"1,3,5-7"`` → sorted unique ints, each within [low, high]."""
    values: set[int] = set()
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not match:
            raise PnpsegError(f"{what} must look like 1-12 or 1,3,5-7; got {text!r}")
        a, b = int(match.group(1)), int(match.group(2) or match.group(1))
        if a > b:
            raise PnpsegError(f"{what} range {part!r} is empty")
        values.update(range(a, b + 1))
    if not values:
        raise PnpsegError(f"no {what} given")
    bad = sorted(v for v in values if not low <= v <= high)
    if bad:
        raise PnpsegError(f"{what} {bad} out of range: this model has {what} {low}..{high} (1-based)")
    return sorted(values)


def parse_float_range(text: str, what: str) -> list[float]:
    """``"0.05:0.5:0.1"`` (start:stop:step, stop excluded) → [0.05, 0.15, ..., 0.45];
    ``"0.1,0.2"`` or ``"0.15"`` → those values."""
    text = str(text).strip()
    if ":" in text:
        parts = text.split(":")
        try:
            start, stop, step = (float(p) for p in parts) if len(parts) == 3 else (None, None, None)
        except ValueError:
            start = None
        if start is None or step <= 0:
            raise PnpsegError(f"{what} must be start:stop:step with step > 0, got {text!r}")
        count = int(np.floor((stop - start) / step - 1e-9)) + 1
        values = [round(start + i * step, 10) for i in range(max(count, 0))]
    else:
        try:
            values = [float(p) for p in text.split(",") if p.strip()]
        except ValueError:
            raise PnpsegError(f"{what} must be start:stop:step or a comma list of numbers, got {text!r}") from None
    if not values:
        raise PnpsegError(f"{what} {text!r} holds no values")
    return sorted(set(values))


def sample_grid(grid: Sequence[tuple], trials: int, seed: int) -> list[tuple]:
    """``trials`` distinct grid points drawn with ``seed`` (the whole grid if it is smaller),
    returned in grid order."""
    if trials >= len(grid):
        return list(grid)
    chosen = sorted(random.Random(seed).sample(range(len(grid)), trials))
    return [grid[i] for i in chosen]


# -- labels file ------------------------------------------------------------------------
@dataclass
class LabelledImage:
    item: InputItem
    classes: list[str]


def read_labels(path: Path, items: Sequence[InputItem]) -> tuple[list[LabelledImage], list[InputItem]]:
    """Match a labels file (format: :mod:`pnpseg.sources.image_classes`) to the discovered inputs:
    ``(labelled images in input order, unlabelled inputs)``."""
    matched = ImageClasses(Path(path), "labels file").match(items)
    labelled = [LabelledImage(item, matched[item.path]) for item in items if item.path in matched]
    return labelled, [item for item in items if item.path not in matched]


# -- capture and cache ------------------------------------------------------------------
def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Captured:
    """One image, ready for scoring: per-(layer, head) class maps and the scoring image."""

    labelled: LabelledImage
    maps: torch.Tensor  # (L, H, K, grid_h, grid_w) float32, 0-based layer/head
    rgb: np.ndarray  # (h, w, 3) uint8 at scoring size
    black: torch.Tensor | None = None  # (K,) scorer logits of the black image
    from_cache: bool = False

    @property
    def classes(self) -> list[str]:
        return self.labelled.classes


def all_head_maps(segmenter: Segmenter, image: Image.Image, classes: Sequence[str]) -> torch.Tensor:
    """ONE forward + gradient → GradCAM class maps of every layer and head (L, H, K, gh, gw)."""
    adapter = segmenter.adapter
    plan = segmenter.plan(classes)
    batch = Batch.build([plan], [len(classes)])
    pixels = adapter.preprocess([image], segmenter.input_size)
    text = adapter.tokenize(batch.prompts)
    weights = token_weights(batch.chunks, text.input_ids.shape[1], len(classes)).to(pixels.device)
    attentions, gradients, (gh, gw) = capture(
        adapter, pixels[batch.image.to(pixels.device)], text, range(adapter.num_layers)
    )
    per_layer = []
    for attention, gradient in zip(attentions, gradients):
        cam = gradcam(attention, gradient).float()  # (S, heads, T, P)
        per_layer.append(torch.einsum("skt,shtp->hkp", weights.float(), cam))  # chunks summed
    maps = torch.stack(per_layer)  # (L, H, K, P)
    return maps.reshape(*maps.shape[:3], gh, gw).float().cpu()


def scoring_image(image: Image.Image) -> np.ndarray:
    scale = min(1.0, SCORE_SIDE / max(image.size))
    if scale < 1.0:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


# -- trials -----------------------------------------------------------------------------
@dataclass
class Trial:
    layer: int
    head: int
    threshold: float
    blur_sigma: float | None = None
    reward: RewardSummary = field(default_factory=RewardSummary)

    def key(self) -> tuple[int, float]:
        return (self.reward.total, self.reward.margin)

    def to_dict(self) -> dict[str, Any]:
        out = {"layer": self.layer, "head": self.head, "threshold": self.threshold}
        if self.blur_sigma is not None:
            out["blur_sigma"] = self.blur_sigma
        return {**out, **self.reward.to_dict()}


def best_trial(trials: Sequence[Trial]) -> Trial:
    """Highest total reward; ties → higher summed margin; then the earliest trial."""
    return max(enumerate(trials), key=lambda it: (*it[1].key(), -it[0]))[1]


MaskFn = Callable[[Captured, Sequence[Trial]], np.ndarray]
#: Trials whose masks are made at once (bounds memory: chunk × K × h × w floats).
TRIAL_CHUNK = 16


def gradcam_masks(image: Captured, trials: Sequence[Trial]) -> np.ndarray:
    """Stage 1: (N, K, h, w) bool, ``upsample(thresholded normalised map) > 0``, batched over trials."""
    layers = torch.tensor([t.layer - 1 for t in trials])
    heads = torch.tensor([t.head - 1 for t in trials])
    thresholds = torch.tensor([t.threshold for t in trials])[:, None, None, None]
    scores = scores_from_saliency(image.maps[layers, heads], image.rgb.shape[:2], thresholds, background=False)
    return (scores > 0).numpy()


def make_blur_masks(background: bool, compat: str) -> MaskFn:
    """Stage 2: (N, K, h, w) bool, the argmax of the blurred score channels (before the CRF)."""
    from pnpseg.method.params import SegmentParams

    blur = GaussianBlur()

    def masks(image: Captured, trials: Sequence[Trial]) -> np.ndarray:
        out = []
        for trial in trials:
            saliency = image.maps[trial.layer - 1, trial.head - 1]
            scores = scores_from_saliency(saliency, image.rgb.shape[:2], trial.threshold, background, compat)
            params = SegmentParams(layer=trial.layer, head=trial.head, blur_sigma=float(trial.blur_sigma or 0.0))
            labels = labels_from_scores(blur(scores, image.rgb, params), background).numpy()
            out.append(labels[None] == np.arange(1, len(image.classes) + 1)[:, None, None])
        return np.stack(out)

    return masks


class RewardEvaluator:
    """Scores trials on captured images; identical masks of one image are scored once."""

    def __init__(self, scorer: Callable[..., torch.Tensor], batch_size: int = SCORER_BATCH) -> None:
        self.scorer, self.batch_size = scorer, batch_size
        self.images_scored = 0

    def black_logits(self, image: Captured) -> torch.Tensor:
        if image.black is None:
            image.black = self._score([np.zeros_like(image.rgb)], image.classes)[0]
        return image.black

    def _score(self, images: list[np.ndarray], classes: list[str]) -> torch.Tensor:
        rows = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            logits = torch.as_tensor(self.scorer(chunk, classes)).detach().float().cpu()
            if logits.shape != (len(chunk), len(classes)):
                raise PnpsegError(
                    f"scorer returned logits of shape {tuple(logits.shape)}, expected {(len(chunk), len(classes))}"
                )
            rows.append(logits)
            self.images_scored += len(chunk)
        return torch.cat(rows) if rows else torch.zeros(0, len(classes))

    def evaluate(self, image: Captured, trials: Sequence[Trial], mask_fn: MaskFn) -> None:
        """Add this image's wins to every trial's reward."""
        black = self.black_logits(image)
        keys: list[list[bytes | None]] = []
        pending: dict[bytes, np.ndarray] = {}
        for start in range(0, len(trials), TRIAL_CHUNK):
            for masks in mask_fn(image, trials[start : start + TRIAL_CHUNK]):
                row = []
                for c, mask in enumerate(masks):
                    if not mask.any():
                        row.append(None)  # empty mask: the masked image IS the black image
                        continue
                    key = bytes([c % 256]) + hashlib.blake2b(np.packbits(mask).tobytes(), digest_size=16).digest()
                    pending.setdefault(key, mask)
                    row.append(key)
                keys.append(row)
        order = list(pending)
        masked = [image.rgb * pending[key][..., None].astype(np.uint8) for key in order]
        logits = dict(zip(order, self._score(masked, image.classes))) if order else {}
        matrices = torch.stack([torch.stack([black if key is None else logits[key] for key in row]) for row in keys])
        wins, margins = image_wins(matrices, black), image_margins(matrices, black)  # (N, K)
        for trial, win, margin in zip(trials, wins.tolist(), margins.tolist()):
            trial.reward.add(image.classes, win, margin)


# -- heat-map ---------------------------------------------------------------------------
_VIRIDIS = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]


def _colour(value: float) -> tuple[int, int, int]:
    value = min(max(value, 0.0), 1.0) * (len(_VIRIDIS) - 1)
    i = min(int(value), len(_VIRIDIS) - 2)
    t = value - i
    return tuple(round(a + (b - a) * t) for a, b in zip(_VIRIDIS[i], _VIRIDIS[i + 1]))


def heatmap_grid(trials: Sequence[Trial], num_layers: int, num_heads: int) -> np.ndarray:
    """Best total reward per (layer, head) over thresholds; NaN where nothing was tried."""
    grid = np.full((num_layers, num_heads), np.nan)
    for trial in trials:
        current = grid[trial.layer - 1, trial.head - 1]
        if np.isnan(current) or trial.reward.total > current:
            grid[trial.layer - 1, trial.head - 1] = trial.reward.total
    return grid


def save_heatmap(path: Path, grid: np.ndarray, best: tuple[int, int], title: str) -> None:
    """Layers as rows, heads as columns (like the paper's Table 6), values written in cells."""
    layers, heads = grid.shape
    cell, left, top, right, bottom = 44, 70, 56, 20, 40
    big, small = font(14), font(11)
    title_width = int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(title, font=big))
    width = max(left + heads * cell + right, title_width + 20)
    height = top + layers * cell + bottom
    im = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(im)
    finite = grid[np.isfinite(grid)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    draw.text((8, 8), title, fill="black", font=big)
    draw.text((left, top - 20), "head", fill="black", font=small)
    draw.text((6, top - 20), "layer", fill="black", font=small)
    for h in range(heads):
        draw.text((left + h * cell + cell // 2 - 6, top + layers * cell + 6), str(h + 1), fill="black", font=small)
    for l in range(layers):
        draw.text((left - 26, top + l * cell + cell // 2 - 7), str(l + 1), fill="black", font=small)
        for h in range(heads):
            x0, y0 = left + h * cell, top + l * cell
            value = grid[l, h]
            if np.isnan(value):
                fill, text, ink = (225, 225, 225), "-", (120, 120, 120)
            else:
                t = (value - low) / (high - low) if high > low else 1.0
                fill = _colour(t)
                text = f"{value:g}"
                ink = (0, 0, 0) if t > 0.55 else (255, 255, 255)
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=fill, outline="white")
            draw.text((x0 + 6, y0 + cell // 2 - 7), text, fill=ink, font=small)
    bl, bh = best
    x0, y0 = left + (bh - 1) * cell, top + (bl - 1) * cell
    draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], outline=(220, 20, 60), width=3)
    with atomic_path(Path(path)) as tmp:
        im.save(tmp, format="PNG")


# -- the tuner --------------------------------------------------------------------------
class Tuner:
    """Capture once per image (or from the cache), then score any number of trials."""

    def __init__(
        self,
        segmenter: Segmenter,
        adapter_name: str,
        model: str | None,
        scorer: Callable[..., torch.Tensor],
        cache_dir: Path | None,
    ) -> None:
        self.segmenter, self.adapter_name, self.model = segmenter, adapter_name, model
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.evaluator = RewardEvaluator(scorer)
        self.vlm_passes = 0
        self.cache_hits = 0
        self.images: list[Captured] = []

    def cache_key(self, labelled: LabelledImage) -> dict[str, Any]:
        return {
            "version": CACHE_VERSION,
            "adapter": self.adapter_name,
            "model": self.model,
            "image": _file_digest(labelled.item.path),
            "classes": list(labelled.classes),
            "size": list(self.segmenter.input_size),
        }

    def cache_path(self, labelled: LabelledImage, key: dict[str, Any]) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        stem = re.sub(r"[^\w.-]+", "_", labelled.item.relative.with_suffix("").as_posix())[:60]
        return self.cache_dir / f"{stem}-{digest}.pt"

    def capture(self, labelled: LabelledImage) -> Captured:
        image = load_image(labelled.item.path)
        captured = Captured(labelled, torch.empty(0), scoring_image(image))
        self.evaluator.black_logits(captured)  # the scorer accepts these classes? (before the pass)
        key = self.cache_key(labelled)
        path = self.cache_path(labelled, key)
        maps = None
        if path is not None and path.exists():
            try:
                stored = torch.load(path, map_location="cpu", weights_only=True)
                if stored.get("key") == json.loads(json.dumps(key)):
                    maps = stored["maps"].float()
            except Exception:  # a corrupt or foreign file: recompute
                maps = None
        hit = maps is not None
        if maps is None:
            maps = all_head_maps(self.segmenter, image, labelled.classes)
            self.vlm_passes += 1
            if path is not None:
                with atomic_path(path) as tmp:
                    torch.save({"key": key, "maps": maps}, tmp)
        self.cache_hits += hit
        captured.maps, captured.from_cache = maps, hit
        self.images.append(captured)
        return captured

    def run_trials(
        self, trials: Sequence[Trial], mask_fn: MaskFn, advance: Callable[[int], None] | None = None
    ) -> None:
        for image in self.images:
            self.evaluator.evaluate(image, trials, mask_fn)
            if advance is not None:
                advance(len(trials))


def stage1_grid(
    layers: Sequence[int], heads: Sequence[int], thresholds: Sequence[float]
) -> list[tuple[int, int, float]]:
    return list(itertools.product(layers, heads, thresholds))
