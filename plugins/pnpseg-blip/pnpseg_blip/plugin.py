"""pnpseg plugin entry point (group ``pnpseg``, name ``blip``)."""

from __future__ import annotations

import pnpseg


@pnpseg.hookimpl
def register_adapters(register: pnpseg.hookspecs.Register) -> None:
    register("blip", pnpseg.lazy("pnpseg_blip.adapter:BlipAdapter"))  # imports transformers on first use
