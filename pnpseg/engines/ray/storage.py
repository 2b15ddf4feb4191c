"""Inputs and outputs on local paths or ``scheme://`` URIs (pyarrow.fs, else fsspec), atomically."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from pnpseg.errors import EnvironmentProblem, ImageError, PnpsegError
from pnpseg.io.images import (
    NOT_AN_IMAGE,
    InputItem,
    Skipped,
    check_output_clashes,
    decode_image,
    discover,
    is_image_name,
    load_image,
)
from pnpseg.io.store import Store, has_scheme, store_for

PARTS = ".pnpseg-parts"


def excluded_under(root: str, exclude: Sequence[str]) -> Callable[[str], bool]:
    """Which files of the URI folder ``root`` (relative paths) discovery passes over: a file
    ``exclude`` names, and anything in a folder it names below ``root`` (the output prefix
    inside an input prefix), as :func:`~pnpseg.io.images.discover` passes over local ones."""
    base = root.rstrip("/") + "/"
    named = {uri[len(base) :].rstrip("/") for uri in exclude if uri.startswith(base)} - {""}

    def passed_over(rel: str) -> bool:  # the file, or a folder above it (a set lookup each: N may be large)
        parts = rel.split("/")
        return any("/".join(parts[:i]) in named for i in range(1, len(parts) + 1))

    return passed_over


def discover_uris(
    inputs: Sequence[str | Path], exclude: Sequence[str | Path] = (), names_root: Path | None = None
) -> tuple[list[tuple[InputItem, str]], list[Skipped]]:
    """:func:`pnpseg.io.images.discover` for paths and URIs: ``[(item, root location)]`` and the
    paths skipped. A URI item's ``path`` is the URI string; its root is the folder given
    (or the file's parent), from which workers open it. ``exclude``: local paths as
    ``discover``'s, URIs (:meth:`~pnpseg.io.store.Store.uri` form) as :func:`excluded_under`'s;
    ``names_root`` (local paths only): ``discover``'s ``root``."""
    found: list[tuple[InputItem, str]] = []
    skipped: list[Skipped] = []
    local = [Path(p) for p in inputs if not has_scheme(str(p))]
    uris = [str(p) for p in exclude if has_scheme(str(p))]
    if local:
        items, skip = discover(local, [Path(p) for p in exclude if not has_scheme(str(p))], names_root)
        found += [(item, "") for item in items]
        skipped += skip
    import pyarrow.fs as pafs

    for uri in (str(p) for p in inputs if has_scheme(str(p))):
        store = Store(uri)
        try:
            info = store.fs.get_file_info(store.root)
        except OSError as error:  # a store that cannot be reached or read: not the user's typo
            raise EnvironmentProblem(f"cannot read {uri}: {error}") from None
        if info.type == pafs.FileType.Directory:
            passed_over = excluded_under(store.uri(""), uris)
            for rel in store.files():
                if any(part.startswith(".") for part in rel.split("/")) or passed_over(rel):
                    continue
                if is_image_name(Path(rel)):  # a URI item's path is its URI
                    found.append((InputItem(store.uri(rel), Path(rel)), uri))  # type: ignore[arg-type]
                else:
                    skipped.append(Skipped(store.uri(rel), NOT_AN_IMAGE))  # type: ignore[arg-type]
        elif info.type == pafs.FileType.File:
            name = PurePosixPath(store.root).name
            parent = uri.rstrip("/")[: -len(name)].rstrip("/")
            if is_image_name(Path(name)):
                found.append((InputItem(uri, Path(name)), parent))  # type: ignore[arg-type]
            else:
                skipped.append(Skipped(uri, NOT_AN_IMAGE))  # type: ignore[arg-type]
        else:
            raise PnpsegError(f"input not found: {uri}")
    unique, seen = [], set()
    for item, root in found:
        key = str(item.path) if root else str(Path(item.path).resolve())
        if key not in seen:
            seen.add(key)
            unique.append((item, root))
    check_output_clashes([item for item, _ in unique])
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
        return decode_image(data, item.path)
    except ImageError as error:
        return error
    except OSError as error:
        return ImageError(item.path, f"cannot read ({error})")
