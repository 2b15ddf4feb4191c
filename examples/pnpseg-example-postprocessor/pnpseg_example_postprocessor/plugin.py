"""The module named by the ``pnpseg`` entry point.

It registers a :func:`pnpseg.lazy` target, not the class: every ``pnpseg`` command loads
this module, and the lazy factory keeps it from importing numpy and scipy until
``--postprocess islands`` is used (docs/plugins.md).
"""

import pnpseg


@pnpseg.hookimpl
def register_postprocessors(register):
    register(
        "islands", pnpseg.lazy("pnpseg_example_postprocessor.islands:RemoveIslands")
    )  # --postprocess blur,crf,islands
