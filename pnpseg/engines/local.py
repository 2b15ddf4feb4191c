"""``pnpseg segment`` on this machine: the shared job, batch step and output folder
(:mod:`pnpseg.engines.common`), with image prefetch, batching and a step-4 worker pool."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from pnpseg.engines.common import (
    BatchStep,
    DiskFull,
    JobSpec,
    OutputFolder,
    Summary,
    Unfinished,
    complete,
    decode,
    fingerprint,
    report,
    report_skipped,
)
from pnpseg.engines.parallel import Finisher, auto_batch_size, prefetch
from pnpseg.errors import ClassNameError, ImageError
from pnpseg.io.folders import check_output_folder
from pnpseg.io.formats import DEFAULT_FORMATS
from pnpseg.io.formats import check_available as check_formats
from pnpseg.io.images import InputItem, discover, load_image
from pnpseg.io.outputs import check_class_count
from pnpseg.io.progress import progress_bar
from pnpseg.method.defaults import DEFAULT_ADAPTER
from pnpseg.method.prompts import validate_names


def read_class_names(classes: str | None, classes_file: Path | None) -> list[str]:
    """Names from ``--classes "a,b"`` and/or ``--classes-file`` (one per line, # comments)."""
    names: list[str] = []
    if classes is not None:
        if "\n" in classes or "\r" in classes:
            raise ClassNameError("--classes holds a line break; separate class names with commas")
        names += classes.split(",")
    if classes_file is not None:
        try:
            text = classes_file.read_text(encoding="utf-8-sig")  # a BOM is not part of the first name
        except (OSError, UnicodeDecodeError) as error:
            raise ClassNameError(f"cannot read classes file {classes_file}: {error}") from None
        names += [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if classes is None and classes_file is None:
        raise ClassNameError("no class names given: pass --classes 'a,b,c' or --classes-file FILE")
    names = validate_names(names)
    check_class_count(names)
    return names


class SegmentJob:
    """One ``segment`` run. Validates everything cheap before the model is loaded."""

    def __init__(
        self,
        inputs: Sequence[Path],
        classes: list[str],
        out: Path,
        *,
        adapter: str = DEFAULT_ADAPTER,
        model: str | None = None,
        device: str = "auto",
        params: dict[str, Any] | None = None,
        batch_size: int | str = 1,
        viz: bool = False,
        overwrite: bool = False,
        console: Console | None = None,
        workers: int = 0,
        precision: str = "fp32",
        class_source: Any = "all",
        formats: Sequence[str] = DEFAULT_FORMATS,
        root: Path | None = None,
    ):
        self.classes, self.batch_size, self.workers = classes, batch_size, workers
        self.formats = tuple(formats)
        check_formats(self.formats, classes)  # a missing library for a format: before the model loads
        self.overwrite = overwrite
        self.console = console or Console(stderr=True)
        self.folder = OutputFolder(Path(out), classes, overwrite=overwrite)
        self.items, self.skipped = discover(inputs, self.folder.not_inputs(), root)
        report_skipped(self.console, self.skipped, inputs, bool(self.items))
        check_formats(self.formats, classes, (i.output_relative("").as_posix() for i in self.items))
        check_output_folder(Path(out))  # before the model loads
        self.folder.guard_inputs(self.items, viz, self.formats)
        self.folder.check_classes()
        spec = JobSpec(list(classes), adapter, model, device, dict(params or {}), precision, class_source)
        built = spec.build(self.items)
        self.segmenter, self.settings = built.segmenter, built.settings
        self.layout = self.folder.layout(built.settings, fingerprint(self.folder.table, built.settings), viz)
        self.folder.check_fingerprint(self.layout.fingerprint)
        self.step = BatchStep(built.segmenter, built.class_source, self.layout)

    def run(self) -> Summary:
        summary = Summary.for_skipped(self.skipped)
        with self.folder.open(self.layout.fingerprint) as folder:
            todo = [i for i in self.items if self.overwrite or not folder.is_done(self.layout, i)]
            summary.skipped_done = len(self.items) - len(todo)
            p = self.segmenter.params
            self.console.print(
                f"Segmenting {len(todo)} image(s) into {len(self.classes)} classes with "
                f"{self.settings['adapter']} (layer {p.layer}, head {p.head}) on {self.segmenter.adapter.device}"
                + (f"; {summary.skipped_done} already done" if summary.skipped_done else ""),
                highlight=False,
                soft_wrap=True,
            )
            start = time.perf_counter()
            self._segment(todo, summary, start)
            summary.seconds = time.perf_counter() - start
            summary.formats = folder.write_formats(self.formats, self.layout.fingerprint)
        report(self.console, summary, "pnpseg segment", self.folder.location, self.folder.manifest_uri)
        return summary

    def _segment(self, todo: list[InputItem], summary: Summary, start: float) -> None:
        """Batches through the step, step 4 through the Finisher, records into the folder."""
        seg, batch_size = self.segmenter, self._resolve_batch_size(todo)
        with (
            progress_bar(self.console, "{task.fields[rate]}") as progress,
            Finisher(seg.params, seg.chain, self.workers) as finisher,
        ):
            task = progress.add_task("segment", total=len(todo), rate="")
            if finisher.in_process_reason:
                self.console.print(f"[yellow]{finisher.in_process_reason}[/]", highlight=False, soft_wrap=True)

            def record(records: list[dict]) -> None:
                self.folder.append(records)
                for r in records:
                    summary.add(r)
                progress.advance(task, len(records))
                elapsed = time.perf_counter() - start
                progress.update(task, rate=f"{progress.tasks[task].completed / max(elapsed, 1e-9):.2f} img/s")

            def drain(wait: bool) -> None:
                for unfinished, labels, seconds, error in finisher.results(wait):
                    try:
                        outcome = complete(self.layout, unfinished, labels, seconds, error)
                    except DiskFull as stop:
                        record([stop.record])  # the failed image is recorded, then the run stops
                        raise
                    record([outcome])

            for _, loaded in prefetch(_batches(todo, batch_size), decode):
                for outcome in self.step(loaded):
                    if isinstance(outcome, Unfinished):
                        finisher.submit(outcome.image, outcome.saliency, outcome.names, outcome)
                    else:
                        record([outcome])
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
