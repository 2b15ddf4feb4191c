"""``pnpseg segment --engine ray``: the driver. It checks and owns the output folder (the
record sink) exactly as the local engine does, then streams the todo list through the
actors and step-4 tasks of :mod:`pnpseg.engines.ray.actors`."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pnpseg.engines.ray.actors as actors
from pnpseg.engines.common import JobSpec, OutputFolder, Summary, fingerprint, report, report_skipped
from pnpseg.engines.ray.cluster import init_ray
from pnpseg.engines.ray.storage import discover_uris
from pnpseg.errors import PnpsegError
from pnpseg.io.formats import DEFAULT_FORMATS
from pnpseg.io.formats import check_available as check_formats
from pnpseg.io.images import set_max_image_pixels
from pnpseg.io.progress import progress_bar
from pnpseg.method.defaults import DEFAULT_ADAPTER
from pnpseg.sources.class_sources import build_class_source, check_inputs


class RaySegmentJob:
    """``pnpseg segment --engine ray``: checks as the local engine, then the Ray Data pipeline."""

    def __init__(
        self,
        inputs: Sequence[str | Path],
        classes: list[str],
        out: str | Path,
        *,
        adapter: str = DEFAULT_ADAPTER,
        model: str | None = None,
        device: str = "auto",
        params: dict[str, Any] | None = None,
        batch_size: int | str = 1,
        viz: bool = False,
        overwrite: bool = False,
        console: Any = None,
        workers: int = 1,
        precision: str = "fp32",
        class_source: str = "all",
        formats: Sequence[str] = DEFAULT_FORMATS,
        address: str | None = None,
        gpus_per_worker: float = 0.0,
        cpus_per_worker: float | None = None,
        max_image_pixels: int | None = None,
        root: Path | None = None,
    ):
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.classes, self.overwrite = classes, overwrite
        if batch_size == "auto":
            self.console.print("--batch-size auto is not probed under --engine ray; using 1", highlight=False)
            batch_size = 1
        self.batch_size, self.workers = int(batch_size), max(1, int(workers))
        if gpus_per_worker < 0:
            raise PnpsegError(f"--gpus-per-worker must be ≥ 0, got {gpus_per_worker}")
        self.gpus, self.cpus = gpus_per_worker, cpus_per_worker
        set_max_image_pixels(max_image_pixels)  # checks it; the actors, which decode, set it too
        self.max_image_pixels = max_image_pixels
        self.folder = OutputFolder(out, classes, overwrite=overwrite)
        self.folder.store.check_output()  # before Ray starts, the model loads, or the ledger is read
        self.items, self.skipped = discover_uris(inputs, self.folder.not_inputs(), root)
        report_skipped(self.console, self.skipped, inputs, bool(self.items))
        self.formats = tuple(formats)
        check_formats(self.formats, classes, (item.output_relative("").as_posix() for item, _ in self.items))
        self.folder.guard_inputs((item for item, _ in self.items), viz, self.formats)
        self.folder.check_classes()
        # a bad spec, or a file: key naming several inputs, fails here, before Ray starts
        check_inputs(build_class_source(class_source, classes), [item for item, _ in self.items])
        self.spec = JobSpec(list(classes), adapter, model, device, dict(params or {}), precision, class_source)
        self.ray = init_ray(address)
        task = self.ray.remote(num_cpus=min(1.0, self._cluster_cpus()), num_gpus=self.gpus)(actors.describe)
        status, value = self.ray.get(task.remote(self.spec))
        if status != "ok":
            raise PnpsegError(value)
        settings, self.params = value
        self.layout = self.folder.layout(settings, fingerprint(self.folder.table, settings), viz)
        self.folder.check_fingerprint(self.layout.fingerprint)

    def _cluster_cpus(self) -> float:
        return float(self.ray.cluster_resources().get("CPU", 1.0))

    def run(self) -> Summary:
        summary = Summary.for_skipped(self.skipped)
        order = [self.layout.key(item) for item, _ in self.items]
        with self.folder.open(self.layout.fingerprint, order) as folder:
            todo = [(i, root) for i, root in self.items if self.overwrite or not folder.is_done(self.layout, i, root)]
            summary.skipped_done = len(self.items) - len(todo)
            actor_cpus, finish_cpus = self.cpu_shares()
            self.console.print(
                f"Segmenting {len(todo)} image(s) into {len(self.classes)} classes with "
                f"{self.layout.settings['adapter']} on Ray: {self.workers} worker(s) × ({actor_cpus:g} CPU, "
                f"{self.gpus:g} GPU), blur/CRF in CPU tasks"
                + (f"; {summary.skipped_done} already done" if summary.skipped_done else ""),
                highlight=False,
                soft_wrap=True,
            )
            start = time.perf_counter()
            if todo:
                self._collect(self._pipeline(todo, actor_cpus, finish_cpus), summary, len(todo), start)
            summary.seconds = time.perf_counter() - start
            summary.formats = folder.write_formats(self.formats, self.layout.fingerprint)
        report(self.console, summary, "pnpseg segment (ray)", self.folder.location, self.folder.manifest_uri)
        return summary

    def _pipeline(self, todo: list[tuple[Any, str]], actor_cpus: float, finish_cpus: float) -> Any:
        ray = self.ray
        rows = [
            {"idx": i, "input": str(item.path), "root": root, "relative": item.relative.as_posix()}
            for i, (item, root) in enumerate(todo)
        ]
        blocks = max(1, min(len(rows), 4 * self.workers, math.ceil(len(rows) / self.batch_size)))
        blocks = max(blocks, min(len(rows), math.ceil(len(rows) / 64)))  # ≤ ~64 images per block
        ds = ray.data.from_items(rows, override_num_blocks=blocks)
        # Ray Data restarts a dead actor and retries its batch (max_restarts / max_task_retries -1).
        ds = ds.map_batches(
            actors.SegmentActor,
            fn_constructor_kwargs={"spec": self.spec, "layout": self.layout, "max_image_pixels": self.max_image_pixels},
            batch_size=self.batch_size,
            compute=ray.data.ActorPoolStrategy(size=self.workers),
            num_cpus=actor_cpus,
            num_gpus=self.gpus or None,
        )
        return ds.map_batches(
            actors.finish_and_write,
            fn_kwargs={"layout": self.layout, "params": self.params},
            batch_size=None,
            num_cpus=finish_cpus,
        )

    def cpu_shares(self) -> tuple[float, float]:
        """CPUs per actor and per blur/CRF task. Actors must leave room for the tasks, or
        the pipeline stalls; with no explicit ``--cpus-per-worker`` they get 1 each if the
        cluster has a CPU to spare, else an even share of all but one CPU."""
        total = self._cluster_cpus()
        if self.cpus is not None:
            return self.cpus, max(0.1, min(1.0, total - self.workers * self.cpus))
        per = (
            1.0
            if total - self.workers >= 1
            else max(0.1, (total - 1) / self.workers)
            if total > 1
            else total / (2 * self.workers)
        )
        return round(per, 3), max(0.1, min(1.0, total - self.workers * per))

    def _collect(self, ds: Any, summary: Summary, total: int, start: float) -> None:
        """Append the streamed records (a retried block's repeats dropped) to the folder's manifest."""
        seen: set[str] = set()
        with progress_bar(self.console, "{task.fields[rate]}", eta=False) as progress:
            task = progress.add_task("segment (ray)", total=total, rate="")
            for row in ds.iter_rows():
                record = json.loads(row["record"])
                if record["key"] in seen:  # a retried block: its first record stands
                    continue
                seen.add(record["key"])
                summary.add(record)
                self.folder.append([record])
                rate = len(seen) / max(time.perf_counter() - start, 1e-9)
                progress.update(task, advance=1, rate=f"{rate:.2f} img/s")
