"""pnpseg plugin entry point (group ``pnpseg``, name ``bridgetower``)."""

from __future__ import annotations

import pnpseg


@pnpseg.hookimpl
def register_adapters(register: pnpseg.Register) -> None:
    register(
        "bridgetower", pnpseg.lazy("pnpseg_bridgetower.adapter:BridgeTowerAdapter")
    )  # imports transformers on first use


@pnpseg.hookimpl
def register_model_types(register: pnpseg.RegisterModelType) -> None:
    """``Segmenter.from_pretrained(<a bridgetower checkpoint>)`` picks this adapter (a literal: no
    transformers import to list what plugins claim)."""
    register("bridgetower", "bridgetower")
