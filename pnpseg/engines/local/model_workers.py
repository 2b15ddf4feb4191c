"""Whole images in worker processes of one torch thread each (``segment --model-workers N``).

On a CPU with few cores the model's threads take every core, then step 4's dense CRF runs
on one of them while the others wait: on 2 cores with busy images that idles a core for up
to a third of the time. The CRF cannot run beside torch's threads either (pydensecrf holds
the GIL; another process at any priority stalls them, docs/performance.md). N processes
that each run an image's model passes at one thread and then its step 4 keep every core
busy instead: one's CRF runs while another's model passes do. This process decodes the
images and writes every output, so it stays the output folder's only writer.

The labels are the serial run's: the workers run the shared
:class:`~pnpseg.engines.common.BatchStep`, whose model passes gave the same saliency at any
thread count on the CPUs measured, and step 4 (:func:`~pnpseg.method.segmenter.finish_image`)
at this process's thread count, since its bilinear upsampling is not bitwise the same
across thread counts; the tests compare bytes.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch

from pnpseg.engines.common import BatchStep, JobSpec, OutputLayout, Unfinished
from pnpseg.engines.common.step import Loaded
from pnpseg.engines.local.parallel import WorkerPool, exit_with_parent, finish_or_error, load_worker_plugins
from pnpseg.method import profiling
from pnpseg.plugins import loaded_plugin_dirs

_state: dict[str, Any] = {}


def _init(spec: JobSpec, layout: OutputLayout, parent: int, profile: bool, threads: int, dirs: list[Path]) -> None:
    exit_with_parent(parent)
    torch.set_num_threads(1)
    profiling.enable(profile)
    try:  # a failure is reported once by _problem, not as a BrokenProcessPool per batch
        load_worker_plugins(dirs)
        built = spec.build()
        _state.update(
            step=BatchStep(built.segmenter, built.class_source, layout),
            params=built.segmenter.params,
            chain=built.segmenter.chain,
            threads=threads,
        )
    except Exception as error:  # noqa: BLE001 - shown to the user in one line
        _state["problem"] = f"{type(error).__name__}: {error}"


def _problem() -> str | None:
    return _state.get("problem")


def _segment(loaded: list[Loaded]) -> tuple[list[Any], dict[str, float]]:
    """The batch step on ``loaded``, then step 4 of each image it leaves unfinished: records,
    and ``(unfinished, labels, seconds, error)`` for :func:`~pnpseg.engines.common.complete`;
    with this batch's stage times, which the parent adds to its own."""
    if "problem" in _state:
        raise RuntimeError(_state["problem"])
    before = profiling.totals()
    results: list[Any] = []
    for outcome in _state["step"](loaded):
        if not isinstance(outcome, Unfinished):
            results.append(outcome)
            continue
        torch.set_num_threads(_state["threads"])  # step 4 at the parent's count (see the module docstring)
        try:
            finished = finish_or_error(
                outcome.image, outcome.saliency, outcome.names, _state["params"], _state["chain"]
            )
        finally:
            torch.set_num_threads(1)
        results.append((outcome, *finished))
    return results, {k: v - before.get(k, 0.0) for k, v in profiling.totals().items()}


class ModelWorkers(WorkerPool):
    """A pool of ``workers`` processes, each with its own model, segmenting batches in order."""

    def __init__(self, spec: JobSpec, layout: OutputLayout, workers: int):
        self.workers = workers
        initargs = (spec, layout, os.getpid(), profiling.enabled(), torch.get_num_threads(), loaded_plugin_dirs())
        super().__init__(
            workers, _init, initargs, _problem, "--model-workers", "run the model", "use --model-workers 0"
        )

    def run(self, batches: Iterable[Sequence[Loaded]]) -> Iterator[list[Any]]:
        """Each batch's records and finished images (as :func:`_segment` returns them), in
        order; ``workers + 1`` batches in flight."""
        pending: collections.deque[Future] = collections.deque()
        for loaded in batches:
            pending.append(self.submit(_segment, list(loaded)))
            if len(pending) > self.workers:
                yield self._outcomes(pending.popleft())
        while pending:
            yield self._outcomes(pending.popleft())

    def _outcomes(self, future: Future) -> list[Any]:
        outcomes, stages = self.result(future)
        for name, value in stages.items():
            profiling.add(name, value)
        return outcomes
