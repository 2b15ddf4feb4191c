"""pnpseg plugin entry point (group ``pnpseg``, name ``flava``)."""

from __future__ import annotations

import pnpseg

from .adapter import FlavaAdapter


@pnpseg.hookimpl
def register_adapters(register: pnpseg.hookspecs.Register) -> None:
    register("flava", FlavaAdapter)
