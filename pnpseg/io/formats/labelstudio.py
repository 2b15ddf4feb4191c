"""Label Studio: a tasks JSON whose predictions are brush masks (pre-annotations).

The masks are encoded with Label Studio's own brush RLE encoder (``label-studio-sdk``'s
``converter.brush``, extra ``[labelstudio]``). ``labelstudio-config.xml`` is the labelling
interface the tasks fit: an ``Image`` named ``image`` and ``BrushLabels`` named ``tag`` with
one ``Label`` per class, coloured as in the label PNGs.

Images are referenced where they are: a local file through Label Studio's local-files
URL, percent-encoded (``+ & # %`` in a name would otherwise cut or change the path), a URI
(``s3://``, ``gs://``, ``https://``) as it is, for the project's cloud storage to resolve.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import numpy as np

from pnpseg.errors import MissingDependencyError
from pnpseg.io.outputs import label_colour_hex
from pnpseg.io.store import has_scheme

TASKS = "labelstudio.json"
CONFIG = "labelstudio-config.xml"
FROM_NAME, TO_NAME = "tag", "image"
LOCAL_FILES = "/data/local-files/?d="


def _brush() -> Any:
    try:
        from label_studio_sdk.converter import brush
    except ImportError:
        raise MissingDependencyError(
            "--format labelstudio needs Label Studio's SDK: pip install 'pnpseg[labelstudio]'"
        ) from None
    return brush


def image_url(location: str) -> str:
    """``data.image`` for an image at ``location`` (an absolute path or a URI): a URI as it is,
    a file as Label Studio's local-files URL (served with ``LOCAL_FILES_SERVING_ENABLED``
    from a Local Storage that holds it), its path percent-encoded."""
    if has_scheme(location):
        return location
    return LOCAL_FILES + quote(PurePosixPath(location).as_posix().lstrip("/"), safe="/")


def labelling_config(classes: Sequence[str]) -> str:
    """The labelling interface: one ``Label`` per class, in its palette colour (``background``
    attribute, as Label Studio spells a label's colour)."""
    labels = "".join(
        f'\n    <Label value={quoteattr(name)} background="{label_colour_hex(i + 1)}"/>'
        for i, name in enumerate(classes)
    )
    return (
        f'<View>\n  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
        f'  <BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">{labels}\n  </BrushLabels>\n</View>\n'
    )


def brush_regions(
    labels: np.ndarray, names: Sequence[str], from_name: str = FROM_NAME, to_name: str = TO_NAME
) -> list[dict[str, Any]]:
    """One ``brushlabels`` region per label value present in ``labels`` (value ``i`` is
    ``names[i - 1]``; 0 and values past ``names`` are left out), brush-RLE encoded."""
    brush = _brush()
    height, width = labels.shape
    regions = []
    for value in np.unique(labels):
        if value == 0 or value > len(names):
            continue
        mask = (labels == value).astype(np.uint8) * 255
        regions.append(
            {
                "id": f"pnpseg-{int(value)}",
                "from_name": from_name,
                "to_name": to_name,
                "type": "brushlabels",
                "origin": "prediction",
                "original_width": width,
                "original_height": height,
                "image_rotation": 0,
                "value": {
                    "format": "rle",
                    "rle": [int(v) for v in brush.mask2rle(mask)],
                    "brushlabels": [names[value - 1]],
                },
            }
        )
    return regions


def tasks(images: Sequence[Any], classes: Sequence[str]) -> list[dict[str, Any]]:
    """One task per image: ``data.image`` (URL), ``data.pnpseg_input``, and one prediction
    holding a ``brushlabels`` result per class present."""
    _brush()  # the library is checked even for no image
    return [
        {
            "data": {"image": image_url(image.location), "pnpseg_input": image.input},
            "predictions": [{"model_version": "pnpseg", "result": brush_regions(image.labels, classes)}],
        }
        for image in images
    ]


def labelstudio_files(images: Sequence[Any], classes: Sequence[str]) -> dict[str, bytes]:
    document = tasks(images, classes)
    if not images:
        return {}
    return {
        TASKS: (json.dumps(document, ensure_ascii=False) + "\n").encode("utf-8"),
        CONFIG: labelling_config(classes).encode("utf-8"),
    }
