"""pnpseg plugin entry point (group ``pnpseg``, name ``vilt``)."""

from __future__ import annotations

import pnpseg


@pnpseg.hookimpl
def register_adapters(register: pnpseg.Register) -> None:
    register("vilt", pnpseg.lazy("pnpseg_vilt.adapter:ViltAdapter"))  # imports transformers on first use


@pnpseg.hookimpl
def register_model_types(register: pnpseg.RegisterModelType) -> None:
    """``Segmenter.from_pretrained(<a vilt checkpoint>)`` picks this adapter (a literal: no
    transformers import to list what plugins claim)."""
    register("vilt", "vilt")
