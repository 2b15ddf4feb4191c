"""Optional per-stage timers: no-ops unless :func:`enable` was called (the benchmark does).

>>> from pnpseg.method import profiling
>>> profiling.enable()
>>> with profiling.stage("vision forward"):
...     pass
>>> sorted(profiling.totals())
['vision forward']

Stages may be entered from any thread; times are summed per name. On CUDA the timer
synchronises the device at both ends of a stage so that asynchronous kernels are counted
where they run (only while enabled: a disabled timer costs one attribute lookup).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import Iterator

_enabled = False
_lock = threading.Lock()
_totals: dict[str, float] = defaultdict(float)
_counts: dict[str, int] = defaultdict(int)


def enable(on: bool = True) -> None:
    global _enabled
    _enabled = on


def enabled() -> bool:
    return _enabled


def reset() -> None:
    with _lock:
        _totals.clear()
        _counts.clear()


def totals() -> dict[str, float]:
    """Seconds per stage since the last :func:`reset`."""
    with _lock:
        return dict(_totals)


def counts() -> dict[str, int]:
    with _lock:
        return dict(_counts)


def _sync() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


@contextlib.contextmanager
def _timed(name: str) -> Iterator[None]:
    _sync()
    start = time.perf_counter()
    try:
        yield
    finally:
        _sync()
        add(name, time.perf_counter() - start)


_NULL = contextlib.nullcontext()


def stage(name: str) -> contextlib.AbstractContextManager:
    """Time the ``with`` block under ``name`` when enabled; otherwise do nothing."""
    return _timed(name) if _enabled else _NULL


def add(name: str, seconds: float) -> None:
    """Add time measured elsewhere (e.g. in a worker process) to a stage."""
    if not _enabled:
        return
    with _lock:
        _totals[name] += seconds
        _counts[name] += 1
