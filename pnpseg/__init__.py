"""pnpseg: training-free open-vocabulary semantic segmentation from off-the-shelf VLMs."""

from .adapter import BaseAdapter, TokenizedText, VLMAdapter, VLMOutput, zero_patches
from .errors import ClassNameError, ImageError, ModelLoadError, PnpsegError, model_unavailable
from .hookspecs import hookimpl
from .params import SegmentParams

__all__ = [
    "BaseAdapter",
    "ClassNameError",
    "ImageError",
    "ModelLoadError",
    "PnpsegError",
    "SegmentParams",
    "TokenizedText",
    "VLMAdapter",
    "VLMOutput",
    "hookimpl",
    "model_unavailable",
    "zero_patches",
]
