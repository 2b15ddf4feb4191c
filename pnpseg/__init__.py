"""pnpseg: training-free open-vocabulary semantic segmentation from off-the-shelf VLMs.

Importing ``pnpseg`` is cheap: the names that need torch (adapters, parameters, the
segmenter, the searches, ...) are imported on first use (PEP 562), so ``pnpseg --help`` and
plugin registration stay fast.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from pnpseg.errors import (
    AdapterError,
    ClassNameError,
    EnvironmentProblem,
    ImageError,
    MissingDependencyError,
    ModelLoadError,
    PluginDefectError,
    PnpsegError,
    first_line,
    model_unavailable,
)
from pnpseg.hookspecs import Register, RegisterModelType, hookimpl, lazy

try:
    __version__ = version("pnpseg")  # single source: the package metadata (pyproject.toml)
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0.0.0"

#: Public names imported on first use, and the module each comes from. Plugins use these
#: and :mod:`pnpseg.testing`, nothing deeper (tests/test_plugin_api.py; docs/plugins.md
#: "The plugin API").
_LAZY = {
    "build_prompt": "pnpseg.method.prompts",
    "profile_stage": "pnpseg.method.profiling:stage",
    "hub_reachable": "pnpseg.io.hub:reachable",
    "hub_quiet": "pnpseg.io.hub:quiet",
    "AsJson": "pnpseg.cli.options",
    "console": "pnpseg.cli.app",
    "json_summary": "pnpseg.cli.app",
    "error_line": "pnpseg.cli.app",
    "warning_line": "pnpseg.cli.app",
    "BaseAdapter": "pnpseg.method.adapter",
    "TokenizedText": "pnpseg.method.adapter",
    "VLMAdapter": "pnpseg.method.adapter",
    "VLMOutput": "pnpseg.method.adapter",
    "zero_patches": "pnpseg.method.adapter",
    "check_forward_args": "pnpseg.method.validation",
    "load_state_dict": "pnpseg.io.checkpoint",
    "SegmentParams": "pnpseg.method.params",
    "Segmenter": "pnpseg.method.segmenter",
    "SegmentationResult": "pnpseg.method.segmenter",
    "tune": "pnpseg.tuning.tune",
    "evaluate": "pnpseg.evaluation.evaluate",
}

if TYPE_CHECKING:
    from pnpseg.cli.app import console, error_line, json_summary, warning_line
    from pnpseg.cli.options import AsJson
    from pnpseg.evaluation.evaluate import evaluate
    from pnpseg.io.checkpoint import load_state_dict
    from pnpseg.io.hub import quiet as hub_quiet
    from pnpseg.io.hub import reachable as hub_reachable
    from pnpseg.method.adapter import BaseAdapter, TokenizedText, VLMAdapter, VLMOutput, zero_patches
    from pnpseg.method.params import SegmentParams
    from pnpseg.method.profiling import stage as profile_stage
    from pnpseg.method.prompts import build_prompt
    from pnpseg.method.segmenter import SegmentationResult, Segmenter
    from pnpseg.method.validation import check_forward_args
    from pnpseg.tuning.tune import tune


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, _, attribute = _LAZY[name].partition(":")
        value = getattr(importlib.import_module(module), attribute or name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pnpseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "AdapterError",
    "AsJson",
    "BaseAdapter",
    "ClassNameError",
    "EnvironmentProblem",
    "ImageError",
    "MissingDependencyError",
    "ModelLoadError",
    "PluginDefectError",
    "PnpsegError",
    "Register",
    "RegisterModelType",
    "SegmentParams",
    "SegmentationResult",
    "Segmenter",
    "TokenizedText",
    "VLMAdapter",
    "VLMOutput",
    "__version__",
    "build_prompt",
    "check_forward_args",
    "console",
    "error_line",
    "evaluate",
    "first_line",
    "hookimpl",
    "hub_quiet",
    "hub_reachable",
    "json_summary",
    "lazy",
    "load_state_dict",
    "model_unavailable",
    "profile_stage",
    "tune",
    "warning_line",
    "zero_patches",
]
