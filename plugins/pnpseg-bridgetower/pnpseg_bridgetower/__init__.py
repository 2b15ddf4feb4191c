"""BridgeTower (Hugging Face ``BridgeTowerForImageAndTextRetrieval``) adapter for pnpseg."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .adapter import DEFAULT_MODEL, BridgeTowerAdapter

try:
    __version__ = version("pnpseg-bridgetower")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["BridgeTowerAdapter", "DEFAULT_MODEL", "__version__"]
