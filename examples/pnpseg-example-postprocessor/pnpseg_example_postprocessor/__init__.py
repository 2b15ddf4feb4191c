"""A third-party pnpseg postprocessor: small islands of a label are given to their neighbours."""

from .islands import RemoveIslands

__all__ = ["RemoveIslands"]
