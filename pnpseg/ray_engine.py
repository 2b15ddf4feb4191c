"""``pnpseg segment --engine ray`` and ``pnpseg eval --engine ray``: the same pipeline on Ray Data.

Imported only when ``--engine ray`` is chosen; ``ray`` itself is imported inside the
functions below, so this module imports (and the core works) without the ``ray`` extra.

Segment, as a Ray Data pipeline over the image paths still to do::

    from_items(paths) ──map_batches(SegmentActor, concurrency=N, num_gpus=F)──▶ saliency
                     ──map_batches(finish_and_write, tasks)──────────────────▶ manifest records

* :class:`SegmentActor` holds one :class:`~pnpseg.segmenter.Segmenter` per actor (the model
  is loaded once, in ``__init__``) and runs the local engine's own batch step
  (:meth:`pnpseg.run.SegmentJob._run_batch`: decoding, class source, model passes, per-image
  error isolation), handing each image's saliency maps on instead of blurring them.
* :func:`finish_and_write` is a plain CPU task: step 4 (:func:`pnpseg.segmenter.finish`,
  i.e. blur and CRF), then the label PNG (and overlay) written straight to the output file
  system atomically (temp name + rename), then the manifest records of its block written as
  one part file ``OUT/.pnpseg-parts/<block>.jsonl`` (atomically too).
* The driver is the manifest's single writer: it appends the records the pipeline streams
  back (in input order, deduplicated by input) to ``OUT/manifest.jsonl`` and removes the
  part files at the end. If the driver dies, the next run first merges the part files left
  behind, so nothing a worker finished is redone. Resume skips done items before anything is
  scheduled.

Paths: plain paths are local (the local engine's writers are used, so outputs are
byte-identical); ``scheme://...`` URIs go through ``pyarrow.fs`` (``file://``, ``s3://``,
``gs://``, ``hdfs://``, ...) or, for schemes pyarrow does not know, fsspec.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
import secrets
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .errors import ImageError, PnpsegError
from .evaluate import Evaluation
from .images import InputItem, discover, is_image_name, load_image
from .outputs import (atomic_write_bytes, class_fractions, encode_label_png, manifest_line, parse_manifest,
                      render_overlay, save_overlay)  # fmt: skip

PARTS = ".pnpseg-parts"


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise PnpsegError("--engine ray needs Ray Data: pip install 'pnpseg[ray]'") from None
    return ray


def init_ray(address: str | None = None, *, quiet: bool = True) -> Any:
    """Connect to ``address`` (``auto``, ``HOST:PORT``, ``ray://...``) or start a local instance.

    An already initialised Ray (a notebook, the tests) is reused as it is.
    """
    ray = _import_ray()
    if not ray.is_initialized():
        starts_local = address is None and not os.environ.get("RAY_ADDRESS")
        kwargs: dict[str, Any] = {"include_dashboard": False} if starts_local else {}
        ray.init(address=address, log_to_driver=not quiet, **kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # records stream back in input order
    ctx.enable_progress_bars = False  # the driver shows its own
    ctx.print_on_execution_start = False
    return ray


# -- file systems ---------------------------------------------------------------------------


def _has_scheme(location: str) -> bool:
    head, sep, _ = str(location).partition("://")
    return bool(sep) and head.isidentifier() and len(head) > 1  # not C:\ on Windows


def _filesystem(uri: str) -> tuple[Any, str, str]:
    """``uri`` → (pyarrow file system, path in it, URI prefix so that prefix + path == uri)."""
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except Exception:
        try:
            import fsspec
        except ImportError:
            raise PnpsegError(f"no file system for {uri}: pyarrow does not know it and fsspec is not installed") from None
        inner, path = fsspec.core.url_to_fs(uri)
        fs = pafs.PyFileSystem(pafs.FSSpecHandler(inner))
    stripped = uri.rstrip("/")
    path = path.rstrip("/") or path
    prefix = stripped[: len(stripped) - len(path)] if stripped.endswith(path) else uri.partition("://")[0] + "://"
    return fs, path, prefix


class Store:
    """A folder on the local disk (``pnpseg.outputs`` writers) or on a pyarrow/fsspec file system."""

    def __init__(self, location: str | Path):
        self.location = str(location)
        if _has_scheme(self.location):
            self.local: Path | None = None
            self.fs, self.root, self.prefix = _filesystem(self.location)
        else:
            self.local, self.fs, self.root, self.prefix = Path(self.location), None, str(location), ""

    def uri(self, rel: str) -> str:
        """What the manifest records for ``rel``: a local path, or a URI."""
        if self.local is not None:
            return str(self.local / rel)
        return self.prefix + self._path(rel)

    def _path(self, rel: str) -> str:
        return f"{self.root.rstrip('/')}/{rel}" if rel else self.root

    def read_bytes(self, rel: str) -> bytes | None:
        """The file's bytes, or None if it does not exist."""
        try:
            if self.local is not None:
                return (self.local / rel).read_bytes()
            with self.fs.open_input_stream(self._path(rel)) as f:
                return f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except OSError as error:
            if "not found" in str(error).lower() or "does not exist" in str(error).lower():
                return None
            raise

    def write_bytes(self, rel: str, data: bytes) -> None:
        """All-or-nothing: a hidden temp file beside the target, then a rename over it."""
        if self.local is not None:
            atomic_write_bytes(self.local / rel, data)
            return
        final = PurePosixPath(self._path(rel))
        tmp = str(final.with_name(f".{final.name}.tmp-{secrets.token_hex(4)}{final.suffix}"))
        self.fs.create_dir(str(final.parent), recursive=True)
        try:
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, str(final))
        except BaseException:
            try:
                self.fs.delete_file(tmp)
            except Exception:
                pass
            raise

    def files(self, rel: str = "") -> list[str]:
        """Relative paths of the files under ``rel`` (recursively), sorted."""
        if self.local is not None:
            base = self.local / rel
            return sorted(p.relative_to(self.local).as_posix() for p in base.rglob("*") if p.is_file()) if base.is_dir() else []
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(self._path(rel), recursive=True, allow_not_found=True)
        root = self.root.rstrip("/") + "/"
        infos = self.fs.get_file_info(selector)
        return sorted(i.path[len(root):] for i in infos if i.type == pafs.FileType.File and i.path.startswith(root))

    def delete(self, rel: str) -> None:
        if self.local is not None:
            (self.local / rel).unlink(missing_ok=True)
        else:
            try:
                self.fs.delete_file(self._path(rel))
            except FileNotFoundError:
                pass

    def delete_parts(self) -> None:
        """Remove the manifest part files (merged by now) and their folder."""
        if self.local is not None:
            for path in sorted((self.local / PARTS).glob("*.jsonl")):
                path.unlink(missing_ok=True)
            try:
                (self.local / PARTS).rmdir()
            except OSError:
                pass
        else:
            try:
                self.fs.delete_dir(self._path(PARTS))
            except (FileNotFoundError, OSError):
                pass

    def mkdir(self) -> None:
        if self.local is not None:
            self.local.mkdir(parents=True, exist_ok=True)
        else:
            self.fs.create_dir(self.root, recursive=True)


_STORES: dict[str, Store] = {}


def _store(location: str) -> Store:
    """One Store (file-system client) per location and process."""
    if location not in _STORES:
        _STORES[location] = Store(location)
    return _STORES[location]


def discover_uris(inputs: Sequence[str | Path]) -> tuple[list[tuple[InputItem, str]], list[str]]:
    """:func:`pnpseg.images.discover` for paths and URIs: ``[(item, root location)]`` and the
    non-image files. A URI item's ``path`` is the URI string; its root is the folder given
    (or the file's parent), from which workers open it."""
    found: list[tuple[InputItem, str]] = []
    skipped: list[str] = []
    local = [Path(p) for p in inputs if not _has_scheme(str(p))]
    if local:
        items, skip = discover(local)
        found += [(item, "") for item in items]
        skipped += [str(p) for p in skip]
    import pyarrow.fs as pafs

    for uri in (str(p) for p in inputs if _has_scheme(str(p))):
        store = Store(uri)
        info = store.fs.get_file_info(store.root)
        if info.type == pafs.FileType.Directory:
            for rel in store.files():
                if any(part.startswith(".") for part in rel.split("/")):
                    continue
                (found.append((InputItem(store.uri(rel), Path(rel)), uri)) if is_image_name(Path(rel))  # type: ignore[arg-type]
                 else skipped.append(store.uri(rel)))  # fmt: skip
        elif info.type == pafs.FileType.File:
            name = PurePosixPath(store.root).name
            parent = uri.rstrip("/")[: -len(name)].rstrip("/")
            if is_image_name(Path(name)):
                found.append((InputItem(uri, Path(name)), parent))  # type: ignore[arg-type]
            else:
                skipped.append(uri)
        else:
            raise PnpsegError(f"input not found: {uri}")
    unique, seen, by_output = [], set(), {}
    for item, root in found:
        key = str(item.path) if root else str(Path(item.path).resolve())
        if key in seen:
            continue
        seen.add(key)
        unique.append((item, root))
        by_output.setdefault(item.relative.with_suffix("").as_posix().casefold(), []).append(item)
    clashes = [group for group in by_output.values() if len(group) > 1]
    if clashes:
        shown = "; ".join(" and ".join(str(i.path) for i in group) for group in clashes[:5])
        raise PnpsegError(f"{len(clashes)} output name clash(es), these inputs would write the same output file: "
                          f"{shown}; rename them or process them separately")  # fmt: skip
    return unique, skipped


def _load(item: InputItem, root: str) -> Any:
    """The decoded image, or the ImageError to record (as :func:`pnpseg.images.load_image`)."""
    try:
        if not root:
            return load_image(Path(item.path))
        store = _store(root)
        data = store.read_bytes(item.relative.as_posix())
        if data is None:
            return ImageError(f"{item.path}: file not found")
        with tempfile.TemporaryDirectory(prefix="pnpseg-") as tmp:
            local = Path(tmp) / f"image{item.relative.suffix}"
            local.write_bytes(data)
            try:
                return load_image(local)
            except ImageError as error:
                return ImageError(str(error).replace(str(local), str(item.path)))
    except ImageError as error:
        return error
    except OSError as error:
        return ImageError(f"{item.path}: cannot read ({error})")


# -- the worker side ------------------------------------------------------------------------


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
    """The local engine's :class:`~pnpseg.run.SegmentJob`, without inputs or on-disk state:
    it builds the Segmenter, the class source and the settings exactly as a local run does."""
    from rich.console import Console

    from .run import SegmentJob

    with tempfile.TemporaryDirectory(prefix="pnpseg-worker-") as scratch:
        job = SegmentJob([], config.classes, Path(scratch), adapter=config.adapter, model=config.model,
                         device=config.device, params=config.params, overwrite=True,
                         console=Console(file=io.StringIO()), precision=config.precision,
                         class_source=config.class_source)  # fmt: skip
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
        from .run import Summary

        rows = list(zip(batch["idx"].tolist(), batch["input"].tolist(), batch["root"].tolist(), batch["relative"].tolist()))
        items = {idx: (InputItem(Path(inp) if not root else inp, Path(rel)), root) for idx, inp, root, rel in rows}  # type: ignore[arg-type]
        self._maybe_die(len(rows))
        job, handoff = self.job, _Handoff()
        job.manifest.records.clear()
        loaded = [(item, _load(item, root)) for item, root in items.values()]
        job._run_batch([item for item, _ in loaded], Summary(), handoff, loaded)
        payloads: dict[str, bytes] = {rec["input"]: pickle.dumps({"record": rec}) for rec in job.manifest.records}
        for image, saliency, names, (item, _, seconds) in handoff.submitted:
            proposal = job._proposals.pop(str(item.path), None)
            payloads[str(item.path)] = pickle.dumps({
                "image": image, "saliency": saliency.detach().float().cpu(), "names": names, "seconds": seconds,
                "proposed": proposal.classes if proposal is not None else None,
                "class_source": proposal.record() if proposal is not None else {"name": job.class_source.name},
                "params": job.segmenter.params,
            })  # fmt: skip
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

    from .parallel import _finish_labels
    from .postprocess import build_chain
    from .run import manifest_record, to_vocabulary

    torch.set_num_threads(1)
    out = _store(config.out)
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
                _write_overlay(out, PurePosixPath("overlays", rel).with_suffix(".jpg").as_posix(), image, labels,
                               config.classes)  # fmt: skip
        except OSError as error:
            records.append(manifest_record(*common, error=f"cannot write output: {error}"))
            continue
        records.append(manifest_record(inp, out.uri(png), config.settings, data["class_source"], image=image,
                                       fractions=class_fractions(labels, config.classes),
                                       seconds=data["seconds"] + seconds))  # fmt: skip
    lines = b"".join(manifest_line(r) for r in records)
    name = hashlib.sha1("\n".join(r["input"] for r in records).encode()).hexdigest()[:16]
    out.write_bytes(f"{PARTS}/{name}.jsonl", lines)
    return {"idx": batch["idx"], "record": np.array([json.dumps(r, ensure_ascii=False) for r in records], dtype=object)}


def _write_overlay(out: Store, rel: str, image: Any, labels: np.ndarray, classes: list[str]) -> None:
    if out.local is not None:
        save_overlay(out.local / rel, image, labels, classes)
        return
    buffer = io.BytesIO()
    render_overlay(image, labels, classes).save(buffer, format="JPEG", quality=90)
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
        adapter: str = "blip",
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

        from .class_sources import build_class_source
        from .run import class_table

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
            previous = self.out.read_bytes("classes.json")
            try:
                same = previous is None or json.loads(previous) == self.table
            except ValueError:
                same = False
            if not same:
                raise PnpsegError(f"{out} holds results for other classes ({self.out.uri('classes.json')}); "
                                  "use --overwrite or another --out")  # fmt: skip
        build_class_source(class_source, classes)  # a bad spec fails here, before Ray starts
        self.config = SegmentConfig(list(classes), self.out.location, adapter, model, device, dict(params or {}),
                                    precision, class_source, viz)  # fmt: skip
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
                raise PnpsegError(f"{out} holds results made with other settings (see "
                                  f"{self.out.uri('manifest.jsonl')}); use --overwrite or another --out")  # fmt: skip

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
            from .outputs import Manifest

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
        return record is not None and record.get("status") == "ok" and item.output_relative(".png").as_posix() in existing

    # -- running ------------------------------------------------------------------------
    def run(self):
        from .outputs import write_json
        from .run import Summary, _remove_stale_temp_files

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
            highlight=False, soft_wrap=True,
        )  # fmt: skip
        start = time.perf_counter()
        if todo:
            rows = [{"idx": i, "input": str(item.path), "root": root, "relative": item.relative.as_posix()}
                    for i, (item, root) in enumerate(todo)]  # fmt: skip
            blocks = max(1, min(len(rows), 4 * self.workers, math.ceil(len(rows) / self.batch_size)))
            blocks = max(blocks, min(len(rows), math.ceil(len(rows) / 64)))  # ≤ ~64 images per block
            ds = ray.data.from_items(rows, override_num_blocks=blocks)
            # Ray Data restarts a dead actor and retries its batch (max_restarts / max_task_retries -1).
            ds = ds.map_batches(SegmentActor, fn_constructor_kwargs={"config": self.config, "fault": self.fault},
                                batch_size=self.batch_size, compute=ray.data.ActorPoolStrategy(size=self.workers),
                                num_cpus=actor_cpus, num_gpus=self.gpus or None)  # fmt: skip
            ds = ds.map_batches(finish_and_write, fn_kwargs={"config": self.config}, batch_size=None,
                                num_cpus=finish_cpus)  # fmt: skip
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
        per = 1.0 if total - self.workers >= 1 else max(0.1, (total - 1) / self.workers) if total > 1 else total / (2 * self.workers)
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
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=self.console) as progress:  # fmt: skip
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
        from .run import report

        report(self.console, summary, "pnpseg segment (ray)", self.out.location, self.out.uri("manifest.jsonl"))


# -- eval -----------------------------------------------------------------------------------


@dataclass
class EvalConfig:
    """How a worker rebuilds the dataset and the predictor of ``pnpseg eval`` (picklable)."""

    data: Any  # the pnpseg.datasets.Dataset (shipped as is, so plugin datasets need no plugin on workers)
    out: str
    protocol: str
    predictions: str | None = None
    adapter: str = "blip"
    model: str | None = None
    preset: str | None = None
    device: str = "auto"
    params: dict[str, Any] | None = None
    predictor_options: dict[str, Any] | None = None
    save_predictions: bool = False
    settings: dict[str, Any] | None = None

    def build(self) -> tuple[Any, Any, dict[str, Any]]:
        """(dataset, predictor, settings) exactly as ``pnpseg eval`` builds them locally."""
        from .evaluate import ModelPredictor, PredictionFolder

        data = self.data
        if self.predictions is not None:
            predictor = PredictionFolder(Path(self.predictions), data)
            return data, predictor, predictor.settings()
        from .segmenter import Segmenter

        segmenter = Segmenter.from_pretrained(self.adapter, model=self.model, device=self.device, **(self.params or {}))
        predictor = ModelPredictor(segmenter, data, self.protocol, **(self.predictor_options or {}))
        return data, predictor, {"adapter": self.adapter, "model": self.model, "preset": self.preset,
                                 **predictor.settings()}  # fmt: skip


def describe_eval(config: EvalConfig) -> tuple[str, Any]:
    try:
        return "ok", config.build()[2]
    except PnpsegError as error:
        return "error", str(error)


class EvalActor:
    """One predictor (model) per actor; returns each sample's confusion matrix."""

    def __init__(self, config: EvalConfig):
        from .evaluate import Evaluation

        data, predictor, _ = config.build()
        self.job = Evaluation(data, predictor, Path(config.out), protocol=config.protocol, settings=config.settings)
        self.samples = {s.id: s for s in data.samples()}
        self.save = config.save_predictions

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from .metrics import confusion_matrix

        ids, matrices = [], []
        data = self.job.dataset
        for sample_id in batch["id"].tolist():
            sample = self.samples[sample_id]
            label = data.load_label(sample)
            pred = self.job.predictor(sample, label)
            matrices.append(confusion_matrix(label, pred, data.num_classes).astype(np.int64).tobytes())
            if self.save:
                self.job._save_prediction(sample, pred)
            ids.append(sample_id)
        return {"id": np.array(ids, dtype=object), "confusion": np.array(matrices, dtype=object)}


class RayEvaluation(Evaluation):
    """:class:`~pnpseg.evaluate.Evaluation` whose confusion matrices come from Ray actors."""

    def __init__(self, config: EvalConfig, *, workers: int = 1, gpus_per_worker: float = 0.0, **kwargs: Any):
        super().__init__(config.data, None, Path(config.out),  # type: ignore[arg-type]
                         protocol=config.protocol, settings=config.settings,
                         save_predictions=config.save_predictions, **kwargs)  # fmt: skip
        self.config, self.workers, self.gpus = config, max(1, int(workers)), gpus_per_worker

    def confusions(self, todo: list[Any]) -> Iterator[tuple[str, np.ndarray]]:
        if not todo:
            return
        ray = _import_ray()
        total = float(ray.cluster_resources().get("CPU", 1.0))
        cpus = 1.0 if total >= self.workers else max(0.1, total / self.workers)
        blocks = max(1, min(len(todo), 4 * self.workers))
        ds = ray.data.from_items([{"id": s.id} for s in todo], override_num_blocks=blocks)
        ds = ds.map_batches(EvalActor, fn_constructor_kwargs={"config": self.config}, batch_size=1,
                            compute=ray.data.ActorPoolStrategy(size=self.workers), num_cpus=cpus,
                            num_gpus=self.gpus or None)  # fmt: skip
        n = self.dataset.num_classes
        for row in ds.iter_rows():
            yield str(row["id"]), np.frombuffer(row["confusion"], dtype=np.int64).reshape(n, n + 1)


def ray_evaluate(config: EvalConfig, *, address: str | None = None, workers: int = 1, gpus_per_worker: float = 0.0,
                 **kwargs: Any) -> Any:
    """``pnpseg eval --engine ray``: per-image confusion matrices from the actors, summed (and
    checkpointed in the local engine's ``eval_state.npz``, so either engine resumes the other)
    by the driver. ``kwargs``: :class:`~pnpseg.evaluate.Evaluation`'s options."""
    ray = init_ray(address)
    task = ray.remote(num_cpus=min(1.0, float(ray.cluster_resources().get("CPU", 1.0))), num_gpus=gpus_per_worker)
    status, settings = ray.get(task(describe_eval).remote(config))
    if status != "ok":
        raise PnpsegError(settings)
    config.settings = settings
    return RayEvaluation(config, workers=workers, gpus_per_worker=gpus_per_worker, **kwargs).run()
