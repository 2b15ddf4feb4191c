"""An output (or input) folder on the local disk or behind a ``scheme://`` URI (pyarrow.fs, else fsspec).

Both engines write through :class:`Store`: local paths use :mod:`pnpseg.io.outputs`' atomic
writers (so the bytes are the same whichever engine wrote them). An object store (S3, GCS,
Azure) shows an object only once its upload is complete, so a write goes straight to its key:
a temp object would be the one thing a killed writer could leave behind, and its "rename" is a
copy and a delete. Other URIs get the local temp name and a rename on their file system.
A URI's store that fails a write is the environment (exit 3), as a full local disk is.
pyarrow (the ``ray`` extra) is imported only for URIs.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from pnpseg.errors import EnvironmentProblem, PnpsegError
from pnpseg.io.outputs import atomic_write_bytes, temp_name

#: pyarrow file systems whose writes are all-or-nothing by themselves (see the module docstring).
OBJECT_STORES = frozenset({"s3", "gcs", "abfs"})


class StoreWriteError(EnvironmentProblem, OSError):
    """A URI's store failed a write (gone, refusing, out of quota). An environment problem
    (exit 3) where it stops the run, such as the driver's manifest; an ``OSError`` too, so that
    where one image's outputs fail (a Ray worker) it is that image's error record, as any
    failed write there is."""


def has_scheme(location: str) -> bool:
    head, sep, _ = str(location).partition("://")
    return bool(sep) and head.isidentifier() and len(head) > 1  # not C:\ on Windows


def filesystem(uri: str) -> tuple[Any, str, str]:
    """``uri`` → (pyarrow file system, path in it, URI prefix so that prefix + path == uri)."""
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except Exception:
        try:
            import fsspec
        except ImportError:
            raise PnpsegError(
                f"no file system for {uri}: pyarrow does not know it and fsspec is not installed"
            ) from None
        inner, path = fsspec.core.url_to_fs(uri)
        fs = pafs.PyFileSystem(pafs.FSSpecHandler(inner))
    stripped = uri.rstrip("/")
    path = path.rstrip("/") or path
    prefix = stripped[: len(stripped) - len(path)] if stripped.endswith(path) else uri.partition("://")[0] + "://"
    return fs, path, prefix


class Store:
    """A folder on the local disk (``pnpseg.io.outputs`` writers) or on a pyarrow/fsspec file system."""

    def __init__(self, location: str | Path):
        self.location = str(location)
        if has_scheme(self.location):
            self.local: Path | None = None
            self.fs, self.root, self.prefix = filesystem(self.location)
        else:
            self.local, self.fs, self.root, self.prefix = Path(self.location), None, str(location), ""

    def check_output(self) -> None:
        """Before any work, for ``--out``: a ``file://`` folder gets the local checks
        (:func:`~pnpseg.io.folders.check_output_folder`); another URI's bucket (its first
        component) must exist, since pnpseg never creates one, and the URI must not name a
        file. Raises :class:`EnvironmentProblem` (exit 3) for a missing bucket or a store it
        cannot reach, :class:`PnpsegError` (exit 2) for a file."""
        if self.local is not None or self.fs.type_name == "local":
            from pnpseg.io.folders import check_output_folder

            check_output_folder(self.local or Path(self.root))
            return
        import pyarrow.fs as pafs

        bucket = self.root.split("/", 1)[0]
        try:
            top, here = self.fs.get_file_info([bucket, self.root])
        except OSError as error:
            raise EnvironmentProblem(f"cannot reach --out {self.location}: {error}") from None
        if top.type == pafs.FileType.NotFound:
            raise EnvironmentProblem(f"--out {self.location}: {bucket} does not exist (pnpseg never creates a bucket)")
        if here.type == pafs.FileType.File:
            raise PnpsegError(f"--out {self.location} is a file; choose another --out")

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
        """All-or-nothing: a local file or a file system's file is written under a hidden temp
        name beside the target (:func:`~pnpseg.io.outputs.temp_name`), then renamed over it; an
        object is uploaded to its key. Raises :class:`StoreWriteError` if a URI's store fails."""
        if self.local is not None:
            atomic_write_bytes(self.local / rel, data)
            return
        final = PurePosixPath(self._path(rel))
        try:
            if self.fs.type_name in OBJECT_STORES:
                with self.fs.open_output_stream(str(final)) as f:
                    f.write(data)
            else:
                self._write_renamed(final, data)
        except OSError as error:
            raise StoreWriteError(f"cannot write {self.uri(rel)}: {' '.join(str(error).split())}") from None

    def _write_renamed(self, final: PurePosixPath, data: bytes) -> None:
        tmp = str(final.with_name(temp_name(final.name)))
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
            return (
                sorted(p.relative_to(self.local).as_posix() for p in base.rglob("*") if p.is_file())
                if base.is_dir()
                else []
            )
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(self._path(rel), recursive=True, allow_not_found=True)
        root = self.root.rstrip("/") + "/"
        infos = self.fs.get_file_info(selector)
        return sorted(i.path[len(root) :] for i in infos if i.type == pafs.FileType.File and i.path.startswith(root))

    def delete(self, rel: str) -> None:
        if self.local is not None:
            (self.local / rel).unlink(missing_ok=True)
        else:
            try:
                self.fs.delete_file(self._path(rel))
            except FileNotFoundError:
                pass

    def delete_folder(self, rel: str) -> None:
        """Remove the files directly in folder ``rel`` (ours, e.g. merged manifest parts) and the folder."""
        if self.local is not None:
            folder = self.local / rel
            for path in sorted(folder.glob("*")) if folder.is_dir() else []:
                path.unlink(missing_ok=True)
            try:
                folder.rmdir()
            except OSError:
                pass
        else:
            try:
                self.fs.delete_dir(self._path(rel))
            except (FileNotFoundError, OSError):
                pass

    def mkdir(self) -> None:
        if self.local is not None:
            self.local.mkdir(parents=True, exist_ok=True)
        else:
            self.fs.create_dir(self.root, recursive=True)


_STORES: dict[str, Store] = {}


def store_for(location: str) -> Store:
    """One Store (file-system client) per location and process."""
    if location not in _STORES:
        _STORES[location] = Store(location)
    return _STORES[location]
