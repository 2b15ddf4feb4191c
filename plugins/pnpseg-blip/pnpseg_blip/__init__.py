"""BLIP (Hugging Face ``BlipForImageTextRetrieval``) adapter for pnpseg."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .adapter import DEFAULT_MODEL, BlipAdapter

try:
    __version__ = version("pnpseg-blip")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["BlipAdapter", "DEFAULT_MODEL", "__version__"]
