"""Label Studio: a tasks JSON whose predictions are brush masks (pre-annotations).

The masks are encoded with Label Studio's own brush RLE encoder (``label-studio-converter``,
extra ``[labelstudio]``). ``labelstudio-config.xml`` is the labelling interface the tasks
fit: an ``Image`` named ``image`` and ``BrushLabels`` named ``tag`` with one ``Label`` per class.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from pnpseg.errors import MissingDependencyError

TASKS = "labelstudio.json"
CONFIG = "labelstudio-config.xml"
FROM_NAME, TO_NAME = "tag", "image"
LOCAL_FILES = "/data/local-files/?d="


def _brush() -> Any:
    try:
        from label_studio_converter import brush
    except ImportError:
        raise MissingDependencyError(
            "--format labelstudio needs Label Studio's converter: pip install 'pnpseg[labelstudio]'"
        ) from None
    return brush


def image_url(input_path: str) -> str:
    """Label Studio's local-files URL for an image (served with ``LOCAL_FILES_SERVING_ENABLED``)."""
    return LOCAL_FILES + Path(input_path).resolve().as_posix().lstrip("/")


def labelling_config(classes: Sequence[str]) -> str:
    labels = "".join(f"\n    <Label value={quoteattr(name)}/>" for name in classes)
    return (
        f'<View>\n  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
        f'  <BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">{labels}\n  </BrushLabels>\n</View>\n'
    )


def tasks(images: Sequence[Any], classes: Sequence[str]) -> list[dict[str, Any]]:
    """One task per image: ``data.image`` (URL), ``data.pnpseg_input``, and one prediction
    holding a ``brushlabels`` result per class present."""
    brush = _brush()
    result = []
    for image in images:
        regions = []
        for value in np.unique(image.labels):
            if value == 0 or value > len(classes):
                continue
            mask = (image.labels == value).astype(np.uint8) * 255
            regions.append(
                {
                    "id": f"pnpseg-{int(value)}",
                    "from_name": FROM_NAME,
                    "to_name": TO_NAME,
                    "type": "brushlabels",
                    "origin": "prediction",
                    "original_width": image.width,
                    "original_height": image.height,
                    "image_rotation": 0,
                    "value": {
                        "format": "rle",
                        "rle": [int(v) for v in brush.mask2rle(mask)],
                        "brushlabels": [classes[value - 1]],
                    },
                }
            )
        result.append(
            {
                "data": {"image": image_url(image.input), "pnpseg_input": image.input},
                "predictions": [{"model_version": "pnpseg", "result": regions}],
            }
        )
    return result


def labelstudio_files(images: Sequence[Any], classes: Sequence[str]) -> dict[str, bytes]:
    document = tasks(images, classes)
    if not images:
        return {}
    return {
        TASKS: (json.dumps(document, ensure_ascii=False) + "\n").encode("utf-8"),
        CONFIG: labelling_config(classes).encode("utf-8"),
    }
