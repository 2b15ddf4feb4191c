"""The one owner of every write and delete into an output folder.

pnpseg writes a file into a folder only if the file is absent or pnpseg wrote it there
before, and deletes only files it wrote. What it wrote is remembered in a ledger in the
folder (:data:`LEDGER`, ``{path: group}``): a file's path is *claimed* in the ledger before
the file is first written, so a run killed at any moment leaves no file of its own that the
next run would mistake for a user's. Everything that writes into an output folder (segment's
labels, overlays and ``--format`` documents, ``explain``'s figures, ``tune``'s preset,
``eval``'s reports, state and saved predictions) goes through :class:`Ownership`; a new kind of output names its files and inherits the rules:

* a path is a clean relative path inside the folder (:func:`contained`): never absolute,
  never ``..``, never through a symlinked folder that leads out. Paths read from files
  (manifest records, the ledger) are checked the same way, and ignored if they fail;
* a planned file that exists and is not in the ledger is a user's: the run is refused
  before it starts (:class:`~pnpseg.errors.PnpsegError`, exit 2), as is a planned file
  that is one of the run's inputs or that two outputs of the run would share;
* temp files (:func:`pnpseg.io.outputs.temp_name`) are removed only beside a file the
  ledger holds, never in a nested folder another run holds (its lock file is there).

Works on the local disk and on object stores alike (:class:`~pnpseg.io.store.Store`), so
the local and the Ray engine keep one rule.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pnpseg.errors import PnpsegError
from pnpseg.io.jsontext import parse_json
from pnpseg.io.outputs import atomic_path, json_bytes, temp_target
from pnpseg.io.store import Store

#: The ledger: every file pnpseg wrote (or is about to write) in the folder, with its group.
LEDGER = ".pnpseg-owned.json"
#: A folder holding this file is another output folder (another run's): never swept.
FOREIGN_MARKER = ".pnpseg.lock"


def contained(rel: object) -> str | None:
    """``rel`` as a clean relative POSIX path inside a folder, or None if it is not one
    (not a string, empty, absolute, a drive, ``..`` anywhere, a NUL or a backslash)."""
    if not isinstance(rel, str) or not rel or "\x00" in rel or "\\" in rel:
        return None
    if rel.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
        return None
    parts = [part for part in rel.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return posixpath.join(*parts)


@dataclass(frozen=True)
class Planned:
    """A file a run will write: its path in the folder, its group (``labels``, ``overlays``,
    ``coco``...; what may be pruned together) and what it is, for messages."""

    rel: str
    group: str
    what: str


class Ownership:
    """The ledger of one folder, and the only way to write or delete there."""

    def __init__(self, store: Store):
        self.store = store
        self.files: dict[str, str] = {}
        self.notes: dict[str, str] = {}
        self._loaded = False

    # -- the ledger ---------------------------------------------------------------------------
    def load(self, adopt: Callable[[], Mapping[str, str]] | None = None) -> Ownership:
        """Read the ledger. A folder without one that ``adopt`` vouches for (one written by
        a version before the ledger) owns what ``adopt`` returns."""
        data = self.store.read_bytes(LEDGER)
        ledger: object
        if data is None:  # adopt only then: it may read a whole manifest
            ledger = {"files": dict(adopt() if adopt is not None else {})}
        else:
            try:
                ledger = parse_json(data)
            except ValueError:  # not UTF-8, not JSON, or nested too deep
                ledger = {}  # unreadable: it owns nothing, so nothing of the user's can be lost
        if not isinstance(ledger, dict):
            ledger = {}
        files, notes = ledger.get("files"), ledger.get("notes")
        self.files = {
            rel: str(group)
            for raw, group in (files.items() if isinstance(files, dict) else ())
            if (rel := contained(raw)) is not None
        }
        self.notes = {str(k): str(v) for k, v in notes.items()} if isinstance(notes, dict) else {}
        self._loaded = True
        return self

    def _ensure(self) -> None:
        if not self._loaded:
            self.load()

    def save(self) -> None:
        self.store.write_bytes(LEDGER, json_bytes({"version": 1, "notes": self.notes, "files": self.files}))

    def owns(self, rel: str) -> bool:
        self._ensure()
        clean = contained(rel)
        return clean is not None and clean in self.files

    # -- before writing ------------------------------------------------------------------------
    def check(self, planned: Iterable[Planned], inputs: Iterable[str | Path] = ()) -> list[Planned]:
        """Refuse (exit 2, one line) a plan that would write outside the folder, write one file
        twice, replace an input, or replace a file pnpseg did not write. Writes nothing."""
        self._ensure()
        plan = list(planned)
        where = self._real_folders(plan)
        root = self.store.local.resolve() if self.store.local is not None else None
        seen: dict[str, Planned] = {}
        for entry in plan:
            if contained(entry.rel) != entry.rel or not _stays_inside(root, where, entry.rel):
                raise PnpsegError(f"{entry.what} {entry.rel!r} would be written outside {self.store.location}")
            first = seen.setdefault(entry.rel.casefold(), entry)
            if first is not entry and first.what != entry.what:
                raise PnpsegError(
                    f"{first.what} and {entry.what} would both be written to {self.store.uri(entry.rel)}; "
                    "rename the input or leave out the option that writes the second"
                )
        if where:
            resolved_inputs = {Path(p).resolve() for p in inputs if "://" not in str(p)}
            for entry in plan:
                folder, name = posixpath.split(entry.rel)
                if where[folder] / name in resolved_inputs:
                    raise PnpsegError(
                        f"output {self.store.uri(entry.rel)} ({entry.what}) would overwrite an input image; "
                        "choose another --out"
                    )
        existing = self._existing(plan)
        for entry in plan:
            if entry.rel in existing and entry.rel not in self.files:
                raise PnpsegError(
                    f"{self.store.uri(entry.rel)} is in the way of the {entry.what} and was not written by pnpseg; "
                    "move it away or choose another --out"
                )
        return plan

    def claim(self, planned: Iterable[Planned], inputs: Iterable[str | Path] = ()) -> None:
        """:meth:`check`, then record the plan in the ledger before any of it is written."""
        plan = self.check(planned, inputs)
        new = {entry.rel: entry.group for entry in plan if self.files.get(entry.rel) != entry.group}
        if new:
            self.files.update(new)
            self.save()

    def _real_folders(self, plan: list[Planned]) -> dict[str, Path]:
        """Each folder of the plan, symlinks resolved, once (local disks only; else empty). A
        file is never resolved itself: a symlink in its place is replaced, not followed."""
        if self.store.local is None:
            return {}
        folders = {posixpath.dirname(entry.rel) for entry in plan}
        return {folder: (self.store.local / folder).resolve() for folder in folders}

    def _existing(self, plan: list[Planned]) -> set[str]:
        """The planned files the ledger does not hold that exist (a link counts, dangling or
        not): only those can be a user's. A resumed run's plan is all owned: nothing is listed."""
        unowned = {e.rel for e in plan if e.rel not in self.files}
        if not unowned:
            return set()
        if self.store.local is not None:
            return {rel for rel in unowned if os.path.lexists(self.store.local / rel)}
        return set(self.store.files()) & unowned

    # -- writing and deleting ------------------------------------------------------------------
    def write(self, rel: str, data: bytes) -> None:
        """Write a claimed file atomically."""
        write_owned(self.store, self._claimed(rel), data)

    @contextmanager
    def atomic(self, rel: str) -> Iterator[Path]:
        """A temp path to write a claimed file through (local folders; libraries that want a path)."""
        if self.store.local is None:
            raise PnpsegError(f"{self.store.location}: path writers need a local folder")
        with atomic_path(self.store.local / self._claimed(rel)) as tmp:
            yield tmp

    def _claimed(self, rel: str) -> str:
        if not self.owns(rel):
            raise PnpsegError(f"internal error: {rel!r} was written before it was claimed")
        return contained(rel)  # type: ignore[return-value]

    def delete(self, rels: Iterable[str]) -> None:
        """Delete the files among ``rels`` that the ledger holds (others are left alone), then
        forget them."""
        self._ensure()
        gone = [rel for rel in dict.fromkeys(map(contained, rels)) if rel is not None and rel in self.files]
        for rel in gone:
            self.store.delete(rel)
            del self.files[rel]
        if gone:
            self.save()
            self._remove_empty_folders(gone)

    def prune(self, groups: Iterable[str], keep: Iterable[str] = ()) -> None:
        """Delete every file of ``groups`` the ledger holds, but those in ``keep``."""
        self._ensure()
        chosen, kept = set(groups), set(keep)
        self.delete([rel for rel, group in self.files.items() if group in chosen and rel not in kept])

    def _remove_empty_folders(self, gone: list[str]) -> None:
        """Folders left empty by deleting our files (``cvat/SegmentationClass``); local only."""
        if self.store.local is None:
            return
        folders = {PurePosixPath(rel).parent for rel in gone}
        for folder in sorted({p for f in folders for p in (f, *f.parents)}, key=lambda p: -len(p.parts)):
            if folder.parts:
                try:
                    (self.store.local / folder).rmdir()
                except OSError:
                    pass  # not empty (a user's file, or ours still) or already gone

    def delete_scratch(self, folder: str) -> None:
        """Remove one of the folder's own hidden scratch folders (the Ray engine's record parts)."""
        self.store.delete_folder(folder)

    def sweep_temp_files(self, extra_folders: Iterable[str] = ()) -> None:
        """Delete the temp files a killed writer left beside files the ledger holds (or in
        ``extra_folders``, this folder's own scratch folders). Never a file the ledger holds,
        never in a nested folder that another run owns."""
        self._ensure()
        folders = {PurePosixPath(rel).parent.as_posix() for rel in self.files} | set(extra_folders)
        scratch = set(extra_folders)
        for rel in self._temp_candidates(folders):
            folder, name = posixpath.split(rel)
            target = temp_target(name)
            if target is None or rel in self.files:
                continue
            if (folder or ".") in scratch or posixpath.join(folder, target) in self.files:
                self.store.delete(rel)

    def _temp_candidates(self, folders: set[str]) -> list[str]:
        if self.store.local is None:
            return [rel for rel in self.store.files() if (posixpath.dirname(rel) or ".") in folders]
        found = []
        for folder in sorted(folders):
            here = self.store.local / folder
            if folder != "." and (here / FOREIGN_MARKER).exists():
                continue  # another run's output folder
            try:
                names = os.listdir(here)
            except OSError:
                continue
            found += [posixpath.normpath(posixpath.join(folder, n)) for n in names if temp_target(n) is not None]
        return found


def _stays_inside(root: Path | None, where: dict[str, Path], rel: str) -> bool:
    """No symlinked folder on the way to ``rel`` leads out of the folder ``root`` (local disks)."""
    if root is None:
        return True
    real = where[posixpath.dirname(rel)]
    return real == root or root in real.parents


def write_owned(store: Store, rel: str, data: bytes) -> None:
    """Write ``rel`` atomically after checking it stays in the folder. For writers that cannot
    hold the ledger (Ray workers): their files were claimed by the driver before they started."""
    clean = contained(rel)
    if clean is None or clean != rel:
        raise PnpsegError(f"refusing to write {rel!r}: not a path inside {store.location}")
    store.write_bytes(clean, data)
