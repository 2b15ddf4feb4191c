"""The module named by the ``pnpseg`` entry point: it registers the adapter under a name."""

import pnpseg

from .adapter import ToyAdapter


@pnpseg.hookimpl
def register_adapters(register):
    # factory(model=None, device=...) -> adapter; the class itself is such a factory.
    register("toy", ToyAdapter)
