"""COCO: one JSON with ``images``, ``categories`` and RLE ``annotations`` (pycocotools, extra ``[coco]``).

It is written where COCO loaders look for a dataset's annotations,
``coco/annotations/instances_default.json`` (Datumaro, hence CVAT, matches the file name to
the ``instances`` task and the ``default`` subset), and each image's ``file_name`` is its
path relative to its input folder, the image root a loader is given.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from pnpseg.method.rle import encode_rle, mask_api

FILE = "coco/annotations/instances_default.json"


def coco_document(images: Sequence[Any], classes: Sequence[str]) -> dict[str, Any]:
    """The COCO dict: category ``i`` is ``classes[i - 1]`` (the label value), one annotation
    per class present per image. ``iscrowd`` is 0: each is one object's mask (RLE is allowed
    there), so COCOeval matches it and training loaders keep it; 1 would mark a crowd region,
    which COCOeval ignores and detectron2 drops."""
    api = mask_api()
    document: dict[str, Any] = {
        "info": {"description": "pnpseg segmentation", "version": "1.0"},
        "images": [],
        "categories": [{"id": i + 1, "name": name, "supercategory": ""} for i, name in enumerate(classes)],
        "annotations": [],
    }
    for image_id, image in enumerate(images, start=1):
        document["images"].append(
            {
                "id": image_id,
                "file_name": image.image_file,
                "pnpseg_input": image.input,
                "width": image.width,
                "height": image.height,
                "pnpseg_output": image.name + ".png",
            }
        )
        for value in np.unique(image.labels):
            if value == 0 or value > len(classes):
                continue
            rle = encode_rle(image.labels == value)
            encoded = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
            document["annotations"].append(
                {
                    "id": len(document["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": int(value),
                    "segmentation": rle,
                    "area": float(api.area(encoded)),
                    "bbox": [float(v) for v in api.toBbox(encoded)],
                    "iscrowd": 0,
                }
            )
    return document


def coco_files(images: Sequence[Any], classes: Sequence[str]) -> dict[str, bytes]:
    document = coco_document(images, classes)
    return {FILE: (json.dumps(document, ensure_ascii=False) + "\n").encode("utf-8")} if images else {}
