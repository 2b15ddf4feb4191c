"""The poster's GPT-4o class lists as the authors released them (``GPT4o_classification/*.json``).

One JSON object per dataset, keyed by image id; each value is GPT-4o's raw answer, e.g.
``"[2: 'bicycle', 15: 'person'], [100, 100]"``: class *indices* into the dataset's class
list, then one confidence per class (``%`` optional). The released code keeps the indices
whose confidence exceeds 70 and falls back to class 1 when none is left. Names in the answer
are ignored, so spelling variants (``table``, ``tvmonitor``) do not matter
(docs/class-sources.md).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

from pnpseg.io.class_lists import ClassListError, prompted_classes
from pnpseg.io.image_classes import ImageClassesError
from pnpseg.io.jsontext import parse_json

#: COCO category ids of the 80 things and the 91 stuff classes, in class-list order: the
#: COCO answers give these ids, not positions.
COCO_THING_IDS = tuple(i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83})
COCO_STUFF_IDS = tuple(range(92, 183))
CATEGORY_IDS = {"coco-object": COCO_THING_IDS, "coco-stuff": COCO_THING_IDS + COCO_STUFF_IDS}

DEFAULT_MIN_CONFIDENCE = 70.0
_GROUP = re.compile(r"\[(.*?)\]", re.S)
_INDEX = re.compile(r"(?<![\w.])(-?\d+)\s*:")  # "-2: x" is index -2 (no class), never 2


def parse_answer(text: str) -> list[tuple[int, float]]:
    """``"[2: 'bicycle', 15: 'person'], [100, 90%]"`` → ``[(2, 100.0), (15, 90.0)]``.

    An empty answer gives ``[]``; an answer without confidences counts each class as 100
    (as the released COCO code does); a confidence is the number before its ``%``
    (``"95% probability of flower"`` is 95); extra confidences are ignored. A negative index
    (``-2: 'x'``) is kept as such, so it matches no class; a confidence that is not a finite
    number (``nan``, ``inf``, ``1e400``) is a ``ValueError``.
    """
    groups = _GROUP.findall(text)
    if not groups:
        if text.strip():
            raise ValueError("no [index: name, ...] list")
        return []
    indices = [int(match) for match in _INDEX.findall(groups[0])]
    if len(groups) < 2:
        return [(index, 100.0) for index in indices]
    confidences = [float(part.split(":")[-1].split("%")[0]) for part in groups[1].split(",")]
    for confidence in confidences:
        if not math.isfinite(confidence):  # nan would drop a class silently, inf keep it
            raise ValueError(f"confidence {confidence} is not a finite number")
    return list(zip(indices, confidences))


def class_index(dataset: str | None, vocabulary: Sequence[str]) -> dict[int, str]:
    """Answer index → class name: positions 1..K of the built-in dataset's prompted classes
    (COCO: category ids), read from its shipped class list, or of ``vocabulary`` when no
    dataset is named."""
    if dataset is None:
        return {i + 1: name for i, name in enumerate(vocabulary)}
    try:
        names = [synonyms[0] for synonyms in prompted_classes(dataset)]
    except ClassListError as error:
        raise ImageClassesError(f"dataset={dataset}: {error}") from None
    ids = next((ids for prefix, ids in CATEGORY_IDS.items() if dataset.startswith(prefix)), None)
    if ids is None:
        return {i + 1: name for i, name in enumerate(names)}
    if len(ids) != len(names):
        raise ImageClassesError(f"dataset {dataset} has {len(names)} classes, not the {len(ids)} COCO categories")
    return dict(zip(ids, names))


def read_gpt4o(path: Path, index: dict[int, str], min_confidence: float) -> list[tuple[str, list[str]]]:
    """(image id, class names) per image: indices above ``min_confidence``, in answer order.

    Indices that are not in ``index`` are skipped and repeated ones kept once; when nothing
    is left the first class stands in, as in the released code.
    """
    try:
        data = parse_json(Path(path).read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ImageClassesError(f"class file not found: {path}") from None
    except (OSError, ValueError) as error:
        raise ImageClassesError(f"cannot read GPT-4o class file {path}: {error}") from None
    if not isinstance(data, dict) or not data:
        raise ImageClassesError(f'GPT-4o class file {path}: expected a non-empty object {{"image id": "answer"}}')
    first = min(index)
    rows = []
    for key, answer in data.items():
        try:
            kept = [i for i, confidence in parse_answer(str(answer)) if confidence > min_confidence]
        except ValueError as error:
            raise ImageClassesError(f"GPT-4o class file {path}, image {key!r}: {error}: {answer!r}") from None
        names = [index[i] for i in kept if i in index]  # unknown indices ("0: None") are skipped
        rows.append((key, list(dict.fromkeys(names)) or [index[first]]))
    return rows
