"""The two stages' trials: masks of a trial on a captured image, and their CLIP reward.

1. ``(layer, head, threshold)`` on plain GradCAM masks (one round, no DropOut): the mask of
   class k is ``upsample(thresholded normalised map) > 0`` and the masked image keeps the
   image's pixels there and is black elsewhere (:func:`gradcam_masks`).
2. ``blur_sigma`` with stage 1's best fixed, on blurred masks before the CRF: the class
   masks are the argmax of the blurred score channels, background channel included
   (:func:`make_blur_masks`).

Identical masks of one image are scored once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pnpseg.errors import PnpsegError
from pnpseg.method.labels import labels_from_scores, scores_from_saliency
from pnpseg.method.params import SegmentParams
from pnpseg.method.postprocess.blur import GaussianBlur
from pnpseg.tuning.capture import Captured
from pnpseg.tuning.reward import RewardSummary, image_margins, image_wins

#: Images per scorer call.
SCORER_BATCH = 32


@dataclass
class Trial:
    """One point of the search (1-based layer and head) and its reward over the images."""

    layer: int
    head: int
    threshold: float
    blur_sigma: float | None = None
    reward: RewardSummary = field(default_factory=RewardSummary)

    def key(self) -> tuple[int, float]:
        """What the search maximises: the total reward, then the summed margin."""
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


def make_blur_masks(base: SegmentParams) -> MaskFn:
    """Stage 2: (N, K, h, w) bool, the argmax of the blurred score channels (before the CRF),
    with ``base``'s background rule and arithmetic (``compat``)."""
    blur = GaussianBlur()
    compat = base.compat

    def masks(image: Captured, trials: Sequence[Trial]) -> np.ndarray:
        out = []
        background = base.background_for(len(image.classes))
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
                row: list[bytes | None] = []
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


def run_trials(
    evaluator: RewardEvaluator,
    images: Sequence[Captured],
    trials: Sequence[Trial],
    mask_fn: MaskFn,
    advance: Callable[[int], None] | None = None,
) -> None:
    """Score every trial on every image; ``advance(n)`` after each image (n = trials)."""
    for image in images:
        evaluator.evaluate(image, trials, mask_fn)
        if advance is not None:
            advance(len(trials))
