"""pnpseg plugin entry point (group ``pnpseg``, name ``blip``)."""

from __future__ import annotations

from typing import Any

import pnpseg


@pnpseg.hookimpl
def register_adapters(register: pnpseg.Register) -> None:
    register("blip", pnpseg.lazy("pnpseg_blip.adapter:BlipAdapter"))  # imports transformers on first use


@pnpseg.hookimpl
def register_model_types(register: pnpseg.RegisterModelType) -> None:
    """``Segmenter.from_pretrained(<a blip checkpoint>)`` picks this adapter (a literal: no
    transformers import to list what plugins claim)."""
    register("blip", "blip")


@pnpseg.hookimpl
def register_commands(cli: Any) -> None:
    from .commands import convert_app

    cli.add_typer(convert_app, name="convert")
