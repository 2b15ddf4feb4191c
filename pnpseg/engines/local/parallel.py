"""Overlapping the pipeline's stages: image prefetch, post-processing in worker processes,
and ``--batch-size auto``.

* :func:`prefetch` reads and decodes the next batch of images in a background thread
  while the model works on the current one.
* :class:`Finisher` runs step 4 (threshold, resize, blur, CRF, argmax) either in-process
  (``workers=0``) or in a pool of worker processes, so that the CRF of image *i* overlaps
  the model passes of image *i+1*. Results come back in submission order and are
  byte-identical to the serial path: the workers run the very same function
  (:func:`pnpseg.method.segmenter.finish_image`) on the same inputs at the parent's torch
  thread count (torch's bilinear upsampling differs in the last bit across thread counts).
* :func:`auto_batch_size` probes the largest batch that fits on the GPU, halving on
  out-of-memory; on CPU it is 1 (batching does not speed up CPU inference).
"""

from __future__ import annotations

import collections
import ctypes
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from importlib.machinery import PathFinder
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from pnpseg.errors import EnvironmentProblem, PnpsegError
from pnpseg.method import profiling
from pnpseg.method.params import SegmentParams

T = TypeVar("T")
R = TypeVar("R")
P = TypeVar("P", bound="WorkerPool")


def prefetch(batches: Iterable[T], load: Callable[[T], R], ahead: int = 1) -> Iterator[tuple[T, R]]:
    """Yield ``(batch, load(batch))``, loading up to ``ahead`` batches in a background thread."""
    iterator = iter(batches)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pnpseg-prefetch") as pool:
        pending: collections.deque[tuple[T, Future]] = collections.deque()

        def push() -> None:
            for batch in iterator:
                pending.append((batch, pool.submit(load, batch)))
                return

        for _ in range(ahead + 1):
            push()
        while pending:
            batch, future = pending.popleft()
            push()
            yield batch, future.result()


# -- post-processing in worker processes ------------------------------------------------

_worker_state: dict[str, Any] = {}


def exit_with_parent(parent: int) -> None:
    """End this worker when the run that started it dies, even by SIGKILL.

    Linux delivers SIGKILL to the worker at once (``PR_SET_PDEATHSIG``); everywhere, a
    watchdog thread notices the worker was re-parented and exits (between two images at the
    latest, when an extension holds the GIL).
    """
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    if os.getppid() != parent:  # died before the signal was armed
        os._exit(1)
    threading.Thread(target=watch, name="pnpseg-parent-watchdog", daemon=True).start()


def _init_worker(
    params: SegmentParams, chain: bytes, plugin_dirs: list[str], profile: bool, parent: int, threads: int
) -> None:
    exit_with_parent(parent)
    # The parent's thread count, not 1: torch splits work by thread count, and bilinear
    # upsampling is not bitwise the same across splits (near-ties flip labels). The heavy
    # parts of step 4 (scipy's blur, the CRF) are single-threaded whatever this says.
    torch.set_num_threads(threads)
    profiling.enable(profile)
    try:  # a failure is reported by _worker_problem, not as a BrokenProcessPool per image
        load_worker_plugins(plugin_dirs)
        _worker_state.update(params=params, chain=pickle.loads(chain))
    except Exception as error:  # noqa: BLE001 - shown to the user in one line
        _worker_state["problem"] = f"{type(error).__name__}: {error}"


def load_worker_plugins(folders: Sequence[str | Path]) -> None:
    """In a worker process, load the plugins directories the parent loaded; a plugin file
    that loaded there but fails here raises, saying why."""
    from pnpseg.plugins import broken_plugins, load_plugins_dir

    before = {problem.name for problem in broken_plugins()}
    for folder in folders:
        load_plugins_dir(Path(folder))
    for problem in broken_plugins():
        if problem.name not in before:
            raise PnpsegError(f"plugin {problem.name}: {problem.reason}")


def _worker_problem() -> str | None:
    return _worker_state.get("problem")


def _plugin_dirs(chain: Sequence[Any]) -> list[str]:
    """Folders of the chain's modules that a fresh process cannot import by name: plugin
    files from ``--plugins-dir``, which the workers load the same way."""
    folders = []
    for step in chain:
        module = sys.modules.get(type(step).__module__)
        name, file = getattr(module, "__name__", ""), getattr(module, "__file__", None)
        top = name.partition(".")[0]  # PathFinder: searched on sys.path, not in sys.modules
        if name != "__main__" and file and PathFinder.find_spec(top) is None:
            folders.append(str(Path(file).parent))
    return sorted(set(folders))


def _unsendable(specs: Sequence[str], chain: Sequence[Any]) -> list[str]:
    """The postprocessors that cannot be sent to a worker process, each with the reason."""
    found = []
    for spec, step in zip(specs, chain):
        module = sys.modules.get(type(step).__module__)
        try:
            pickle.dumps(step)
        except Exception as error:  # noqa: BLE001 - lambdas, local classes, open handles...
            found.append(f"{spec} ({type(error).__name__}: {error})")
            continue
        if getattr(module, "__name__", "") == "__main__" and not getattr(module, "__file__", None):
            found.append(f"{spec} (defined in an interactive session)")
    return found


def finish_labels(
    image: Image.Image, saliency: torch.Tensor, names: list[str], params: SegmentParams, chain: Sequence[Any]
) -> tuple[np.ndarray, float, dict[str, float]]:
    from pnpseg.method.segmenter import finish_image

    before = profiling.totals()
    start = time.perf_counter()
    labels = finish_image(image, saliency, names, params, chain).labels
    seconds = time.perf_counter() - start
    stages = {k: v - before.get(k, 0.0) for k, v in profiling.totals().items()}
    return labels, seconds, stages  # stage times of this image (added to the parent's in pools)


def finish_or_error(
    image: Image.Image, saliency: torch.Tensor, names: list[str], params: SegmentParams, chain: Sequence[Any]
) -> tuple[np.ndarray | None, float, BaseException | None]:
    """``(labels, seconds, None)``, or ``(None, 0.0, error)`` for the caller to record per image."""
    try:
        labels, seconds, _ = finish_labels(image, saliency, names, params, chain)
        return labels, seconds, None
    except Exception as error:  # noqa: BLE001 - reported per image by the caller
        return None, 0.0, error


def _finish_in_worker(image: Image.Image, saliency: torch.Tensor, names: list[str]):
    if "problem" in _worker_state:
        raise RuntimeError(_worker_state["problem"])
    return finish_labels(image, saliency, names, _worker_state["params"], _worker_state["chain"])


class WorkerPool:
    """Spawned worker processes that set themselves up in ``initializer`` and say what went
    wrong there through ``problem`` (a module-level function returning a message or None):
    a broken set-up stops the run before its first image, and a dead worker stops it, each in
    one line for the whole run, never a ``BrokenProcessPool`` per image. ``flag`` names the
    option that asked for the workers, ``task`` what they do, ``fallback`` what to use instead."""

    def __init__(
        self,
        workers: int,
        initializer: Callable[..., None],
        initargs: tuple[Any, ...],
        problem: Callable[[], str | None],
        flag: str,
        task: str,
        fallback: str,
    ):
        self.flag, self.fallback = flag, fallback
        self._pool: ProcessPoolExecutor | None = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),  # fork + torch threads can deadlock
            initializer=initializer,
            initargs=initargs,
        )
        try:  # one check per worker: each submit starts a process, so all set up at once
            checks = [self._pool.submit(problem) for _ in range(workers)]
            found = next((p for p in (check.result() for check in checks) if p), None)
        except BrokenProcessPool as error:
            found = f"the worker process died while starting ({error})"
        if found:
            self.close()
            raise PnpsegError(f"{flag}: a worker process cannot {task}: {found}; {fallback}")

    def __enter__(self: P) -> P:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def submit(self, function: Callable[..., T], *args: Any) -> Future:
        assert self._pool is not None, "the pool is closed"
        try:
            return self._pool.submit(function, *args)
        except BrokenProcessPool:
            raise self.died() from None

    def result(self, future: Future) -> Any:
        """``future.result()``; a dead worker is the run's one-line error."""
        try:
            return future.result()
        except BrokenProcessPool:
            raise self.died() from None

    def died(self) -> EnvironmentProblem:
        """The run's one-line error for a worker that died; the pool is closed."""
        self.close()
        return EnvironmentProblem(
            f"a {self.flag} process died (killed, or out of memory?); the images saved so far are "
            f"kept: run the same command again to resume, or {self.fallback}"
        )


class Finisher:
    """Step 4 for a stream of images; ``workers=0`` is serial and in-process.

    ``submit(image, saliency, names, tag)`` queues one image; ``results(wait)`` yields
    ``(tag, labels, seconds, error)`` in submission order for the images that are done
    (all of them with ``wait=True``). ``error`` is the exception raised while finishing
    that image, or None. At most ``2·workers + 2`` images are in flight; ``submit`` waits
    for the oldest beyond that, which bounds memory when the CRF is the slower side.
    """

    def __init__(self, params: SegmentParams, chain: Sequence[Any], workers: int = 0):
        if workers < 0:
            raise PnpsegError(f"--workers must be ≥ 0, got {workers}")
        self.params, self.chain, self.workers = params, list(chain), workers
        self._pending: collections.deque[tuple[Any, Future]] = collections.deque()
        self._done: collections.deque[tuple[Any, Any, float, BaseException | None]] = collections.deque()
        self._pool: WorkerPool | None = None
        #: Why step 4 runs in the main process although workers were asked for, or None.
        self.in_process_reason: str | None = None
        unsendable = _unsendable(params.postprocess, self.chain) if workers else []
        if unsendable:
            self.in_process_reason = (
                f"--workers {workers}: postprocessor {'; '.join(unsendable)} cannot be sent to a worker "
                "process; blur/CRF run in the main process"
            )
            self.workers = 0
        elif workers:
            initargs = (
                params,
                pickle.dumps(self.chain),
                _plugin_dirs(self.chain),
                profiling.enabled(),
                os.getpid(),
                torch.get_num_threads(),
            )
            self._pool = WorkerPool(
                workers,
                _init_worker,
                initargs,
                _worker_problem,
                "--workers",
                "run the postprocessors",
                "use --workers 0",
            )

    def __enter__(self) -> Finisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    def submit(self, image: Image.Image, saliency: torch.Tensor, names: list[str], tag: Any) -> None:
        if self._pool is None:
            self._done.append((tag, *finish_or_error(image, saliency, names, self.params, self.chain)))
            return
        while len(self._pending) >= 2 * self.workers + 2:
            self._collect(self._pending.popleft(), wait=True)
        self._pending.append((tag, self._pool.submit(_finish_in_worker, image, saliency, list(names))))

    def _collect(self, entry: tuple[Any, Future], wait: bool) -> bool:
        tag, future = entry
        if not wait and not future.done():
            return False
        assert self._pool is not None  # only pool futures are pending
        try:
            labels, seconds, stages = future.result()
        except BrokenProcessPool:
            raise self._pool.died() from None
        except Exception as error:  # noqa: BLE001 - reported per image by the caller
            self._done.append((tag, None, 0.0, error))
            return True
        for name, value in stages.items():
            profiling.add(name, value)
        self._done.append((tag, labels, seconds, None))
        return True

    def results(self, wait: bool = False) -> Iterator[tuple[Any, Any, float, BaseException | None]]:
        while self._pending and self._collect(self._pending[0], wait):
            self._pending.popleft()
        while self._done:
            yield self._done.popleft()


# -- batch size ---------------------------------------------------------------------------


def parse_batch_size(value: str | int) -> int | str:
    """``"auto"`` or a positive integer."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        size = int(value)
    except (TypeError, ValueError):
        size = 0
    if size < 1:
        raise PnpsegError(f"--batch-size must be a positive integer or 'auto', got {value!r}")
    return size


def auto_batch_size(segmenter: Any, image: Image.Image, classes: Sequence[str], start: int = 64) -> int:
    """The largest batch (≤ ``start``, halving) whose model passes fit in GPU memory.

    On CPU this is 1: CPU inference gains nothing from batching and larger batches only
    delay the first result. The probe runs the real saliency step on copies of ``image``.
    """
    if segmenter.adapter.device.type != "cuda":
        return 1
    size = start
    while size > 1:
        try:
            segmenter.saliency([image] * size, [list(classes)] * size)
            return size
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            size //= 2
    return 1
