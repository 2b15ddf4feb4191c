"""pnpseg: training-free open-vocabulary semantic segmentation from off-the-shelf VLMs."""

import importlib
from typing import Any

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
    "evaluate",
    "hookimpl",
    "model_unavailable",
    "tune",
    "zero_patches",
]

#: Public names imported on first use: the searches pull in torch and the scorers.
_LAZY = {"tune": "pnpseg.tuning.tune", "evaluate": "pnpseg.evaluation.evaluate"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pnpseg' has no attribute {name!r}")
