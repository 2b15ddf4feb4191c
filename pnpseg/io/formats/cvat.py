"""CVAT "Segmentation mask 1.1": ``labelmap.txt``, ``SegmentationClass/*.png``, the image list,
and ``labels.json``, the task's labels for CVAT's raw label editor.

CVAT imports a zip of the ``cvat/`` folder (Actions → Upload annotations → Segmentation mask
1.1) with Datumaro's ``voc_segmentation`` reader, into a task that already has every label of
``labelmap.txt``, ``background`` included: ``labels.json`` is those labels, to paste into
the task's Raw label editor. The class PNGs are pnpseg's palette PNGs, so the colours in
``labelmap.txt`` and ``labels.json`` are the palette's: label value ``i`` has colour
``palette[i]``.

Both text files are line- and ``:``-separated without any escaping, and the reader strips
each line and skips those starting with ``#``: a class name or an image name that would be
read back as something else is refused, never rewritten (:func:`check`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from pnpseg.errors import PnpsegError
from pnpseg.io.outputs import encode_label_png, label_colour, label_colour_hex

FOLDER = "cvat"
BACKGROUND = "background"


def _unreadable(text: str, separator: str = "") -> str | None:
    """Why ``text`` would not come back from a stripped, ``#``-commented line, or None."""
    if "\n" in text or "\r" in text:
        return "a line break"
    if separator and separator in text:
        return f"'{separator}'"
    if text != text.strip():
        return "leading or trailing white space"
    if text.startswith("#"):
        return "a leading '#'"
    return None


def check(classes: Sequence[str], names: Iterable[str]) -> None:
    """Refuse (exit 2) a class name or an image name (output path without suffix) that
    ``labelmap.txt`` or ``ImageSets/Segmentation/default.txt`` cannot hold as it is."""
    for name in classes:
        why = _unreadable(name, ":")
        if why is not None or name == BACKGROUND:
            why = why or "the name CVAT's labelmap gives label 0"
            raise PnpsegError(
                f"--format cvat: class name {name!r} has {why}, which CVAT's labelmap.txt cannot hold; rename it"
            )
    for name in names:
        why = _unreadable(name)
        if why is not None:
            raise PnpsegError(
                f"--format cvat: image {name!r} has {why} in its name, which CVAT's image list cannot hold; rename it"
            )


def labelmap(classes: Sequence[str]) -> str:
    """``# label:color_rgb:parts:actions`` then one ``name:r,g,b::`` line per label value."""
    lines = ["# label:color_rgb:parts:actions"]
    lines += ["{}:{},{},{}::".format(name, *label_colour(value)) for value, name in enumerate([BACKGROUND, *classes])]
    return "\n".join(lines) + "\n"


def task_labels(classes: Sequence[str]) -> list[dict[str, Any]]:
    """The task's labels as CVAT's Raw label editor takes them: ``background`` and each class,
    with its palette colour, of type ``any`` (a mask, or the polygons CVAT may convert it to)."""
    return [
        {"name": name, "color": label_colour_hex(value), "type": "any", "attributes": []}
        for value, name in enumerate([BACKGROUND, *classes])
    ]


def planned_files(names: Sequence[str]) -> list[str]:
    """The paths :func:`cvat_files` writes for images whose outputs are ``names``."""
    if not names:
        return []
    fixed = [f"{FOLDER}/labelmap.txt", f"{FOLDER}/labels.json", f"{FOLDER}/ImageSets/Segmentation/default.txt"]
    return fixed + [f"{FOLDER}/SegmentationClass/{name}.png" for name in names]


def cvat_files(images: Sequence[Any], classes: Sequence[str]) -> dict[str, bytes]:
    check(classes, (image.name for image in images))
    if not images:
        return {}
    files = {
        f"{FOLDER}/labelmap.txt": labelmap(classes).encode("utf-8"),
        f"{FOLDER}/labels.json": (json.dumps(task_labels(classes), ensure_ascii=False, indent=1) + "\n").encode(),
        f"{FOLDER}/ImageSets/Segmentation/default.txt": "".join(f"{im.name}\n" for im in images).encode("utf-8"),
    }
    for image in images:
        files[f"{FOLDER}/SegmentationClass/{image.name}.png"] = encode_label_png(image.labels)
    return files
