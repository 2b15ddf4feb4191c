"""Output formats beside the label PNGs: ``pnpseg segment --format png,coco,cvat,labelstudio``.

Each format is a pure function of the finished images (:class:`Labelled`: where the image
is, its size, its label map) and the class list, returning ``{relative path: bytes}``; the
engines write those files atomically at the end of a run, from every ``ok`` record of the
manifest (resumed ones included), so a format always matches the label PNGs on disk.
docs/formats.md documents every field.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
from PIL import Image

from pnpseg.errors import PnpsegError

FORMATS = ("png", "coco", "cvat", "labelstudio")
DEFAULT_FORMATS = ("png",)


@dataclass(frozen=True)
class Labelled:
    """One finished image: ``input`` as recorded, ``name`` its output path relative to the
    output folder without suffix (``sub/img``), and its (H, W) label map (0 = background,
    ``i`` = ``classes[i - 1]``). ``location`` is where the image is now (an absolute path or
    a URI), valid whatever the working directory of the run that recorded it."""

    input: str
    name: str
    width: int
    height: int
    labels: np.ndarray
    location: str = ""

    @property
    def image_file(self) -> str:
        """The image's name relative to its input folder, suffix included (``sub/img.jpg``):
        what annotation tools match the images of a task or dataset on."""
        return self.name + PurePosixPath(self.input).suffix


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


def planned_files(name: str, names: Sequence[str]) -> list[str]:
    """The files format ``name`` writes for finished images whose outputs are ``names``
    (``sub/img``), without rendering them: a run claims these before it starts."""
    from pnpseg.io.formats import coco, cvat, labelstudio

    if name == "coco":
        return [coco.FILE] if names else []
    if name == "labelstudio":
        return [labelstudio.TASKS, labelstudio.CONFIG] if names else []
    if name == "cvat":
        return cvat.planned_files(names)
    return []


def check_available(formats: Iterable[str], classes: Sequence[str] = (), names: Iterable[str] = ()) -> None:
    """Fail before the model loads when a chosen format's library is missing (exit 3), or
    when it cannot hold a class name or an image name (``names``: output paths without
    suffix, ``sub/img``; exit 2)."""
    for name in formats:
        if name != "png":
            writer(name)([], classes)  # rendering no image imports the library, checks the classes, writes nothing
        if name == "cvat":
            from pnpseg.io.formats.cvat import check

            check((), names)


def labelled(input: str, file: str, png: bytes, location: str = "") -> Labelled:
    """A finished image from its label PNG's bytes; ``file`` is the PNG's path inside the output folder."""
    with Image.open(io.BytesIO(png)) as im:
        labels = np.array(im)
    name = PurePosixPath(file).with_suffix("").as_posix()
    return Labelled(input, name, labels.shape[1], labels.shape[0], labels, location or input)


def render(formats: Sequence[str], classes: Sequence[str], images: Sequence[Labelled]) -> dict[str, dict[str, bytes]]:
    """``{format: {path inside the output folder: bytes}}`` for every chosen format but ``png``
    (written per image); the caller writes each file atomically."""
    return {name: writer(name)(images, classes) for name in formats if name != "png"}
