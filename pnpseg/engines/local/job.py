"""``pnpseg segment`` on this machine: the shared pre-flight and run frame
(:mod:`pnpseg.engines.common`), with image prefetch, batching and a step-4 worker pool."""

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
from pnpseg.engines.local.parallel import Finisher, auto_batch_size, prefetch
from pnpseg.errors import ImageError
from pnpseg.io.images import InputItem, Skipped, discover, load_image


class SegmentJob(SegmentRun):
    """One ``segment`` run in this process; ``workers`` processes run blur/CRF (0: in-process)."""

    def __init__(self, spec: JobSpec, inputs: Sequence[str | Path], out: str | Path, *, workers: int = 0, **run: Any):
        self.workers = workers
        super().__init__(spec, inputs, Path(out), **run)

    def discover(
        self, inputs: Sequence[str | Path], exclude: list[Any], root: Path | None
    ) -> tuple[list[InputItem], list[Skipped]]:
        return discover([Path(p) for p in inputs], exclude, root)

    def prepare(self) -> dict[str, Any]:
        built = self.spec.build(self.items)
        self.segmenter = built.segmenter
        self._built = built
        return built.settings

    def describe(self, todo: list[InputItem]) -> str:
        p = self.segmenter.params
        return f"{self.layout.settings['adapter']} (layer {p.layer}, head {p.head}) on {self.segmenter.adapter.device}"

    def segment(self, todo: list[InputItem], record: Callable[[dict[str, Any]], None]) -> None:
        """Batches through the step, step 4 through the Finisher."""
        seg, batch_size = self.segmenter, self._resolve_batch_size(todo)
        step = BatchStep(seg, self._built.class_source, self.layout)
        with Finisher(seg.params, seg.chain, self.workers) as finisher:
            if finisher.in_process_reason:
                self.console.print(f"[yellow]{finisher.in_process_reason}[/]", highlight=False, soft_wrap=True)

            def drain(wait: bool) -> None:
                for unfinished, labels, seconds, error in finisher.results(wait):
                    try:
                        outcome = complete(self.layout, unfinished, labels, seconds, error)
                    except DiskFull as stop:
                        record(stop.record)  # the failed image is recorded, then the run stops
                        raise
                    record(outcome)

            for _, loaded in prefetch(_batches(todo, batch_size), decode):
                for outcome in step(loaded):
                    if isinstance(outcome, Unfinished):
                        finisher.submit(outcome.image, outcome.saliency, outcome.names, outcome)
                    else:
                        record(outcome)
                drain(wait=False)
            drain(wait=True)

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
