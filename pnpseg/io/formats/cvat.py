"""CVAT "Segmentation mask 1.1": ``labelmap.txt``, ``SegmentationClass/*.png`` and the image list.

CVAT imports a zip of the ``cvat/`` folder (Actions → Upload annotations → Segmentation mask
1.1). The class PNGs are pnpseg's palette PNGs, so the colours in ``labelmap.txt`` are the
palette's: label value ``i`` has colour ``palette[i]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pnpseg.io.outputs import encode_label_png, palette

FOLDER = "cvat"


def labelmap(classes: Sequence[str]) -> str:
    """``# label:color_rgb:parts:actions`` then one ``name:r,g,b::`` line per label value."""
    colours = palette(len(classes) + 1)
    lines = ["# label:color_rgb:parts:actions"]
    for value, name in enumerate(["background", *classes]):
        r, g, b = colours[3 * value : 3 * value + 3]
        lines.append(f"{name.replace(':', ' ')}:{r},{g},{b}::")
    return "\n".join(lines) + "\n"


def planned_files(names: Sequence[str]) -> list[str]:
    """The paths :func:`cvat_files` writes for images whose outputs are ``names``."""
    if not names:
        return []
    fixed = [f"{FOLDER}/labelmap.txt", f"{FOLDER}/ImageSets/Segmentation/default.txt"]
    return fixed + [f"{FOLDER}/SegmentationClass/{name}.png" for name in names]


def cvat_files(images: Sequence[Any], classes: Sequence[str]) -> dict[str, bytes]:
    if not images:
        return {}
    files = {f"{FOLDER}/labelmap.txt": labelmap(classes).encode("utf-8")}
    files[f"{FOLDER}/ImageSets/Segmentation/default.txt"] = "".join(f"{im.name}\n" for im in images).encode("utf-8")
    for image in images:
        files[f"{FOLDER}/SegmentationClass/{image.name}.png"] = encode_label_png(image.labels)
    return files
