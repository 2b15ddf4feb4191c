"""pnpseg: training-free open-vocabulary semantic segmentation from off-the-shelf VLMs."""

from importlib.metadata import PackageNotFoundError, version

from pnpseg.errors import ClassNameError, ImageError, ModelLoadError, PnpsegError, model_unavailable
from pnpseg.hookspecs import hookimpl
from pnpseg.method.adapter import BaseAdapter, TokenizedText, VLMAdapter, VLMOutput, zero_patches
from pnpseg.method.params import SegmentParams
from pnpseg.method.segmenter import SegmentationResult, Segmenter

try:
    __version__ = version("pnpseg")  # single source: the package metadata (pyproject.toml)
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
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
    "hookimpl",
    "model_unavailable",
    "zero_patches",
    "__version__",
]
