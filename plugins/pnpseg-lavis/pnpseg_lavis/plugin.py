"""pnpseg plugin entry point (group ``pnpseg``, name ``lavis``)."""

from __future__ import annotations

import pnpseg
from pnpseg import Register


@pnpseg.hookimpl
def register_adapters(register: Register) -> None:
    register("lavis-blip", pnpseg.lazy("pnpseg_lavis.adapter:LavisBlipAdapter"))  # torch on first use
    register("albef", pnpseg.lazy("pnpseg_lavis.adapter:AlbefAdapter"))
