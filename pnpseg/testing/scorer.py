"""A weight-free stand-in for CLIP: scores images against the colour words of COLOURS.

``f(X, c) = LOGIT_SCALE · mean over pixels of exp(−‖x − rgb_c‖² / TAU)`` (colours in [0, 1]),
so an image scores high for a colour in proportion to the area of that colour, and the
all-black image scores ≈ 0 for every colour word (black is no class). That is what the
reward needs from CLIP: a mask that isolates the "red" region makes the masked image much
more "red" than any other present class, and more than the black image is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from pnpseg.errors import ClassNameError
from pnpseg.method.resize import fit_longest_side
from pnpseg.testing.images import COLOURS
from pnpseg.tuning.scorers import ImageInput, to_pil

LOGIT_SCALE = 100.0
TAU = 0.1
#: Images are scored at most this many pixels on a side (area fractions barely change).
SIDE = 64


class SyntheticScorer:
    """Colour-area similarity logits (N_images, N_classes) for the colour class names."""

    name = "synthetic"

    def __init__(self, model: str | None = None, device: str | torch.device = "cpu") -> None:
        # ``model`` is accepted (and ignored) so every scorer factory has one signature.
        self.device = torch.device("cpu")
        self.calls = 0
        self.images_scored = 0

    def __call__(self, images: Sequence[ImageInput], class_names: Sequence[str]) -> torch.Tensor:
        unknown = [name for name in class_names if name.lower() not in COLOURS]
        if unknown:
            raise ClassNameError(
                f"the synthetic scorer knows only the colour words {', '.join(COLOURS)}; got {', '.join(unknown)}"
            )
        self.calls += 1
        self.images_scored += len(images)
        protos = np.array([COLOURS[name.lower()] for name in class_names], dtype=np.float32) / 255.0
        rows = []
        for image in images:  # numpy only: no per-image torch ops (cheap under CPU contention)
            pil = fit_longest_side(to_pil(image), SIDE, Image.Resampling.BOX)
            pixels = np.asarray(pil, dtype=np.float32).reshape(-1, 3) / 255.0  # (P, 3)
            d2 = ((pixels[:, None, :] - protos[None]) ** 2).sum(-1)  # (P, K)
            rows.append(np.exp(-d2 / TAU).mean(0))
        if not rows:
            return torch.zeros(0, len(class_names))
        return torch.from_numpy(LOGIT_SCALE * np.stack(rows))
