"""The module named by the ``pnpseg`` entry point."""

import pnpseg

from .islands import RemoveIslands


@pnpseg.hookimpl
def register_postprocessors(register):
    register("islands", RemoveIslands)  # usable as --postprocess blur,crf,islands
