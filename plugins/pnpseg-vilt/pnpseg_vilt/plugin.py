"""pnpseg plugin entry point (group ``pnpseg``, name ``vilt``)."""

from __future__ import annotations

import pnpseg


@pnpseg.hookimpl
def register_adapters(register: pnpseg.hookspecs.Register) -> None:
    register("vilt", pnpseg.lazy("pnpseg_vilt.adapter:ViltAdapter"))  # imports transformers on first use
