"""What every ``segment`` engine does around its own pipeline: the pre-flight and the ``run()`` frame.

An engine subclasses :class:`SegmentRun` and adds only what is its own: how it discovers its
inputs, how it builds the job's settings (:meth:`SegmentRun.prepare`), the line it prints
before starting and the pipeline that turns the images still to do into records
(:meth:`SegmentRun.segment`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from rich.console import Console

from pnpseg.engines.common.folder import OutputFolder
from pnpseg.engines.common.job import JobSpec, fingerprint
from pnpseg.engines.common.layout import OutputLayout
from pnpseg.engines.common.report import Summary, report, report_skipped
from pnpseg.io.formats import DEFAULT_FORMATS
from pnpseg.io.formats import check_available as check_formats
from pnpseg.io.images import InputItem, Skipped
from pnpseg.io.progress import progress_bar

#: ``progress(done, total)``: images recorded so far of those to do in this run.
Progress = Callable[[int, int], None]


class RateBar:
    """The progress bar ``pnpseg segment`` shows when the caller passes no ``progress``:
    done/total and the images per second since the first call."""

    def __init__(self, console: Console, label: str, *, eta: bool = True):
        self.bar = progress_bar(console, "{task.fields[rate]}", eta=eta)
        self.label, self.start = label, 0.0
        self.task: Any = None  # a rich TaskID once the first call gives the total

    def __enter__(self) -> RateBar:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def __call__(self, done: int, total: int) -> None:
        if self.task is None:
            self.task, self.start = self.bar.add_task(self.label, total=total, rate=""), time.perf_counter()
        elif done:
            rate = done / max(time.perf_counter() - self.start, 1e-9)
            self.bar.update(self.task, completed=done, rate=f"{rate:.2f} img/s")


class SegmentRun:
    """One ``segment`` job on some engine: everything cheap is checked (formats, output folder,
    discovery, input guard, class table, class source) before the model loads."""

    #: The end-of-run table's title and the default progress bar's label.
    title = "pnpseg segment"
    label = "segment"
    eta = True

    def __init__(
        self,
        spec: JobSpec,
        inputs: Sequence[str | Path],
        out: str | Path,
        *,
        batch_size: int | str = 1,
        viz: bool = False,
        overwrite: bool = False,
        formats: Sequence[str] = DEFAULT_FORMATS,
        root: Path | None = None,
        console: Console | None = None,
        progress: Progress | None = None,
    ):
        self.spec, self.classes, self.batch_size = spec, spec.classes, batch_size
        self.overwrite, self.progress = overwrite, progress
        self.console = console or Console(stderr=True)
        self.formats = tuple(formats)
        check_formats(self.formats, spec.classes)  # a missing library for a format: before the model loads
        self.folder = OutputFolder(out, spec.classes, overwrite=overwrite)
        self.folder.store.check_output()  # before the model loads, and before its ledger is read
        self.items, self.skipped = self.discover(inputs, self.folder.not_inputs(), root)
        report_skipped(self.console, self.skipped, inputs, bool(self.items))
        check_formats(self.formats, spec.classes, (i.output_relative("").as_posix() for i in self.items))
        self.folder.check_classes()  # another class table is named as such, before its files are
        self.folder.guard_inputs(self.items, viz, self.formats)
        settings = self.prepare()
        self.layout: OutputLayout = self.folder.layout(settings, fingerprint(self.folder.table, settings), viz)
        self.folder.check_fingerprint(self.layout.fingerprint)

    # -- what each engine adds -----------------------------------------------------------
    def discover(
        self, inputs: Sequence[str | Path], exclude: list[Any], root: Path | None
    ) -> tuple[list[InputItem], list[Skipped]]:
        """The images among ``inputs`` (outside ``exclude``; outputs named relative to
        ``root`` when given) and the paths passed over."""
        raise NotImplementedError

    def root_of(self, item: InputItem) -> str:
        """The folder a URI input was discovered in ("" for a local path)."""
        return ""

    def prepare(self) -> dict[str, Any]:
        """Build (or check) the model side of the job; returns the settings the manifest records."""
        raise NotImplementedError

    def describe(self, todo: list[InputItem]) -> str:
        """What the first line printed says about the run, after the image count."""
        raise NotImplementedError

    def segment(self, todo: list[InputItem], record: Callable[[dict[str, Any]], None]) -> None:
        """Turn ``todo`` into records, handing each to ``record`` as it is finished."""
        raise NotImplementedError

    # -- the frame ------------------------------------------------------------------------
    def run(self) -> Summary:
        """Segment what is not done yet into the folder; print the summary table."""
        summary = Summary.for_skipped(self.skipped)
        order = [self.layout.key(item) for item in self.items]
        with self.folder.open(self.layout.fingerprint, order) as folder:
            todo = [i for i in self.items if self.overwrite or not folder.is_done(self.layout, i, self.root_of(i))]
            summary.skipped_done = len(self.items) - len(todo)
            self.console.print(
                f"Segmenting {len(todo)} image(s) into {len(self.classes)} classes with {self.describe(todo)}"
                + (f"; {summary.skipped_done} already done" if summary.skipped_done else ""),
                highlight=False,
                soft_wrap=True,
            )
            start = time.perf_counter()
            self._segment(todo, summary)
            summary.seconds = time.perf_counter() - start
            summary.formats = folder.write_formats(self.formats, self.layout.fingerprint)
        report(self.console, summary, self.title, self.folder.location, self.folder.manifest_uri)
        return summary

    def _segment(self, todo: list[InputItem], summary: Summary) -> None:
        bar = RateBar(self.console, self.label, eta=self.eta) if self.progress is None else None
        progress = self.progress or bar
        assert progress is not None
        with bar or nullcontext():
            done = 0
            progress(done, len(todo))

            def record(one: dict[str, Any]) -> None:
                nonlocal done
                self.folder.append([one])
                summary.add(one)
                done += 1
                progress(done, len(todo))

            self.segment(todo, record)
