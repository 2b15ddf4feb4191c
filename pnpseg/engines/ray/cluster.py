"""Connecting to (or starting) Ray, imported only when ``--engine ray`` runs."""

from __future__ import annotations

import os
from typing import Any

from pnpseg.errors import MissingDependencyError


def import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise MissingDependencyError("--engine ray needs Ray Data: pip install 'pnpseg[ray]'") from None
    return ray


def init_ray(address: str | None = None, *, quiet: bool = True) -> Any:
    """Connect to ``address`` (``auto``, ``HOST:PORT``, ``ray://...``) or start a local instance.

    An already initialised Ray (a notebook, the tests) is reused as it is.
    """
    ray = import_ray()
    if not ray.is_initialized():
        starts_local = address is None and not os.environ.get("RAY_ADDRESS")
        kwargs: dict[str, Any] = {"include_dashboard": False} if starts_local else {}
        ray.init(address=address, log_to_driver=not quiet, **kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # records stream back in input order
    ctx.enable_progress_bars = False  # the driver shows its own
    ctx.print_on_execution_start = False
    return ray
