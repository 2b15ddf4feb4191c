"""Step 4: saliency maps → per-channel scores at image size → label map (docs/method.md §4.1–4.3).

Pure tensor functions. Channel layout of the scores: with a background channel it is
channel 0 and class k is channel k+1, so ``argmax`` is directly the label value; without it
class k is channel k and labels are ``argmax + 1``. Either way label 0 means background.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def minmax(maps: torch.Tensor, guard: bool = True) -> torch.Tensor:
    """Min-max normalise each (H, W) map of (..., H, W) to [0, 1]; constant maps become 0.

    ``guard=False`` divides as the released code does, so a constant map becomes 0/0 = NaN
    (docs/method.md §6).
    """
    flat = maps.flatten(-2)
    low = flat.amin(-1, keepdim=True)
    span = flat.amax(-1, keepdim=True) - low
    return ((flat - low) / (span.clamp_min(1e-12) if guard else span)).view_as(maps)


def resize(maps: torch.Tensor, size: tuple[int, int], align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of every (h, w) map of (..., h, w) to ``size``."""
    lead = maps.shape[:-2]
    out = F.interpolate(maps.reshape(1, -1, *maps.shape[-2:]), size=size, mode="bilinear", align_corners=align_corners)
    return out.reshape(*lead, *size)


def scores_from_saliency(
    saliency: torch.Tensor,
    size: tuple[int, int],
    threshold: float | torch.Tensor,
    background: bool,
    compat: str = "paper",
) -> torch.Tensor:
    """(K, gh, gw) saliency → (C, H, W) scores in [0, 1], C = K (+1 with background).

    The kept scores are the ``compat`` mode's (:meth:`~pnpseg.method.compat.Paper.kept_scores`:
    ``paper`` normalises, zeroes below ``threshold``, upsamples and re-normalises; ``authors``
    keeps the raw values, as the released code does). Leading batch dimensions (..., K, gh, gw)
    are allowed, with ``threshold`` a tensor broadcasting against them (``pnpseg tune`` scores
    many thresholds at once).
    """
    from pnpseg.method.compat import arithmetic  # compat builds on this module's minmax and resize

    scores = arithmetic(compat).kept_scores(saliency, threshold, size)
    if background:
        empty = (scores <= 0).all(-3, keepdim=True).to(scores.dtype)
        scores = torch.cat([empty, scores], dim=-3)
    return scores


def labels_from_scores(scores: torch.Tensor, background: bool) -> torch.Tensor:
    """(C, H, W) → (H, W) int labels, 0 = background, k+1 = class k."""
    index = scores.argmax(0)
    return index if background else index + 1
