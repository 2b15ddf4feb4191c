"""LAVIS BLIP ITM (``lavis-blip``) and ALBEF retrieval (``albef``) adapters for pnpseg.

They run LAVIS's own model classes (salesforce-lavis 1.0.2, the PnP-OVSS authors' stack),
which pins transformers<4.27 and numpy<2: install them in their own environment from
``requirements-lavis.txt`` (docs/lavis.md). Nothing here imports LAVIS until a model loads.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .adapter import AlbefAdapter, LavisAdapter, LavisBlipAdapter

try:
    __version__ = version("pnpseg-lavis")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["AlbefAdapter", "LavisAdapter", "LavisBlipAdapter", "__version__"]


def __getattr__(name: str) -> Any:
    """The adapters (and torch) are imported on first use: the entry point stays cheap."""
    if name in ("AlbefAdapter", "LavisAdapter", "LavisBlipAdapter"):
        from . import adapter

        return getattr(adapter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
