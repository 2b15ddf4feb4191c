"""Registers the synthetic adapter under the name ``synthetic`` (a built-in plugin)."""

from __future__ import annotations

from typing import Any, Callable

import pnpseg

from .synthetic import SyntheticAdapter


@pnpseg.hookimpl
def register_adapters(register: Callable[[str, Callable[..., Any]], None]) -> None:
    register("synthetic", SyntheticAdapter)
