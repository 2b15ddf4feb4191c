"""``pnpseg segment --engine ray``: the driver. Its pre-flight and run frame are the local
engine's (:class:`~pnpseg.engines.common.SegmentRun`); it streams the todo list through the
actors and step-4 tasks of :mod:`pnpseg.engines.ray.actors`."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pnpseg.engines.ray.actors as actors
from pnpseg.engines.common import JobSpec, SegmentRun
from pnpseg.engines.ray.cluster import init_ray
from pnpseg.engines.ray.storage import discover_uris
from pnpseg.errors import PnpsegError
from pnpseg.io.images import InputItem, Skipped, set_max_image_pixels


class RaySegmentJob(SegmentRun):
    """``pnpseg segment --engine ray``: the shared pre-flight and run frame, then the Ray Data
    pipeline. Its own knobs: ``workers`` (model actors), the Ray ``address`` and each
    worker's resources."""

    title = "pnpseg segment (ray)"
    label = "segment (ray)"
    eta = False

    def __init__(
        self,
        spec: JobSpec,
        inputs: Sequence[str | Path],
        out: str | Path,
        *,
        workers: int = 1,
        address: str | None = None,
        gpus_per_worker: float = 0.0,
        cpus_per_worker: float | None = None,
        max_image_pixels: int | None = None,
        batch_size: int | str = 1,
        console: Any = None,
        **run: Any,
    ):
        from rich.console import Console

        console = console or Console(stderr=True)
        if batch_size == "auto":
            console.print("--batch-size auto is not probed under --engine ray; using 1", highlight=False)
            batch_size = 1
        self.workers = max(1, int(workers))
        if gpus_per_worker < 0:
            raise PnpsegError(f"--gpus-per-worker must be ≥ 0, got {gpus_per_worker}")
        self.gpus, self.cpus, self.address = gpus_per_worker, cpus_per_worker, address
        set_max_image_pixels(max_image_pixels)  # checks it; the actors, which decode, set it too
        self.max_image_pixels = max_image_pixels
        self.roots: dict[str, str] = {}
        super().__init__(spec, inputs, out, batch_size=int(batch_size), console=console, **run)

    def discover(
        self, inputs: Sequence[str | Path], exclude: list[Any], root: Path | None
    ) -> tuple[list[InputItem], list[Skipped]]:
        found, skipped = discover_uris(inputs, exclude, root)
        self.roots = {str(item.path): root for item, root in found}
        return [item for item, _ in found], skipped

    def root_of(self, item: InputItem) -> str:
        return self.roots[str(item.path)]

    def prepare(self) -> dict[str, Any]:
        """Check the class source against the inputs (before Ray starts), then build the job
        once on a worker, as the actors will: its settings and parameters."""
        self.spec.class_source_for(self.items)
        self.ray = init_ray(self.address)
        task = self.ray.remote(num_cpus=min(1.0, self._cluster_cpus()), num_gpus=self.gpus)(actors.describe)
        status, value = self.ray.get(task.remote(self.spec))
        if status != "ok":
            raise PnpsegError(value)
        settings, self.params = value
        return settings

    def _cluster_cpus(self) -> float:
        return float(self.ray.cluster_resources().get("CPU", 1.0))

    def describe(self, todo: list[InputItem]) -> str:
        actor_cpus, _ = self.cpu_shares()
        return (
            f"{self.layout.settings['adapter']} on Ray: {self.workers} worker(s) × ({actor_cpus:g} CPU, "
            f"{self.gpus:g} GPU), blur/CRF in CPU tasks"
        )

    def segment(self, todo: list[InputItem], record: Callable[[dict[str, Any]], None]) -> None:
        """Stream the records back (a retried block's repeats dropped) in input order."""
        if not todo:
            return
        seen: set[str] = set()
        for row in self._pipeline(todo, *self.cpu_shares()).iter_rows():
            one = json.loads(row["record"])
            if one["key"] in seen:  # a retried block: its first record stands
                continue
            seen.add(one["key"])
            record(one)

    def _pipeline(self, todo: list[InputItem], actor_cpus: float, finish_cpus: float) -> Any:
        ray = self.ray
        rows = [
            {
                "idx": i,
                "input": str(item.path),
                "root": self.root_of(item),
                "relative": item.relative.as_posix(),
            }
            for i, item in enumerate(todo)
        ]
        blocks = max(1, min(len(rows), 4 * self.workers, math.ceil(len(rows) / int(self.batch_size))))
        blocks = max(blocks, min(len(rows), math.ceil(len(rows) / 64)))  # ≤ ~64 images per block
        ds = ray.data.from_items(rows, override_num_blocks=blocks)
        # Ray Data restarts a dead actor and retries its batch (max_restarts / max_task_retries -1).
        ds = ds.map_batches(
            actors.SegmentActor,
            fn_constructor_kwargs={"spec": self.spec, "layout": self.layout, "max_image_pixels": self.max_image_pixels},
            batch_size=int(self.batch_size),
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
