"""The record sink: the one output folder a job owns.

An output folder holds exactly one class table (``classes.json``) and one settings
fingerprint, which every manifest record carries. A run whose classes or settings differ
is refused, unless ``--overwrite`` is given, and then the folder is reset: the outputs that
records with another fingerprint name are deleted, so no mask of the old class table
survives next to the new ``classes.json``. A record with another fingerprint is never
counted as done. Records are keyed as :mod:`pnpseg.engines.common.layout` explains.

One run at a time: the folder is locked (``.pnpseg.lock``: an OS lock through ``filelock``,
released by the OS if the run is killed, or on S3 an object created with a conditional
write, see :mod:`pnpseg.io.locks`) for the whole run, and a second run is refused with one
line. Every write and delete goes through the folder's ledger (:mod:`pnpseg.io.ownership`):
the run claims every file it will write before it starts, refusing to replace a file it did
not write, and while it holds the lock it deletes the temp files a killed run left beside
its own files (their writer is dead, or it would hold the lock).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from pnpseg.engines.common.layout import OutputLayout
from pnpseg.errors import EnvironmentProblem, PnpsegError
from pnpseg.io.formats import FORMATS, Labelled, labelled, planned_files, render
from pnpseg.io.images import INPUT_DIGEST, InputItem, file_sha256, sha256
from pnpseg.io.jsontext import parse_json
from pnpseg.io.locks import hold
from pnpseg.io.outputs import Manifest, class_table, json_bytes, manifest_line, parse_manifest, record_key
from pnpseg.io.ownership import Ownership, Planned, contained
from pnpseg.io.store import Store, has_scheme, store_for

LOCK = ".pnpseg.lock"
MANIFEST = "manifest.jsonl"
CLASSES = "classes.json"
#: Folder where other writers of a run (Ray tasks) leave manifest records for the sink to merge.
PARTS = ".pnpseg-parts"


class OutputFolder:
    """``--out`` of one job: checks, lock, reset, cleanup, ``classes.json`` and the manifest."""

    def __init__(self, location: str | Path, classes: Iterable[str], *, overwrite: bool = False):
        self.store = Store(location)
        self.location = self.store.location
        self.classes = list(classes)
        self.table = class_table(self.classes)
        self.overwrite = overwrite
        self.manifest_uri = self.store.uri(MANIFEST)
        #: On a local disk the manifest is appended to in place; an object store's is rewritten.
        self.manifest = Manifest(self.store.local / MANIFEST) if self.store.local is not None else None
        self._records: dict[str, dict] | None = None  # an object store's manifest, read once
        self._existing: set[str] | None = None
        self._pending: list[dict] = []  # records for an object store, written at the end
        self.owned = Ownership(self.store)
        self._planned: list[Planned] = []
        self._inputs: list[str] = []

    # -- checks (cheap, read-only: before the model loads, and again under the lock) ---------
    def check_classes(self) -> None:
        """Refuse a folder whose ``classes.json`` names other classes (unless overwriting)."""
        if self.overwrite:
            return
        previous = self.store.read_bytes(CLASSES)
        if previous is None:
            return
        try:
            same = parse_json(previous) == self.table
        except ValueError:
            same = False
        if not same:
            raise PnpsegError(
                f"{self.location} holds results for other classes ({self.store.uri(CLASSES)}); "
                "use --overwrite (which resets the folder) or another --out"
            )

    def guard_inputs(self, items: Iterable[InputItem], viz: bool = False, formats: Sequence[str] = ()) -> None:
        """Refuse a job whose outputs would replace one of its own inputs or a file pnpseg did
        not write, leave the folder, or land twice on one path (an input ``overlays/x.jpg``
        beside ``x.jpg`` under ``--viz``). Writes nothing: the files are claimed in :meth:`open`."""
        items = list(items)
        self._inputs = [str(item.path) for item in items]
        self._planned = self.plan(items, viz, formats)
        self.owned.load(self._adopt)
        self.owned.check(self._planned, self._inputs)

    def plan(self, items: Sequence[InputItem], viz: bool, formats: Sequence[str]) -> list[Planned]:
        """Every file a run over ``items`` may write: the folder's own files, a label (and
        overlay) per input, and the ``--format`` documents of those and of the images the
        folder has already finished."""
        planned = [Planned(CLASSES, "folder", "class table"), Planned(MANIFEST, "folder", "manifest")]
        for item in items:
            planned.append(Planned(OutputLayout.label_file(item), "labels", f"label of input {item.path}"))
            if viz:
                planned.append(Planned(OutputLayout.overlay_file(item), "overlays", f"overlay of input {item.path}"))
        names = [OutputLayout.label_file(item)[: -len(".png")] for item in items]
        for record in self.records().values():
            rel = contained(record.get("file")) if record.get("status") == "ok" else None
            if rel is not None and rel.endswith(".png"):
                names.append(rel[: -len(".png")])
        names = list(dict.fromkeys(names))
        for name in formats:
            planned += [Planned(rel, name, f"--format {name} file") for rel in planned_files(name, names)]
        return planned

    def not_inputs(self) -> list[Path | str]:
        """What discovery must pass over: the output folder itself (when it lies inside an input
        folder) and, when it *is* an input folder, every file it holds that pnpseg wrote."""
        self.owned.load(self._adopt)
        local = self.store.local
        if local is None:
            return [self.store.uri(""), *(self.store.uri(rel) for rel in self.owned.files)]
        return [local, *(local / rel for rel in self.owned.files)]

    def _adopt(self) -> dict[str, str]:
        """What a folder written before the ledger existed owns: the files its manifest names
        (inside it), their overlays, and the documents of every format; nothing without a manifest."""
        if self.store.read_bytes(MANIFEST) is None:
            return {}
        owned = {CLASSES: "folder", MANIFEST: "folder"}
        names = []
        for record in self.records().values():
            rel = self._file(record)
            if rel is not None:
                owned[rel] = "labels"
                owned[PurePosixPath("overlays", rel).as_posix()] = "overlays"
                names.append(rel.removesuffix(".png"))
        for name in FORMATS:
            owned.update({rel: name for rel in planned_files(name, names)})
        return owned

    def check_fingerprint(self, fingerprint: str) -> None:
        """Refuse a folder holding outputs made with other classes or settings (unless overwriting).
        A folder that an ``--overwrite`` run reset for ``fingerprint`` (the ledger notes it) is
        this run's, even if that run was killed between writing a label and its record."""
        if self.overwrite:
            return
        self.owned.load(self._adopt)
        if self.owned.notes.get("fingerprint") != fingerprint and self._stale(fingerprint):
            raise PnpsegError(
                f"{self.location} holds results made with other settings (see {self.manifest_uri}); "
                "use --overwrite (which resets the folder) or another --out"
            )

    def _stale(self, fingerprint: str) -> list[str]:
        """The files (inside the folder) of ok records with another fingerprint that still exist."""
        found = []
        for record in self.records().values():
            if record.get("status") == "ok" and record.get("fingerprint") != fingerprint:
                rel = self._file(record)
                if rel is not None and self._exists(rel):
                    found.append(rel)
        return found

    def _exists(self, rel: str) -> bool:
        if self.store.local is not None:
            return (self.store.local / rel).exists()
        if self._existing is None:
            self._existing = set(self.store.files())  # one listing, not N lookups
        return rel in self._existing

    def layout(self, settings: Mapping[str, Any], fingerprint: str, viz: bool = False) -> OutputLayout:
        return OutputLayout(self.location, tuple(self.classes), dict(settings), fingerprint, viz)

    # -- the run ----------------------------------------------------------------------------
    @contextmanager
    def open(self, fingerprint: str, order: Sequence[str] = ()) -> Iterator[OutputFolder]:
        """Hold the folder for a run: lock it, merge the record parts a killed run left (in
        the input ``order`` of their keys), check it again, reset it if ``--overwrite``
        changes its classes or settings, remove dead runs' temp files, write ``classes.json``.
        On leaving, records not yet written are written; after a complete run the parts are removed."""
        self.store.mkdir()
        with self._lock():
            self._records = None  # read again, under the lock
            self._merge_parts(order)
            self.owned.load(self._adopt)
            self.check_classes()
            self.check_fingerprint(fingerprint)
            self.owned.check(self._planned, self._inputs)  # again, under the lock: before any delete
            if self.overwrite:
                self._reset(fingerprint)
            self.owned.claim(self._planned, self._inputs)
            self.owned.sweep_temp_files([PARTS])
            self.owned.write(CLASSES, json_bytes(self.table))
            if self.owned.notes.get("fingerprint") != fingerprint:
                self.owned.notes["fingerprint"] = fingerprint
                self.owned.save()
            try:
                yield self
            finally:
                self.flush()  # what was collected, even if the run stops early
            self.owned.delete_scratch(PARTS)  # only after a complete run: parts hold what was not

    def _merge_parts(self, order: Sequence[str]) -> None:
        """Records that other writers of a killed run finished but the sink never appended."""
        parts = [rel for rel in self.store.files(PARTS) if rel.endswith(".jsonl")]
        if not parts:
            return
        records = self.records()
        merged: dict[str, dict] = {}
        for rel in parts:
            merged.update(parse_manifest(self.store.read_bytes(rel) or b""))
        position = {key: i for i, key in enumerate(order)}
        new = sorted(
            (r for key, r in merged.items() if records.get(key) != r),
            key=lambda r: position.get(record_key(r), len(position)),
        )
        self.append(new)
        self.flush()
        self.owned.delete_scratch(PARTS)

    def _lock(self) -> AbstractContextManager[None]:
        return hold(self.store, LOCK)  # an OS lock, or on S3 a conditional write (pnpseg.io.locks)

    def _reset(self, fingerprint: str) -> None:
        """``--overwrite`` with other classes or settings: delete the outputs (label PNGs and
        overlays) of records with another fingerprint, and every ``--format`` document (they
        describe the old table). The manifest keeps their lines, which no longer count: their
        files are gone and their fingerprint differs. Only files the ledger holds are deleted."""
        stale = self._stale(fingerprint)
        if not stale and self.owned.notes.get("fingerprint") in (None, fingerprint):
            return
        self.owned.delete([*stale, *(PurePosixPath("overlays", rel).as_posix() for rel in stale)])
        self.owned.prune(name for name in FORMATS if name != "png")
        self._existing = None

    def _file(self, record: Mapping[str, Any]) -> str | None:
        """The label PNG a record names, inside this folder, or None. Older records name it
        only by ``output``; a ``file`` outside the folder is ignored, never followed."""
        if record.get("file") is not None:
            return contained(record.get("file"))
        return self._relative(record.get("output"))

    def _relative(self, output: Any) -> str | None:
        """An output named by a record → its path inside this folder, or None if it is elsewhere."""
        if not isinstance(output, str):
            return None
        if self.store.local is None:
            base = self.store.uri("").rstrip("/") + "/"
            return output[len(base) :] if output.startswith(base) else None
        root = self.store.local.resolve()
        try:
            return contained(Path(output).resolve().relative_to(root).as_posix())
        except (ValueError, OSError):
            return None

    # -- records ----------------------------------------------------------------------------
    def records(self) -> dict[str, dict]:
        """``{key: latest record}`` of the manifest."""
        if self.manifest is not None:
            return self.manifest.records()
        if self._records is None:
            self._records = parse_manifest(self.store.read_bytes(MANIFEST) or b"")
        return self._records

    def is_done(self, layout: OutputLayout, item: InputItem, root: str = "") -> bool:
        """True if ``item``'s latest record is ok, carries ``layout``'s fingerprint, its label
        PNG exists, and the input's content is the one labelled (its SHA-256 matches the record's:
        an input replaced in place is redone). ``root``: a URI input's folder, as discovered."""
        key = layout.key(item)
        record = self.manifest.latest(key) if self.manifest is not None else self.records().get(key)
        if self.manifest is not None and self.store.local is not None:
            wanted = {"fingerprint": layout.fingerprint}
            done = self.manifest.is_done(key, self.store.local / layout.label_file(item), require=wanted)
        else:
            done = (
                record is not None
                and record.get("status") == "ok"
                and record.get("fingerprint") == layout.fingerprint
                and self._exists(layout.label_file(item))
            )
        if not done:
            return False
        recorded = (record or {}).get(INPUT_DIGEST)
        return isinstance(recorded, str) and recorded == self._digest(item, root)

    @staticmethod
    def _digest(item: InputItem, root: str) -> str | None:
        try:
            if not root:
                return file_sha256(Path(item.path))
            data = store_for(root).read_bytes(item.relative.as_posix())
        except OSError:
            return None
        return sha256(data) if data is not None else None

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Add records to the manifest: on a local disk durably, at once, line by line; on an
        object store (no appends there) at :meth:`flush`, which rewrites it once. A local
        append that fails (a full disk) leaves the manifest whole and stops the run
        (:class:`~pnpseg.errors.EnvironmentProblem`)."""
        rows = [dict(r) for r in records]
        if self.manifest is not None:
            for row in rows:
                try:
                    self.manifest.append(row)
                except OSError as problem:
                    raise EnvironmentProblem(
                        f"stopped: cannot write {self.manifest.path}: {problem.strerror or problem}"
                    ) from None
            return
        self._pending += rows
        if self._records is not None:
            self._records.update(parse_manifest(b"".join(manifest_line(r) for r in rows)))

    # -- whole-run documents (--format) -----------------------------------------------------
    def finished(self, fingerprint: str) -> list[Labelled]:
        """Every image whose current label PNG this folder holds (an ok record with this
        fingerprint, its file inside the folder, written by pnpseg and present), resumed ones
        included, in manifest order."""
        found = []
        for record in self.records().values():
            current = record.get("status") == "ok" and record.get("fingerprint") == fingerprint
            rel = contained(record.get("file")) if current else None
            data = self.store.read_bytes(rel) if rel and self.owned.owns(rel) else None
            if rel and data is not None:
                found.append(labelled(record["input"], rel, data, self.input_location(record)))
        return found

    def input_location(self, record: Mapping[str, Any]) -> str:
        """Where a record's input is now: its key (:mod:`~pnpseg.engines.common.layout`) made
        absolute. Not the recorded ``input``, which is relative to the working directory of
        the run that wrote the record, not of this one."""
        key = record.get("key")
        if not isinstance(key, str) or has_scheme(key) or PurePosixPath(key).is_absolute():
            return key if isinstance(key, str) else str(record["input"])
        local = self.store.local
        return os.path.normpath(local.resolve() / key) if local is not None else key

    def write_formats(self, formats: Sequence[str], fingerprint: str) -> dict[str, list[str]]:
        """Render ``--format`` documents (all but png, written per image) from every finished
        image and write each file atomically, removing the format's files of images no longer
        finished; returns ``{format: [files written]}``."""
        extra = [name for name in formats if name != "png"]
        if not extra:
            return {}
        written: dict[str, list[str]] = {}
        for name, files in render(extra, self.classes, self.finished(fingerprint)).items():
            unclaimed = [rel for rel in files if not self.owned.owns(rel)]  # the run's plan claimed the rest
            self.owned.claim([Planned(rel, name, f"--format {name} file") for rel in unclaimed], self._inputs)
            for rel, data in files.items():
                self.owned.write(rel, data)
            self.owned.prune([name], keep=files)
            written[name] = [self.store.uri(rel) for rel in files]
        return written

    def flush(self) -> None:
        """Write the records an object store is still owed."""
        if not self._pending:
            return
        old = self.store.read_bytes(MANIFEST) or b""
        if old and not old.endswith(b"\n"):
            old += b"\n"
        self.store.write_bytes(MANIFEST, old + b"".join(manifest_line(r) for r in self._pending))
        self._pending = []
