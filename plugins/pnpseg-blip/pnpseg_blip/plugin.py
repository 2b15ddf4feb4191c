"""pnpseg plugin entry point (group ``pnpseg``, name ``blip``)."""

from __future__ import annotations

import pnpseg

from .adapter import BlipAdapter


@pnpseg.hookimpl
def register_adapters(register: pnpseg.hookspecs.Register) -> None:
    register("blip", BlipAdapter)
