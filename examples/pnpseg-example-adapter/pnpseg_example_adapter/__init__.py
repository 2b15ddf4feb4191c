"""A template pnpseg adapter plugin: copy this package and replace the toy model with yours."""

from .adapter import ToyAdapter, ToyVLM

__all__ = ["ToyAdapter", "ToyVLM"]
