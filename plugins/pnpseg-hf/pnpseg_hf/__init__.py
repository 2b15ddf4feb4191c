"""Building blocks for pnpseg adapters around Hugging Face ``transformers`` models.

This package registers no adapter (it has no ``pnpseg`` entry point): it is a toolkit for
adapter authors, first-party (``pnpseg-blip``, ``pnpseg-bridgetower``, ``pnpseg-vilt``,
``pnpseg-flava``) or not.

* :mod:`pnpseg_hf.loading` — hub id / local folder resolution, ``from_pretrained`` calls
  whose failures become one-line :class:`pnpseg.ModelLoadError`, a quiet progress bar.
* :mod:`pnpseg_hf.fused` — SDPA attention for every module whose probabilities are not
  captured; :func:`eager` runs chosen modules (or a whole model) eager for a block.
* :mod:`pnpseg_hf.capture` — forward hooks that record a module output during a forward,
  and a pre-hook that starts the autograd graph at a module.
* :mod:`pnpseg_hf.base` — :class:`HFAdapter`, the contract a family fills in: class
  attributes that describe the checkpoint, ``read_*`` size hooks, and ``forward``
  (docs/adapters.md); lazy weights, resize + normalise, batch broadcasting, layer /
  prompt-length checks.
* :mod:`pnpseg_hf.testing` — tiny checkpoints for adapter tests (vocabularies,
  save-to-folder, headless variants, the offline error); imported on demand.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import fused
from .base import (
    HFAdapter,
    broadcast_batch,
    capped_by_tokenizer,
    drop_image_cls,
    pil_resample,
    side,
    text_config,
    vision_config,
)
from .capture import capture_outputs, grad_leaf, start_graph_at
from .fused import eager
from .loading import first_line, load_pretrained, looks_like_path, quiet_loading, resolve_source

try:
    __version__ = version("pnpseg-hf")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "HFAdapter",
    "__version__",
    "broadcast_batch",
    "capped_by_tokenizer",
    "capture_outputs",
    "drop_image_cls",
    "eager",
    "first_line",
    "fused",
    "grad_leaf",
    "load_pretrained",
    "looks_like_path",
    "pil_resample",
    "quiet_loading",
    "resolve_source",
    "side",
    "start_graph_at",
    "text_config",
    "vision_config",
]
