"""The search space of ``pnpseg tune``: option strings → value lists, and seeded sampling."""

from __future__ import annotations

import itertools
import math
import random
import re
from collections.abc import Sequence

import numpy as np

from pnpseg.errors import PnpsegError

DEFAULT_THRESHOLDS = "0.05:0.5:0.1"
DEFAULT_BLUR_SCALES = "0.01:0.11:0.02"


def parse_int_range(text: str, low: int, high: int, what: str) -> list[int]:
    """``"1-12"``, ``"3"``, ``"1,3,5-7"`` → sorted unique ints, each within [low, high]."""
    values: set[int] = set()
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not match:
            raise PnpsegError(f"{what} must look like 1-12 or 1,3,5-7; got {text!r}")
        a, b = int(match.group(1)), int(match.group(2) or match.group(1))
        if a > b:
            raise PnpsegError(f"{what} range {part!r} is empty")
        values.update(range(a, b + 1))
    if not values:
        raise PnpsegError(f"no {what} given")
    bad = sorted(v for v in values if not low <= v <= high)
    if bad:
        raise PnpsegError(f"{what} {bad} out of range: this model has {what} {low}..{high} (1-based)")
    return sorted(values)


def parse_float_range(text: str, what: str) -> list[float]:
    """``"0.05:0.5:0.1"`` (start:stop:step, stop excluded) → [0.05, 0.15, ..., 0.45];
    ``"0.1,0.2"`` or ``"0.15"`` → those values."""
    text = str(text).strip()
    if ":" in text:
        parts = text.split(":")
        try:
            start, stop, step = (float(p) for p in parts)
        except ValueError:  # not three numbers
            start = stop = step = math.nan
        if not step > 0:  # also NaN
            raise PnpsegError(f"{what} must be start:stop:step with step > 0, got {text!r}")
        count = int(np.floor((stop - start) / step - 1e-9)) + 1
        values = [round(start + i * step, 10) for i in range(max(count, 0))]
    else:
        try:
            values = [float(p) for p in text.split(",") if p.strip()]
        except ValueError:
            raise PnpsegError(f"{what} must be start:stop:step or a comma list of numbers, got {text!r}") from None
    if not values:
        raise PnpsegError(f"{what} {text!r} holds no values")
    return sorted(set(values))


def sample_grid(grid: Sequence[tuple], trials: int, seed: int) -> list[tuple]:
    """``trials`` distinct grid points drawn with ``seed`` (the whole grid if it is smaller),
    returned in grid order."""
    if trials >= len(grid):
        return list(grid)
    chosen = sorted(random.Random(seed).sample(range(len(grid)), trials))
    return [grid[i] for i in chosen]


def stage1_grid(
    layers: Sequence[int], heads: Sequence[int], thresholds: Sequence[float]
) -> list[tuple[int, int, float]]:
    """Every (layer, head, threshold) of stage 1, in grid order."""
    return list(itertools.product(layers, heads, thresholds))
