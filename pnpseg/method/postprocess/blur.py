"""Gaussian blur of each score channel (docs/method.md §4.4; Table 5: it matters more than the CRF)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from pnpseg.method.compat import arithmetic
from pnpseg.method.params import SegmentParams


class GaussianBlur:
    """Blur every channel with σ = ``blur_sigma`` · max(H, W), then min-max normalise it.

    Channels are blurred independently, ``threads`` at a time (scipy releases the GIL, and
    each channel's result is the same whichever thread computes it, so the output is
    bit-identical for any value). ``None`` uses torch's thread count: the CPU budget the
    rest of the pipeline runs under, in worker processes too.

    The normalisation is the ``compat`` mode's (:meth:`~pnpseg.method.compat.Paper.normalise_blurred`):
    under ``"authors"`` a constant channel (an empty background channel) becomes NaN as in
    the released code, and the argmax then labels the whole image background.
    """

    #: Not a ``--postprocess`` option (it cannot change the output); set on an instance.
    threads: int | None = None

    def __call__(self, scores: torch.Tensor, image: np.ndarray, params: SegmentParams) -> torch.Tensor:
        sigma = params.blur_sigma * max(scores.shape[-2:])
        if sigma <= 0:
            return scores
        channels = scores.numpy().astype(np.float32)
        blurred = np.empty_like(channels)

        def blur(c: int) -> None:
            gaussian_filter(channels[c], sigma=sigma, mode="reflect", output=blurred[c])

        threads = min(self.threads or torch.get_num_threads(), len(channels))
        if threads > 1:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(blur, range(len(channels))))
        else:
            for c in range(len(channels)):
                blur(c)
        return arithmetic(params.compat).normalise_blurred(torch.from_numpy(blurred))
