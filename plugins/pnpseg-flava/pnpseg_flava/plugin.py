"""pnpseg plugin entry point (group ``pnpseg``, name ``flava``)."""

from __future__ import annotations

import pnpseg


@pnpseg.hookimpl
def register_adapters(register: pnpseg.Register) -> None:
    register("flava", pnpseg.lazy("pnpseg_flava.adapter:FlavaAdapter"))  # imports transformers on first use


@pnpseg.hookimpl
def register_model_types(register: pnpseg.RegisterModelType) -> None:
    """``Segmenter.from_pretrained(<a flava checkpoint>)`` picks this adapter (a literal: no
    transformers import to list what plugins claim)."""
    register("flava", "flava")
