"""The method's two arithmetics as strategy objects: the paper's (:data:`PAPER`) and the
authors' released code's (:data:`AUTHORS`), chosen by ``SegmentParams.compat`` (docs/method.md §6).

Every step whose arithmetic differs between the two asks :func:`arithmetic` for the object
and calls it: the token weights of a class (§1), the sum over DropOut rounds and the score
that ranks patches to drop (§3), top-N dropping, the thresholded scores (§4.1–4.2) and the
normalisation after the blur (§4.4). The rest of the pipeline is the same in both modes.
"""

from __future__ import annotations

import torch

from pnpseg.method.dropout import drop_topk, drop_topk_authors
from pnpseg.method.gradcam import class_maps
from pnpseg.method.labels import minmax, resize


class Paper:
    """The paper's arithmetic, as its text describes it (the default)."""

    name = "paper"

    def token_weight(self, tokens: int, last_in_prompt: bool) -> float:
        """The weight of each of a class's ``tokens`` in its map: their mean."""
        return 1.0 / tokens

    def first_total(self, maps: torch.Tensor) -> torch.Tensor:
        """What the sum over rounds starts from, given round 1's maps: nothing."""
        return torch.zeros_like(maps)

    def drop_score(
        self, maps: torch.Tensor, cam: torch.Tensor, pieces: torch.Tensor, image: torch.Tensor, num_images: int
    ) -> torch.Tensor:
        """(B, P) score that ranks patches to drop: the sum of the per-class maps (N, K, P)."""
        return maps.sum(1)

    def drop_topk(self, saliency: torch.Tensor, dropped: torch.Tensor, k: int) -> torch.Tensor:
        """``topk:N``: the N remaining patches with the highest positive score."""
        return drop_topk(saliency, dropped, k)

    def kept_scores(
        self, saliency: torch.Tensor, threshold: float | torch.Tensor, size: tuple[int, int]
    ) -> torch.Tensor:
        """Normalise, zero below ``threshold``, upsample bilinearly to ``size``, re-normalise."""
        normalised = minmax(saliency.float())
        return minmax(resize(normalised * (normalised >= threshold), size))

    def normalise_blurred(self, channels: torch.Tensor) -> torch.Tensor:
        """Min-max normalise each blurred channel; a constant channel becomes 0."""
        return minmax(channels)


class Authors(Paper):
    """The released code's arithmetic (``PnP_OVSS_0514_updated_segmentation.py``)."""

    name = "authors"

    def token_weight(self, tokens: int, last_in_prompt: bool) -> float:
        """The last class of a prompt sums its word pieces (nothing follows it to divide)."""
        return 1.0 if last_in_prompt else 1.0 / tokens

    def first_total(self, maps: torch.Tensor) -> torch.Tensor:
        """Round 1 counts twice: the sum starts from its maps."""
        return maps.clone()

    def drop_score(
        self, maps: torch.Tensor, cam: torch.Tensor, pieces: torch.Tensor, image: torch.Tensor, num_images: int
    ) -> torch.Tensor:
        """Every class-token row of the GradCAM tensor summed (:func:`piece_sums`)."""
        return piece_sums(cam, pieces, image, num_images)

    def drop_topk(self, saliency: torch.Tensor, dropped: torch.Tensor, k: int) -> torch.Tensor:
        """Top-N that fills its slots with zero-score patches (:func:`~pnpseg.method.dropout.drop_topk_authors`)."""
        return drop_topk_authors(saliency, dropped, k)

    def kept_scores(
        self, saliency: torch.Tensor, threshold: float | torch.Tensor, size: tuple[int, int]
    ) -> torch.Tensor:
        """The raw values that pass the threshold, ``align_corners=True``, no re-normalisation
        (the blur step normalises later)."""
        kept = saliency.float() * (minmax(saliency.float()) >= threshold)
        return resize(kept, size, align_corners=True)

    def normalise_blurred(self, channels: torch.Tensor) -> torch.Tensor:
        """Divide with no guard: a constant channel becomes 0/0 = NaN."""
        return minmax(channels, guard=False)


PAPER = Paper()
AUTHORS = Authors()
MODES: dict[str, Paper] = {"paper": PAPER, "authors": AUTHORS}


def arithmetic(compat: str) -> Paper:
    """The strategy object of a ``compat`` mode (``"paper"`` or ``"authors"``)."""
    return MODES[compat]


def piece_sums(cam: torch.Tensor, pieces: torch.Tensor, image: torch.Tensor, num_images: int) -> torch.Tensor:
    """(S, T, P) GradCAM → (B, P): the sum of every class-token row per image.

    The released code ranks patches by this sum, so a name of n word pieces counts n times
    (docs/method.md §6); ``pieces`` (S, K, T) is 1 on each class's tokens.
    """
    per_sample = class_maps(cam, pieces).float().sum(1)
    score = torch.zeros(num_images, cam.shape[-1], dtype=per_sample.dtype, device=cam.device)
    return score.index_add_(0, image, per_sample)
