"""pnpseg: training-free open-vocabulary semantic segmentation from off-the-shelf VLMs."""

import importlib
from importlib.metadata import PackageNotFoundError, version
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

try:
    __version__ = version("pnpseg")  # single source: the package metadata (pyproject.toml)
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "AdapterError",
    "BaseAdapter",
    "ClassNameError",
    "ImageError",
    "ModelLoadError",
    "PnpsegError",
    "SegmentParams",
    "SegmentationResult",
    "Segmenter",
    "TokenizedText",
    "VLMAdapter",
    "VLMOutput",
    "evaluate",
    "hookimpl",
    "model_unavailable",
    "tune",
    "zero_patches",
    "__version__",
]

#: Public names imported on first use, so that ``import pnpseg`` (and ``pnpseg --help``) stays
#: light: the segmenter and the searches pull in torch, PIL and the scorers.
_LAZY = {
    "Segmenter": "pnpseg.method.segmenter",
    "SegmentationResult": "pnpseg.method.segmenter",
    "tune": "pnpseg.tuning.tune",
    "evaluate": "pnpseg.evaluation.evaluate",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pnpseg' has no attribute {name!r}")
