"""Output formats beside the label PNGs: ``pnpseg segment --format png,coco,cvat,labelstudio``.

Each format is a pure function of the finished images (:class:`Labelled`: where the image
is, its size, its label map) and the class list, returning ``{relative path: bytes}``; the
engines write those files atomically at the end of a run, from every ``ok`` record of the
manifest (resumed ones included), so a format always matches the label PNGs on disk.
docs/formats.md documents every field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pnpseg.errors import PnpsegError

FORMATS = ("png", "coco", "cvat", "labelstudio")
DEFAULT_FORMATS = ("png",)


@dataclass(frozen=True)
class Labelled:
    """One finished image: ``input`` as recorded, ``name`` its output path relative to the
    output folder without suffix (``sub/img``), and its (H, W) label map (0 = background,
    ``i`` = ``classes[i - 1]``)."""

    input: str
    name: str
    width: int
    height: int
    labels: np.ndarray


Writer = Callable[[Sequence[Labelled], Sequence[str]], dict[str, bytes]]


def parse_formats(text: str | None) -> tuple[str, ...]:
    """``"png,coco"`` → ``("png", "coco")``; unknown names are a usage error."""
    names = [n.strip().lower() for n in (text or "png").split(",") if n.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise PnpsegError(f"--format {text!r}: choose from {', '.join(FORMATS)} (comma-separated)")
    return tuple(dict.fromkeys(names))


def writer(name: str) -> Writer:
    """The pure function that renders format ``name`` (its optional library is checked here)."""
    if name == "coco":
        from pnpseg.io.formats.coco import coco_files

        return coco_files
    if name == "cvat":
        from pnpseg.io.formats.cvat import cvat_files

        return cvat_files
    if name == "labelstudio":
        from pnpseg.io.formats.labelstudio import labelstudio_files

        return labelstudio_files
    raise PnpsegError(f"no writer for format {name!r}")


def check_available(formats: Iterable[str]) -> None:
    """Fail before the model loads when a chosen format's library is missing (exit 3)."""
    for name in formats:
        if name != "png":
            writer(name)([], [])  # rendering no image imports the library and writes nothing


def finished(records: Mapping[str, Mapping[str, Any]], out: Path) -> list[Labelled]:
    """The ``ok`` records of a manifest whose label PNG is on disk, in input order, as :class:`Labelled`."""
    done = []
    for input_path, record in sorted(records.items()):
        output = record.get("output")
        if record.get("status") != "ok" or not output or not Path(output).is_file():
            continue
        with Image.open(output) as im:
            labels = np.array(im)
        name = Path(output).resolve().relative_to(out.resolve()).with_suffix("").as_posix()
        done.append(Labelled(input_path, name, labels.shape[1], labels.shape[0], labels))
    return done


def write_formats(
    out: Path, formats: Sequence[str], classes: Sequence[str], images: Sequence[Labelled]
) -> dict[str, list[Path]]:
    """Render every chosen format (but ``png``, written per image) and write its files atomically."""
    from pnpseg.io.outputs import atomic_write_bytes

    written: dict[str, list[Path]] = {}
    for name in formats:
        if name == "png":
            continue
        files = writer(name)(images, classes)
        written[name] = []
        for relative, data in files.items():
            atomic_write_bytes(out / relative, data)
            written[name].append(out / relative)
    return written
