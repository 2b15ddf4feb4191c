"""Morphological clean-up: connected regions of the winning label smaller than a fraction of
the image lose that label, and the next-best channel takes over there.

PnP-OVSS maps are coarse (one value per patch) and the CRF can leave specks of a label far
from where the class really is; removing islands below ``min_area`` of the image is a cheap,
common fix.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage


class RemoveIslands:
    """A postprocessor: ``(scores (C, H, W), image (H, W, 3) uint8, params) -> scores``."""

    def __init__(self, min_area: float = 0.005, max_passes: int = 3):
        """``min_area``: a whole number is a pixel count (``islands:min_area=64``), a number
        below 1 a fraction of the image's pixels (as scikit-learn's ``min_samples_leaf``)."""
        pixel_count = min_area >= 1 and float(min_area).is_integer()
        if isinstance(min_area, bool) or not (pixel_count or 0 <= min_area < 1):
            raise ValueError(f"min_area must be a pixel count ≥ 1 or a fraction in [0, 1), got {min_area}")
        if max_passes < 1:
            raise ValueError(f"max_passes must be ≥ 1, got {max_passes}")
        self.min_area = min_area
        self.max_passes = max_passes  # a removed island may leave a smaller one behind

    def __call__(self, scores: torch.Tensor, image: np.ndarray, params) -> torch.Tensor:
        scores = scores.clone()
        lowest = float(scores.min()) - 1.0  # below every real score, and safe for later steps
        pixels = scores.shape[1] * scores.shape[2]
        limit = self.min_area if self.min_area >= 1 else self.min_area * pixels
        for _ in range(self.max_passes):
            winner = scores.argmax(0).numpy()
            changed = False
            for channel in np.unique(winner):
                regions, count = ndimage.label(winner == channel)
                sizes = np.bincount(regions.ravel(), minlength=count + 1)
                small = np.flatnonzero(sizes[1:] < limit) + 1
                if small.size and small.size < count:  # never remove every region of a label
                    scores[channel][torch.from_numpy(np.isin(regions, small))] = lowest
                    changed = True
            if not changed:
                break
        return scores
