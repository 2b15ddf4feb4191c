"""Postprocessors: the protocol and the chain builder (built-ins are registered in pnpseg/builtins.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from pnpseg.method.params import SegmentParams


class Postprocessor(Protocol):
    def __call__(self, scores: torch.Tensor, image: np.ndarray, params: SegmentParams) -> torch.Tensor: ...


def build_chain(names: Sequence[str]) -> list[Postprocessor]:
    """Instantiate the named postprocessors in order (unknown names list what exists)."""
    from pnpseg.plugins import lookup

    return [lookup("postprocessors", name)() for name in names]
