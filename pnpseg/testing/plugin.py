"""Registers the synthetic adapter and scorer under the name ``synthetic`` (a built-in plugin)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pnpseg
from pnpseg.testing.scorer import SyntheticScorer
from pnpseg.testing.synthetic import SyntheticAdapter


@pnpseg.hookimpl
def register_adapters(register: Callable[[str, Callable[..., Any]], None]) -> None:
    register("synthetic", SyntheticAdapter)


@pnpseg.hookimpl
def register_model_types(register: Callable[[str, str], None]) -> None:
    register(SyntheticAdapter.model_type, "synthetic")


@pnpseg.hookimpl
def register_scorers(register: Callable[[str, Callable[..., Any]], None]) -> None:
    register("synthetic", SyntheticScorer)
