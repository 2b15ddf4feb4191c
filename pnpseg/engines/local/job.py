"""``pnpseg segment`` on this machine: the shared pre-flight and run frame
(:mod:`pnpseg.engines.common`), with image prefetch, batching, a step-4 worker pool and,
optionally, model passes in one-thread worker processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pnpseg.engines.common import (
    BatchStep,
    DiskFull,
    JobSpec,
    SegmentRun,
    Unfinished,
    complete,
    decode,
)
from pnpseg.engines.local.model_workers import ModelWorkers
from pnpseg.engines.local.parallel import Finisher, auto_batch_size, prefetch
from pnpseg.errors import ImageError, PnpsegError
from pnpseg.io.images import InputItem, Skipped, discover, load_image


class SegmentJob(SegmentRun):
    """One ``segment`` run in this process; ``workers`` processes run blur/CRF (0: in-process),
    or ``model_workers`` processes of one thread each run whole images (model passes and step 4)."""

    def __init__(
        self,
        spec: JobSpec,
        inputs: Sequence[str | Path],
        out: str | Path,
        *,
        workers: int = 0,
        model_workers: int = 0,
        **run: Any,
    ):
        if model_workers < 0:
            raise PnpsegError(f"--model-workers must be ≥ 0, got {model_workers}")
        if model_workers and workers:
            raise PnpsegError(
                "--workers and --model-workers: choose one (model workers run blur and the CRF themselves)"
            )
        self.workers, self.model_workers = workers, model_workers
        super().__init__(spec, inputs, Path(out), **run)

    def discover(
        self, inputs: Sequence[str | Path], exclude: list[Any], root: Path | None
    ) -> tuple[list[InputItem], list[Skipped]]:
        return discover([Path(p) for p in inputs], exclude, root)

    def prepare(self) -> dict[str, Any]:
        built = self.spec.build(self.items)
        self.segmenter = built.segmenter
        self._built = built
        if self.model_workers and str(built.segmenter.adapter.device) != "cpu":
            raise PnpsegError(
                f"--model-workers runs the model in CPU processes, but the device is {built.segmenter.adapter.device}; "
                "leave it out on a GPU"
            )
        return built.settings

    def describe(self, todo: list[InputItem]) -> str:
        p = self.segmenter.params
        return f"{self.layout.settings['adapter']} (layer {p.layer}, head {p.head}) on {self.segmenter.adapter.device}"

    def segment(self, todo: list[InputItem], record: Callable[[dict[str, Any]], None]) -> None:
        """Batches through the step and step 4 through the Finisher, or both in model workers."""
        seg, batch_size = self.segmenter, self._resolve_batch_size(todo)
        batches = (loaded for _, loaded in prefetch(_batches(todo, batch_size), decode))

        def finish(unfinished: Unfinished, labels: Any, seconds: float, error: BaseException | None) -> None:
            try:
                outcome = complete(self.layout, unfinished, labels, seconds, error)
            except DiskFull as stop:
                record(stop.record)  # the failed image is recorded, then the run stops
                raise
            record(outcome)

        if self.model_workers:
            with ModelWorkers(self.spec, self.layout, self.model_workers) as model:
                for results in model.run(batches):
                    for result in results:
                        if isinstance(result, tuple):
                            finish(*result)
                        else:
                            record(result)
            return
        step = BatchStep(seg, self._built.class_source, self.layout)
        with Finisher(seg.params, seg.chain, self.workers) as finisher:
            if finisher.in_process_reason:
                self.console.print(f"[yellow]{finisher.in_process_reason}[/]", highlight=False, soft_wrap=True)
            for loaded in batches:
                for outcome in step(loaded):
                    if isinstance(outcome, Unfinished):
                        finisher.submit(outcome.image, outcome.saliency, outcome.names, outcome)
                    else:
                        record(outcome)
                for result in finisher.results(wait=False):
                    finish(*result)
            for result in finisher.results(wait=True):
                finish(*result)

    def _resolve_batch_size(self, todo: list[InputItem]) -> int:
        if self.batch_size != "auto":
            return int(self.batch_size)
        for item in todo[:1]:
            try:
                image = load_image(item.path)
            except ImageError:
                break
            size = auto_batch_size(self.segmenter, image, self.classes)
            self.console.print(f"--batch-size auto: {size}", highlight=False)
            return size
        return 1


def _batches(items: list[InputItem], size: int) -> Iterator[list[InputItem]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
