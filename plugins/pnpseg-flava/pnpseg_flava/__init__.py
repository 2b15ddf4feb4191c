"""FLAVA (Hugging Face ``FlavaForPreTraining``) adapter for pnpseg."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .adapter import DEFAULT_MODEL, FlavaAdapter

try:
    __version__ = version("pnpseg-flava")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["DEFAULT_MODEL", "FlavaAdapter", "__version__"]
