"""pnpseg: training-free open-vocabulary semantic segmentation from off-the-shelf VLMs."""

from pnpseg.errors import (
    AdapterError,
    ClassNameError,
    ImageError,
    ModelLoadError,
    PnpsegError,
    model_unavailable,
)
from pnpseg.hookspecs import hookimpl
from pnpseg.method.adapter import BaseAdapter, TokenizedText, VLMAdapter, VLMOutput, zero_patches
from pnpseg.method.params import SegmentParams

__all__ = [
    "AdapterError",
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
