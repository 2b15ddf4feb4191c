"""pnpseg plugin entry point (group ``pnpseg``, name ``lavis``)."""

from __future__ import annotations

import pnpseg
from pnpseg.hookspecs import Register

from .adapter import AlbefAdapter, LavisBlipAdapter


@pnpseg.hookimpl
def register_adapters(register: Register) -> None:
    register("lavis-blip", LavisBlipAdapter)
    register("albef", AlbefAdapter)
