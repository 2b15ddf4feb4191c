"""pnpseg: training-free open-vocabulary semantic segmentation from off-the-shelf VLMs.

Importing ``pnpseg`` is cheap: the names that need torch (adapters, parameters, ...) are
imported on first use (PEP 562), so ``pnpseg --help`` and plugin registration stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pnpseg.errors import ClassNameError, ImageError, ModelLoadError, PnpsegError, model_unavailable
from pnpseg.hookspecs import hookimpl, lazy

_LAZY = {
    "BaseAdapter": "pnpseg.method.adapter",
    "TokenizedText": "pnpseg.method.adapter",
    "VLMAdapter": "pnpseg.method.adapter",
    "VLMOutput": "pnpseg.method.adapter",
    "zero_patches": "pnpseg.method.adapter",
    "SegmentParams": "pnpseg.method.params",
}

if TYPE_CHECKING:
    from pnpseg.method.adapter import BaseAdapter, TokenizedText, VLMAdapter, VLMOutput, zero_patches
    from pnpseg.method.params import SegmentParams


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pnpseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


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
    "lazy",
    "model_unavailable",
    "zero_patches",
]
