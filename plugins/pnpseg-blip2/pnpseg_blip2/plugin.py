"""pnpseg plugin entry point (group ``pnpseg``, name ``blip2``)."""

from __future__ import annotations

import pnpseg


@pnpseg.hookimpl
def register_adapters(register: pnpseg.Register) -> None:
    register("blip2", pnpseg.lazy("pnpseg_blip2.adapter:Blip2Adapter"))  # imports transformers on first use


@pnpseg.hookimpl
def register_model_types(register: pnpseg.RegisterModelType) -> None:
    """``Segmenter.from_pretrained(<a BLIP-2 ITM checkpoint>)`` picks this adapter. The
    architecture, not the model type: ``blip-2`` is also the captioning/VQA model's."""
    register("Blip2ForImageTextRetrieval", "blip2")
