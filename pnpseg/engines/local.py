"""``pnpseg segment`` on folders: discovery, resume, per-image errors, outputs, progress."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from pnpseg.engines.parallel import Finisher, auto_batch_size, prefetch
from pnpseg.errors import ClassNameError, ImageError, PnpsegError
from pnpseg.io.images import InputItem, discover, load_image
from pnpseg.io.outputs import Manifest, class_fractions, save_label_png, write_json
from pnpseg.io.overlay import save_overlay
from pnpseg.method.params import DEFAULT_ADAPTER
from pnpseg.method.profiling import stage
from pnpseg.method.prompts import validate_names
from pnpseg.method.segmenter import Segmenter
from pnpseg.sources.class_sources import ClassSourceImageError, Proposal, build_class_source, propose

MAX_CLASSES = 255  # label PNGs are 8-bit; 0 is background


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
    if len(names) > MAX_CLASSES:
        raise ClassNameError(f"{len(names)} classes given; label PNGs hold at most {MAX_CLASSES}")
    return names


@dataclass
class Summary:
    done: int = 0
    skipped_done: int = 0
    failed: int = 0
    not_images: int = 0
    seconds: float = 0.0
    errors: list[tuple[str, str]] = field(default_factory=list)


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
    ):
        self.classes, self.out, self.batch_size = classes, Path(out), batch_size
        self.workers = workers
        self.viz, self.overwrite = viz, overwrite
        self.console = console or Console(stderr=True)
        self.items, self.not_images = discover(inputs)
        self._guard_inputs()
        self.manifest = Manifest(self.out / "manifest.jsonl")
        self._check_previous_classes()
        # --class-source NAME[:options]: built (and checked) before the model loads.
        spec = class_source if isinstance(class_source, str) else None  # else a ready ClassSource
        self.class_source = (
            class_source if spec is None and class_source is not None else build_class_source(spec, classes)
        )
        self._proposals: dict[str, Proposal] = {}
        self.segmenter = Segmenter.from_pretrained(
            adapter, model=model, device=device, precision=precision, **(params or {})
        )
        self.segmenter.plan(classes)  # tokenizer-level checks, before any weights load
        self.settings = {"adapter": adapter, "model": model, "params": self.segmenter.params.to_dict()}
        if precision != "fp32":  # fp32 runs keep the settings (and resume) of earlier versions
            self.settings["precision"] = precision
        if self.class_source.name != "all":  # likewise for the default class source
            self.settings["class_source"] = spec or self.class_source.name
        self._check_previous_settings()

    # -- checks ---------------------------------------------------------------------
    def _guard_inputs(self) -> None:
        inputs = {item.path.resolve() for item in self.items}
        for item in self.items:
            if self.output_path(item).resolve() in inputs:
                raise PnpsegError(
                    f"output {self.output_path(item)} would overwrite an input image; choose another --out"
                )

    def _check_previous_classes(self) -> None:
        path = self.out / "classes.json"
        if not self.overwrite:
            check_previous_classes(path.read_bytes() if path.exists() else None, self.classes, str(self.out), str(path))

    def _check_previous_settings(self) -> None:
        if self.overwrite:
            return
        wanted = json.loads(json.dumps(self.settings))
        for record in self.manifest.records().values():
            if record.get("status") == "ok" and record.get("settings") != wanted:
                raise PnpsegError(
                    f"{self.out} holds results made with other settings (see {self.manifest.path}); "
                    "use --overwrite or another --out"
                )

    def class_table(self) -> dict[str, str]:
        return class_table(self.classes)

    def output_path(self, item: InputItem) -> Path:
        return self.out / item.output_relative(".png")

    # -- running --------------------------------------------------------------------
    def run(self) -> Summary:
        summary = Summary(not_images=len(self.not_images))
        for path in self.not_images:
            self.console.print(f"[dim]skipping non-image file {path}[/]", highlight=False, soft_wrap=True)
        self.out.mkdir(parents=True, exist_ok=True)
        _remove_stale_temp_files(self.out)
        write_json(self.out / "classes.json", self.class_table())
        todo = [i for i in self.items if self.overwrite or not self.manifest.is_done(str(i.path), self.output_path(i))]
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
        batch_size = self._resolve_batch_size(todo)
        seg = self.segmenter
        with self._progress() as progress, Finisher(seg.params, seg.chain, self.workers) as finisher:
            task = progress.add_task("segment", total=len(todo), rate="")

            def advance(count: int) -> None:
                progress.advance(task, count)
                elapsed = time.perf_counter() - start
                progress.update(task, rate=f"{progress.tasks[task].completed / max(elapsed, 1e-9):.2f} img/s")

            for batch, loaded in prefetch(_batches(todo, batch_size), self._load):
                advance(self._run_batch(batch, summary, finisher, loaded))
                advance(self._write_results(finisher, summary, wait=False))
            advance(self._write_results(finisher, summary, wait=True))
        summary.seconds = time.perf_counter() - start
        self._report(summary)
        return summary

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )

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

    def _load(self, batch: list[InputItem]) -> list[tuple[InputItem, Any]]:
        """Read and decode a batch (in the prefetch thread): an image or an ImageError each."""
        loaded: list[tuple[InputItem, Any]] = []
        with stage("I/O"):
            for item in batch:
                try:
                    loaded.append((item, load_image(item.path)))
                except ImageError as error:
                    loaded.append((item, error))
        return loaded

    def _run_batch(
        self,
        batch: list[InputItem],
        summary: Summary,
        finisher: Finisher,
        loaded: list[tuple[InputItem, Any]] | None = None,
    ) -> int:
        """Model passes for one batch; step 4 goes to ``finisher``. Returns images settled here."""
        started = time.perf_counter()
        settled = 0
        images = []
        for item, image in loaded if loaded is not None else self._load(batch):
            if isinstance(image, ImageError):
                self._record(item, summary, error=str(image))
                settled += 1
            else:
                images.append((item, image))
        images, failed = self._propose(images, summary)
        settled += failed
        if not images:
            return settled
        try:
            saliency = self.segmenter.saliency(
                [image for _, image in images], [self._proposals[str(item.path)].classes for item, _ in images]
            )
        except PnpsegError:
            raise  # a setup problem (model, adapter, parameters): the same for every image
        except Exception as error:  # one bad batch must not stop the run
            if len(images) > 1:  # isolate the culprit
                for item, image in images:
                    settled += self._run_batch([item], summary, finisher, [(item, image)])
                return settled
            self._record(images[0][0], summary, error=f"{type(error).__name__}: {error}")
            return settled + 1
        seconds = (time.perf_counter() - started) / len(images)
        for (item, image), maps in zip(images, saliency):
            names = validate_names(self._proposals[str(item.path)].classes)
            finisher.submit(image, maps, names, (item, image, seconds))
        return settled

    def _propose(
        self, images: list[tuple[InputItem, Any]], summary: Summary
    ) -> tuple[list[tuple[InputItem, Any]], int]:
        """Ask the class source which classes to segment in each image (once per image)."""
        kept, failed = [], 0
        for item, image in images:
            if str(item.path) not in self._proposals:
                try:
                    with stage("class source"):
                        self._proposals[str(item.path)] = propose(
                            self.class_source, image, item, self.classes, self.segmenter
                        )
                except ClassSourceImageError as error:
                    self._record(item, summary, error=f"class source {self.class_source.name}: {error}")
                    failed += 1
                    continue
                except PnpsegError:
                    raise  # a setup problem, the same for every image
                except Exception as error:  # one bad image must not stop the run
                    self._record(
                        item, summary, error=f"class source {self.class_source.name}: {type(error).__name__}: {error}"
                    )
                    failed += 1
                    continue
            kept.append((item, image))
        return kept, failed

    def _to_vocabulary(self, item: InputItem, labels: Any) -> Any:
        """Per-image label values (index of the image's own class list) → ``--classes`` indices."""
        proposal = self._proposals.get(str(item.path))
        return to_vocabulary(labels, proposal.classes if proposal is not None else None, self.classes)

    def _write_results(self, finisher: Finisher, summary: Summary, wait: bool) -> int:
        """Save the label maps step 4 has finished (in input order). Returns how many."""
        count = 0
        for (item, image, seconds), labels, finish_seconds, error in finisher.results(wait):
            count += 1
            if error is not None:
                if isinstance(error, PnpsegError):
                    raise error
                self._record(item, summary, error=f"{type(error).__name__}: {error}")
                continue
            labels = self._to_vocabulary(item, labels)
            try:
                with stage("I/O"):
                    save_label_png(self.output_path(item), labels)
                    if self.viz:
                        save_overlay(self.out / "overlays" / item.output_relative(".png"), image, labels, self.classes)
            except OSError as error:
                self._record(item, summary, error=f"cannot write output: {error}")
                continue
            self._record(
                item,
                summary,
                image=image,
                fractions=class_fractions(labels, self.classes),
                seconds=seconds + finish_seconds,
            )
        return count

    def _record(
        self,
        item: InputItem,
        summary: Summary,
        *,
        error: str | None = None,
        image=None,
        fractions: dict[str, float] | None = None,
        seconds: float | None = None,
    ) -> None:
        ok = error is None
        summary.done += ok
        summary.failed += not ok
        if not ok:
            summary.errors.append((str(item.path), error))
        proposal = self._proposals.pop(str(item.path), None)
        self.manifest.append(
            manifest_record(
                str(item.path),
                str(self.output_path(item)) if ok else None,
                self.settings,
                proposal.record() if proposal is not None else {"name": self.class_source.name},
                error=error,
                image=image,
                fractions=fractions,
                seconds=seconds,
            )
        )

    def _report(self, summary: Summary) -> None:
        report(self.console, summary, "pnpseg segment", str(self.out), str(self.manifest.path))


def class_table(classes: Sequence[str]) -> dict[str, str]:
    """``classes.json``: label value → name, 0 being background."""
    return {"0": "background", **{str(i + 1): name for i, name in enumerate(classes)}}


def check_previous_classes(previous: bytes | None, classes: Sequence[str], out: str, where: str) -> None:
    """Refuse an output folder whose ``classes.json`` (``previous``, if any) names other classes."""
    if previous is None:
        return
    try:
        same = json.loads(previous) == class_table(classes)
    except ValueError:
        same = False
    if not same:
        raise PnpsegError(f"{out} holds results for other classes ({where}); use --overwrite or another --out")


def to_vocabulary(labels: Any, proposed: Sequence[str] | None, classes: Sequence[str]) -> Any:
    """Per-image label values (index of the image's own class list ``proposed``) → ``classes`` indices."""
    if proposed is None or list(proposed) == list(classes):
        return labels
    index = {name: i + 1 for i, name in enumerate(classes)}
    lut = np.zeros(max(len(proposed) + 1, int(labels.max()) + 1), dtype=labels.dtype)
    lut[1 : len(proposed) + 1] = [index[name] for name in proposed]
    return lut[labels]


def manifest_record(
    input: str,
    output: str | None,
    settings: dict[str, Any],
    class_source: dict[str, Any],
    *,
    error: str | None = None,
    image: Any = None,
    fractions: dict[str, float] | None = None,
    seconds: float | None = None,
) -> dict[str, Any]:
    """One ``manifest.jsonl`` line (shared by the local and the Ray engine)."""
    ok = error is None
    return {
        "input": input,
        "output": output if ok else None,
        "width": image.width if image is not None else None,
        "height": image.height if image is not None else None,
        "status": "ok" if ok else "error",
        "error": error,
        "classes": fractions or {},
        "seconds": round(seconds, 4) if seconds is not None else None,
        "settings": settings,
        "class_source": class_source,
    }


def report(console: Console, summary: Summary, title: str, output: str, manifest: str) -> None:
    """The end-of-run table and the first failures (both engines)."""
    table = Table(title=title, show_header=False)
    rate = summary.done / summary.seconds if summary.seconds else 0.0
    for key, value in (
        ("segmented", summary.done),
        ("already done", summary.skipped_done),
        ("failed", summary.failed),
        ("non-image files skipped", summary.not_images),
        ("seconds", f"{summary.seconds:.1f}"),
        ("images/s", f"{rate:.2f}"),
        ("output", output),
    ):
        table.add_row(key, str(value))
    console.print(table)
    for path, error in summary.errors[:20]:
        console.print(f"[red]failed[/] {path}: {error}", highlight=False, soft_wrap=True)
    if len(summary.errors) > 20:
        console.print(f"... and {len(summary.errors) - 20} more; see {manifest}")


def _remove_stale_temp_files(out: Path) -> None:
    """Temp files of an earlier run that was killed mid-write (see outputs.atomic_path)."""
    for path in out.rglob(".*.tmp-*"):
        if path.is_file():
            path.unlink(missing_ok=True)


def _batches(items: list[InputItem], size: int) -> Iterator[list[InputItem]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
