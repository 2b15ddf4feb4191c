"""The module named by the ``pnpseg`` entry point: it registers the adapter under a name."""

import pnpseg


@pnpseg.hookimpl
def register_adapters(register):
    # factory(model=None, device=...) -> adapter. pnpseg.lazy names the class without importing
    # it (and torch) until first use, so `pnpseg --help` stays fast with the plugin installed.
    register("toy", pnpseg.lazy("pnpseg_example_adapter.adapter:ToyAdapter"))
