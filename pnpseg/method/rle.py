"""COCO run-length encoding of a mask (pycocotools, extra ``[coco]``): arrays in, a JSON-ready
dict out. :meth:`~pnpseg.method.segmenter.Segmentation.to_coco_rle` and the ``--format coco``
writer (:mod:`pnpseg.io.formats.coco`) both encode through it."""

from __future__ import annotations

from typing import Any

import numpy as np

from pnpseg.errors import MissingDependencyError


def mask_api() -> Any:
    """``pycocotools.mask``, or a one-line install hint."""
    try:
        from pycocotools import mask
    except ImportError:
        raise MissingDependencyError("COCO RLE needs pycocotools: pip install 'pnpseg[coco]'") from None
    return mask


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """A boolean (H, W) mask → COCO compressed RLE ``{"size": [H, W], "counts": str}``."""
    rle = mask_api().encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
