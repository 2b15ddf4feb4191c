"""Gaussian blur of each score channel (docs/method.md §4.4; Table 5: it matters more than the CRF)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from pnpseg.method.labels import minmax
from pnpseg.method.params import SegmentParams


class GaussianBlur:
    """Blur every channel with σ = ``blur_sigma`` · max(H, W), then min-max normalise it.

    Under ``compat="authors"`` a constant channel (an empty background channel) becomes NaN
    as in the released code, and the argmax then labels the whole image background.
    """

    def __call__(self, scores: torch.Tensor, image: np.ndarray, params: SegmentParams) -> torch.Tensor:
        sigma = params.blur_sigma * max(scores.shape[-2:])
        if sigma <= 0:
            return scores
        blurred = gaussian_filter(scores.numpy().astype(np.float32), sigma=(0, sigma, sigma), mode="reflect")
        return minmax(torch.from_numpy(blurred), guard=params.compat != "authors")
