"""Inputs and outputs on local paths or ``scheme://`` URIs (pyarrow.fs, else fsspec), atomically."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from pnpseg.errors import ImageError, PnpsegError
from pnpseg.io.images import NOT_AN_IMAGE, InputItem, Skipped, discover, is_image_name, load_image
from pnpseg.io.outputs import atomic_write_bytes

PARTS = ".pnpseg-parts"


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


def store_for(location: str) -> Store:
    """One Store (file-system client) per location and process."""
    if location not in _STORES:
        _STORES[location] = Store(location)
    return _STORES[location]


def discover_uris(inputs: Sequence[str | Path]) -> tuple[list[tuple[InputItem, str]], list[Skipped]]:
    """:func:`pnpseg.io.images.discover` for paths and URIs: ``[(item, root location)]`` and the
    non-image files. A URI item's ``path`` is the URI string; its root is the folder given
    (or the file's parent), from which workers open it."""
    found: list[tuple[InputItem, str]] = []
    skipped: list[Skipped] = []
    local = [Path(p) for p in inputs if not _has_scheme(str(p))]
    if local:
        items, skip = discover(local)
        found += [(item, "") for item in items]
        skipped += skip
    import pyarrow.fs as pafs

    for uri in (str(p) for p in inputs if _has_scheme(str(p))):
        store = Store(uri)
        info = store.fs.get_file_info(store.root)
        if info.type == pafs.FileType.Directory:
            for rel in store.files():
                if any(part.startswith(".") for part in rel.split("/")):
                    continue
                (
                    found.append((InputItem(store.uri(rel), Path(rel)), uri))
                    if is_image_name(Path(rel))  # type: ignore[arg-type]
                    else skipped.append(Skipped(store.uri(rel), NOT_AN_IMAGE))  # type: ignore[arg-type]
                )
        elif info.type == pafs.FileType.File:
            name = PurePosixPath(store.root).name
            parent = uri.rstrip("/")[: -len(name)].rstrip("/")
            if is_image_name(Path(name)):
                found.append((InputItem(uri, Path(name)), parent))  # type: ignore[arg-type]
            else:
                skipped.append(Skipped(uri, NOT_AN_IMAGE))  # type: ignore[arg-type]
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
        raise PnpsegError(
            f"{len(clashes)} output name clash(es), these inputs would write the same output file: "
            f"{shown}; rename them or process them separately"
        )
    return unique, skipped


def load_item(item: InputItem, root: str) -> Any:
    """The decoded image, or the ImageError to record (as :func:`pnpseg.io.images.load_image`)."""
    try:
        if not root:
            return load_image(Path(item.path))
        store = store_for(root)
        data = store.read_bytes(item.relative.as_posix())
        if data is None:
            return ImageError(item.path, "file not found")
        with tempfile.TemporaryDirectory(prefix="pnpseg-") as tmp:
            local = Path(tmp) / f"image{item.relative.suffix}"
            local.write_bytes(data)
            try:
                return load_image(local)
            except ImageError as error:
                return ImageError(item.path, error.reason)
    except ImageError as error:
        return error
    except OSError as error:
        return ImageError(item.path, f"cannot read ({error})")
