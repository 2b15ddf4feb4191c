"""Built-in postprocessors, registered through the same hook as any plugin's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from pnpseg.hookspecs import hookimpl
from pnpseg.method.params import SegmentParams
from pnpseg.method.postprocess.blur import GaussianBlur
from pnpseg.method.postprocess.crf import DenseCRF


class Postprocessor(Protocol):
    def __call__(self, scores: torch.Tensor, image: np.ndarray, params: SegmentParams) -> torch.Tensor: ...


@hookimpl
def register_postprocessors(register) -> None:
    register("blur", GaussianBlur)
    register("crf", DenseCRF)


def build_chain(names: Sequence[str]) -> list[Postprocessor]:
    """Instantiate the named postprocessors in order (unknown names list what exists)."""
    from pnpseg.plugins import lookup

    return [lookup("postprocessors", name)() for name in names]
