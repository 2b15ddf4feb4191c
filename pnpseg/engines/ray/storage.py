"""Inputs and outputs on local paths or ``scheme://`` URIs (pyarrow.fs, else fsspec), atomically."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from pnpseg.errors import ImageError, PnpsegError
from pnpseg.io.images import (
    NOT_AN_IMAGE,
    InputItem,
    Skipped,
    check_output_clashes,
    discover,
    is_image_name,
    load_image,
)
from pnpseg.io.store import Store, has_scheme, store_for

PARTS = ".pnpseg-parts"


def discover_uris(
    inputs: Sequence[str | Path], exclude: Sequence[Path] = (), names_root: Path | None = None
) -> tuple[list[tuple[InputItem, str]], list[Skipped]]:
    """:func:`pnpseg.io.images.discover` for paths and URIs: ``[(item, root location)]`` and the
    paths skipped. A URI item's ``path`` is the URI string; its root is the folder given
    (or the file's parent), from which workers open it. ``exclude`` and ``names_root``
    (local paths only): ``discover``'s ``exclude`` and ``root``."""
    found: list[tuple[InputItem, str]] = []
    skipped: list[Skipped] = []
    local = [Path(p) for p in inputs if not has_scheme(str(p))]
    if local:
        items, skip = discover(local, exclude, names_root)
        found += [(item, "") for item in items]
        skipped += skip
    import pyarrow.fs as pafs

    for uri in (str(p) for p in inputs if has_scheme(str(p))):
        store = Store(uri)
        info = store.fs.get_file_info(store.root)
        if info.type == pafs.FileType.Directory:
            for rel in store.files():
                if any(part.startswith(".") for part in rel.split("/")):
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
