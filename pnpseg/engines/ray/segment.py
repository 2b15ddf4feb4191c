"""``pnpseg segment --engine ray``: actors for the model passes, CPU tasks for step 4 and writing."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from pnpseg.engines.ray.cluster import init_ray
from pnpseg.engines.ray.storage import PARTS, Store, discover_uris, load_item, store_for
from pnpseg.errors import PnpsegError
from pnpseg.io.images import InputItem
from pnpseg.io.outputs import (
    class_fractions,
    encode_label_png,
    manifest_line,
    parse_manifest,
)
from pnpseg.io.overlay import render_overlay, save_overlay
from pnpseg.method.params import DEFAULT_ADAPTER


@dataclass
class SegmentConfig:
    """Everything a worker needs to rebuild the driver's job (picklable)."""

    classes: list[str]
    out: str
    adapter: str
    model: str | None
    device: str
    params: dict[str, Any]
    precision: str
    class_source: str
    viz: bool = False
    settings: dict[str, Any] | None = None  # filled in by the driver after describe()


class _Records:
    """Stands in for the local engine's Manifest inside a worker: collects the records."""

    def __init__(self) -> None:
        self.records: list[dict] = []

    def append(self, record: dict) -> None:
        self.records.append(record)


class _Handoff:
    """Stands in for the local engine's Finisher: keeps what step 4 would be given."""

    def __init__(self) -> None:
        self.submitted: list[tuple[Any, Any, list[str], Any]] = []

    def submit(self, image: Any, saliency: Any, names: list[str], tag: Any) -> None:
        self.submitted.append((image, saliency, list(names), tag))


def _worker_job(config: SegmentConfig):
    """The local engine's :class:`~pnpseg.engines.local.SegmentJob`, without inputs or on-disk state:
    it builds the Segmenter, the class source and the settings exactly as a local run does."""
    from rich.console import Console

    from pnpseg.engines.local import SegmentJob

    with tempfile.TemporaryDirectory(prefix="pnpseg-worker-") as scratch:
        job = SegmentJob(
            [],
            config.classes,
            Path(scratch),
            adapter=config.adapter,
            model=config.model,
            device=config.device,
            params=config.params,
            overwrite=True,
            console=Console(file=io.StringIO()),
            precision=config.precision,
            class_source=config.class_source,
        )
    job.manifest = _Records()  # type: ignore[assignment]
    return job


def describe(config: SegmentConfig) -> tuple[str, Any]:
    """Build the job once (as a worker would) and return its settings, or the error message."""
    try:
        return "ok", _worker_job(config).settings
    except PnpsegError as error:
        return "error", str(error)


class SegmentActor:
    """One Segmenter per actor: decoding, class source and model passes for a batch of paths."""

    def __init__(self, config: SegmentConfig, fault: tuple[int, str] | None = None):
        self.config, self.job = config, _worker_job(config)
        self.job.settings = config.settings or self.job.settings
        self.fault, self.seen = fault, 0

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from pnpseg.engines.local import Summary

        rows = list(
            zip(batch["idx"].tolist(), batch["input"].tolist(), batch["root"].tolist(), batch["relative"].tolist())
        )
        items = {idx: (InputItem(Path(inp) if not root else inp, Path(rel)), root) for idx, inp, root, rel in rows}  # type: ignore[arg-type]
        self._maybe_die(len(rows))
        job, handoff = self.job, _Handoff()
        job.manifest.records.clear()
        loaded = [(item, load_item(item, root)) for item, root in items.values()]
        job._run_batch([item for item, _ in loaded], Summary(), handoff, loaded)
        payloads: dict[str, bytes] = {rec["input"]: pickle.dumps({"record": rec}) for rec in job.manifest.records}
        for image, saliency, names, (item, _, seconds) in handoff.submitted:
            proposal = job._proposals.pop(str(item.path), None)
            payloads[str(item.path)] = pickle.dumps(
                {
                    "image": image,
                    "saliency": saliency.detach().float().cpu(),
                    "names": names,
                    "seconds": seconds,
                    "proposed": proposal.classes if proposal is not None else None,
                    "class_source": proposal.record() if proposal is not None else {"name": job.class_source.name},
                    "params": job.segmenter.params,
                }
            )
        return {
            "idx": np.array([idx for idx, *_ in rows], dtype=np.int64),
            "input": np.array([inp for _, inp, _, _ in rows], dtype=object),
            "relative": np.array([rel for *_, rel in rows], dtype=object),
            "payload": np.array([payloads[str(items[idx][0].path)] for idx, *_ in rows], dtype=object),
        }

    def _maybe_die(self, count: int) -> None:
        """Fault injection for the tests: the first actor to pass ``after`` images dies, once."""
        self.seen += count
        if self.fault is not None and self.seen > self.fault[0]:
            try:
                fd = os.open(self.fault[1], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.close(fd)
            os._exit(1)


_CHAINS: dict[str, Any] = {}


def finish_and_write(batch: dict[str, np.ndarray], config: SegmentConfig) -> dict[str, np.ndarray]:
    """CPU task: step 4 (blur, CRF, argmax), outputs and the block's manifest part file."""
    import torch

    from pnpseg.engines.local import manifest_record, to_vocabulary
    from pnpseg.engines.parallel import _finish_labels
    from pnpseg.method.postprocess import build_chain

    torch.set_num_threads(1)
    out = store_for(config.out)
    records = []
    for inp, rel, payload in zip(batch["input"].tolist(), batch["relative"].tolist(), batch["payload"].tolist()):
        data = pickle.loads(payload)
        if "record" in data:
            records.append(data["record"])
            continue
        params, image = data["params"], data["image"]
        key = json.dumps(params.to_dict(), sort_keys=True, default=str)
        chain = _CHAINS.setdefault(key, build_chain(params.postprocess))
        common = (inp, None, config.settings, data["class_source"])
        try:
            labels, seconds, _ = _finish_labels(image, data["saliency"], data["names"], params, chain)
        except PnpsegError:
            raise  # a setup problem, as in the local engine
        except Exception as error:
            records.append(manifest_record(*common, error=f"{type(error).__name__}: {error}"))
            continue
        labels = to_vocabulary(labels, data["proposed"], config.classes)
        png = PurePosixPath(rel).with_suffix(".png").as_posix()
        try:
            out.write_bytes(png, encode_label_png(labels))
            if config.viz:
                _write_overlay(
                    out, PurePosixPath("overlays", rel).with_suffix(".png").as_posix(), image, labels, config.classes
                )
        except OSError as error:
            records.append(manifest_record(*common, error=f"cannot write output: {error}"))
            continue
        records.append(
            manifest_record(
                inp,
                out.uri(png),
                config.settings,
                data["class_source"],
                image=image,
                fractions=class_fractions(labels, config.classes),
                seconds=data["seconds"] + seconds,
            )
        )
    lines = b"".join(manifest_line(r) for r in records)
    name = hashlib.sha1("\n".join(r["input"] for r in records).encode()).hexdigest()[:16]
    out.write_bytes(f"{PARTS}/{name}.jsonl", lines)
    return {"idx": batch["idx"], "record": np.array([json.dumps(r, ensure_ascii=False) for r in records], dtype=object)}


def _write_overlay(out: Store, rel: str, image: Any, labels: np.ndarray, classes: list[str]) -> None:
    if out.local is not None:
        save_overlay(out.local / rel, image, labels, classes)
        return
    buffer = io.BytesIO()
    render_overlay(image, labels, classes).save(buffer, format="PNG")
    out.write_bytes(rel, buffer.getvalue())


# -- the driver -----------------------------------------------------------------------------


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
        address: str | None = None,
        gpus_per_worker: float = 0.0,
        cpus_per_worker: float | None = None,
        fault: tuple[int, str] | None = None,
    ):
        from rich.console import Console

        from pnpseg.engines.local import check_previous_classes, class_table
        from pnpseg.sources.class_sources import build_class_source

        self.console = console or Console(stderr=True)
        self.classes, self.overwrite, self.fault = classes, overwrite, fault
        if batch_size == "auto":
            self.console.print("--batch-size auto is not probed under --engine ray; using 1", highlight=False)
            batch_size = 1
        self.batch_size, self.workers = int(batch_size), max(1, int(workers))
        if gpus_per_worker < 0:
            raise PnpsegError(f"--gpus-per-worker must be ≥ 0, got {gpus_per_worker}")
        self.gpus, self.cpus = gpus_per_worker, cpus_per_worker
        self.items, self.not_images = discover_uris(inputs)
        self.out = Store(out)
        self._guard_inputs()
        self.table = class_table(classes)
        if not overwrite:
            check_previous_classes(self.out.read_bytes("classes.json"), classes, str(out), self.out.uri("classes.json"))
        build_class_source(class_source, classes)  # a bad spec fails here, before Ray starts
        self.config = SegmentConfig(
            list(classes), self.out.location, adapter, model, device, dict(params or {}), precision, class_source, viz
        )
        self.ray = init_ray(address)
        task = self.ray.remote(num_cpus=min(1.0, self._cluster_cpus()), num_gpus=self.gpus)(describe)
        status, value = self.ray.get(task.remote(self.config))
        if status != "ok":
            raise PnpsegError(value)
        self.settings = self.config.settings = value
        self.records = self._read_manifest()
        if not overwrite:
            wanted = json.loads(json.dumps(self.settings))
            if any(r.get("status") == "ok" and r.get("settings") != wanted for r in self.records.values()):
                raise PnpsegError(
                    f"{out} holds results made with other settings (see "
                    f"{self.out.uri('manifest.jsonl')}); use --overwrite or another --out"
                )

    def _guard_inputs(self) -> None:
        if self.out.local is None:
            return
        inputs = {Path(item.path).resolve() for item, root in self.items if not root}
        for item, root in self.items:
            target = self.out.local / item.output_relative(".png")
            if not root and target.resolve() in inputs:
                raise PnpsegError(f"output {target} would overwrite an input image; choose another --out")

    def _cluster_cpus(self) -> float:
        return float(self.ray.cluster_resources().get("CPU", 1.0))

    # -- manifest -----------------------------------------------------------------------
    def _read_manifest(self) -> dict[str, dict]:
        """The manifest's records, after merging the part files an interrupted run left."""
        records = parse_manifest(self.out.read_bytes("manifest.jsonl") or b"")
        parts = [rel for rel in self.out.files(PARTS) if rel.endswith(".jsonl")]
        if not parts:
            return records
        order = {str(item.path): i for i, (item, _) in enumerate(self.items)}
        merged: dict[str, dict] = {}
        for rel in parts:
            for record in parse_manifest(self.out.read_bytes(rel) or b"").values():
                merged[record["input"]] = record
        new = [r for r in merged.values() if records.get(r["input"]) != r]
        new.sort(key=lambda r: order.get(r["input"], len(order)))
        self._append(new)
        self.out.delete_parts()
        return parse_manifest(self.out.read_bytes("manifest.jsonl") or b"")

    def _append(self, records: list[dict]) -> None:
        if not records:
            return
        if self.out.local is not None:
            from pnpseg.io.outputs import Manifest

            manifest = Manifest(self.out.local / "manifest.jsonl")
            for record in records:
                manifest.append(record)
            return
        old = self.out.read_bytes("manifest.jsonl") or b""
        if old and not old.endswith(b"\n"):
            old += b"\n"
        self.out.write_bytes("manifest.jsonl", old + b"".join(manifest_line(r) for r in records))

    def _is_done(self, item: InputItem, existing: set[str]) -> bool:
        record = self.records.get(str(item.path))
        return (
            record is not None and record.get("status") == "ok" and item.output_relative(".png").as_posix() in existing
        )

    # -- running ------------------------------------------------------------------------
    def run(self):
        from pnpseg.engines.local import Summary, _remove_stale_temp_files
        from pnpseg.io.outputs import write_json

        ray = self.ray
        summary = Summary(not_images=len(self.not_images))
        for path in self.not_images:
            self.console.print(f"[dim]skipping non-image file {path}[/]", highlight=False, soft_wrap=True)
        self.out.mkdir()
        if self.out.local is not None:
            _remove_stale_temp_files(self.out.local)
            write_json(self.out.local / "classes.json", self.table)
        else:
            self.out.write_bytes("classes.json", (json.dumps(self.table, indent=2, ensure_ascii=False) + "\n").encode())
        existing = set() if self.overwrite or not self.records else set(self.out.files())  # one listing, not N lookups
        todo = [(item, root) for item, root in self.items if self.overwrite or not self._is_done(item, existing)]
        summary.skipped_done = len(self.items) - len(todo)
        actor_cpus, finish_cpus = self._cpu_shares()
        self.console.print(
            f"Segmenting {len(todo)} image(s) into {len(self.classes)} classes with {self.settings['adapter']} on Ray: "
            f"{self.workers} worker(s) × ({actor_cpus:g} CPU, {self.gpus:g} GPU), blur/CRF in CPU tasks"
            + (f"; {summary.skipped_done} already done" if summary.skipped_done else ""),
            highlight=False,
            soft_wrap=True,
        )
        start = time.perf_counter()
        if todo:
            rows = [
                {"idx": i, "input": str(item.path), "root": root, "relative": item.relative.as_posix()}
                for i, (item, root) in enumerate(todo)
            ]
            blocks = max(1, min(len(rows), 4 * self.workers, math.ceil(len(rows) / self.batch_size)))
            blocks = max(blocks, min(len(rows), math.ceil(len(rows) / 64)))  # ≤ ~64 images per block
            ds = ray.data.from_items(rows, override_num_blocks=blocks)
            # Ray Data restarts a dead actor and retries its batch (max_restarts / max_task_retries -1).
            ds = ds.map_batches(
                SegmentActor,
                fn_constructor_kwargs={"config": self.config, "fault": self.fault},
                batch_size=self.batch_size,
                compute=ray.data.ActorPoolStrategy(size=self.workers),
                num_cpus=actor_cpus,
                num_gpus=self.gpus or None,
            )
            ds = ds.map_batches(
                finish_and_write, fn_kwargs={"config": self.config}, batch_size=None, num_cpus=finish_cpus
            )
            self._collect(ds, summary, len(todo), start)
        self.out.delete_parts()
        summary.seconds = time.perf_counter() - start
        self._report(summary)
        return summary

    def _cpu_shares(self) -> tuple[float, float]:
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

    def _collect(self, ds: Any, summary: Any, total: int, start: float) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        seen: set[str] = set()
        pending: list[dict] = []
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=self.console,
        ) as progress:
            task = progress.add_task("segment (ray)", total=total, rate="")
            try:
                for row in ds.iter_rows():
                    record = json.loads(row["record"])
                    if record["input"] in seen:  # a retried block: its first record stands
                        continue
                    seen.add(record["input"])
                    ok = record["status"] == "ok"
                    summary.done += ok
                    summary.failed += not ok
                    if not ok:
                        summary.errors.append((record["input"], record["error"]))
                    self.records[record["input"]] = record
                    if self.out.local is not None:
                        self._append([record])
                    else:
                        pending.append(record)
                    rate = len(seen) / max(time.perf_counter() - start, 1e-9)
                    progress.update(task, advance=1, rate=f"{rate:.2f} img/s")
            finally:
                self._append(pending)  # remote output: the manifest is rewritten once, at the end

    def _report(self, summary: Any) -> None:
        from pnpseg.engines.local import report

        report(self.console, summary, "pnpseg segment (ray)", self.out.location, self.out.uri("manifest.jsonl"))
