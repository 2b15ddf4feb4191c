"""pnpseg plugin entry point (group ``pnpseg``, name ``vilt``)."""

from __future__ import annotations

import pnpseg

from .adapter import ViltAdapter


@pnpseg.hookimpl
def register_adapters(register: pnpseg.hookspecs.Register) -> None:
    register("vilt", ViltAdapter)
