"""pnpseg: training-free open-vocabulary semantic segmentation from off-the-shelf VLMs.

Importing ``pnpseg`` is cheap: the names that need torch (adapters, parameters, the
segmenter, the searches, ...) are imported on first use (PEP 562), so ``pnpseg --help`` and
plugin registration stay fast.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from pnpseg.errors import AdapterError, ClassNameError, ImageError, ModelLoadError, PnpsegError, model_unavailable
from pnpseg.hookspecs import hookimpl, lazy

try:
    __version__ = version("pnpseg")  # single source: the package metadata (pyproject.toml)
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0.0.0"

#: Public names imported on first use, and the module each comes from.
_LAZY = {
    "BaseAdapter": "pnpseg.method.adapter",
    "TokenizedText": "pnpseg.method.adapter",
    "VLMAdapter": "pnpseg.method.adapter",
    "VLMOutput": "pnpseg.method.adapter",
    "zero_patches": "pnpseg.method.adapter",
    "SegmentParams": "pnpseg.method.params",
    "Segmenter": "pnpseg.method.segmenter",
    "SegmentationResult": "pnpseg.method.segmenter",
    "tune": "pnpseg.tuning.tune",
    "evaluate": "pnpseg.evaluation.evaluate",
}

if TYPE_CHECKING:
    from pnpseg.evaluation.evaluate import evaluate
    from pnpseg.method.adapter import BaseAdapter, TokenizedText, VLMAdapter, VLMOutput, zero_patches
    from pnpseg.method.params import SegmentParams
    from pnpseg.method.segmenter import SegmentationResult, Segmenter
    from pnpseg.tuning.tune import tune


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pnpseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


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
    "__version__",
    "evaluate",
    "hookimpl",
    "lazy",
    "model_unavailable",
    "tune",
    "zero_patches",
]
