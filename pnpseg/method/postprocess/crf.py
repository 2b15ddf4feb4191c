"""Dense CRF (Krähenbühl & Koltun 2011) with the CutLER settings of docs/method.md §4.5."""

from __future__ import annotations

import numpy as np
import torch

from pnpseg.method.params import SegmentParams

GAUSSIAN_SXY, GAUSSIAN_COMPAT = 3, 7
BILATERAL_SXY, BILATERAL_SRGB, BILATERAL_COMPAT = 50, 5, 10


class DenseCRF:
    """Unaries from the softmax over channels of the incoming scores; returns the marginals."""

    def __call__(self, scores: torch.Tensor, image: np.ndarray, params: SegmentParams) -> torch.Tensor:
        import pydensecrf.densecrf as dcrf  # compiled extension: imported only when used
        from pydensecrf.utils import unary_from_softmax

        channels, height, width = scores.shape
        if channels < 2:
            return scores
        probs = torch.softmax(scores.float(), dim=0).numpy()
        crf = dcrf.DenseCRF2D(width, height, channels)
        crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
        crf.addPairwiseGaussian(sxy=GAUSSIAN_SXY, compat=GAUSSIAN_COMPAT)
        crf.addPairwiseBilateral(
            sxy=BILATERAL_SXY,
            srgb=BILATERAL_SRGB,
            rgbim=np.array(image, dtype=np.uint8, order="C"),
            compat=BILATERAL_COMPAT,
        )
        marginals = np.asarray(crf.inference(params.crf_iterations), dtype=np.float32)
        return torch.from_numpy(marginals.reshape(channels, height, width))
