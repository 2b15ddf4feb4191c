"""BLIP-2 image-text matching (Hugging Face ``Blip2ForImageTextRetrieval``) adapter for pnpseg."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .adapter import DEFAULT_MODEL, Blip2Adapter

try:
    __version__ = version("pnpseg-blip2")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["DEFAULT_MODEL", "Blip2Adapter", "__version__"]


def __getattr__(name: str) -> Any:
    """The adapter (and transformers) are imported on first use: the entry point stays cheap."""
    if name in ("DEFAULT_MODEL", "Blip2Adapter"):
        from . import adapter

        return getattr(adapter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
