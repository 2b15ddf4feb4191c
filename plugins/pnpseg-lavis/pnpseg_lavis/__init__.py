"""LAVIS BLIP ITM (``lavis-blip``) and ALBEF retrieval (``albef``) adapters for pnpseg.

They run LAVIS's own model classes (salesforce-lavis 1.0.2, the PnP-OVSS authors' stack),
which pins transformers<4.27 and numpy<2: install them in their own environment from
``requirements-lavis.txt`` (docs/lavis.md). Nothing here imports LAVIS until a model loads.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .adapter import AlbefAdapter, LavisAdapter, LavisBlipAdapter

try:
    __version__ = version("pnpseg-lavis")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["AlbefAdapter", "LavisAdapter", "LavisBlipAdapter", "__version__"]
