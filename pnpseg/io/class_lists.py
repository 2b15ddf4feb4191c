"""Class list files (one class per line, synonyms comma-separated) and the lists shipped in
``pnpseg/data/classes``, with the table of which one each built-in dataset uses.

Evaluation builds its datasets from :data:`DATASET_CLASSES`, and the GPT-4o class source
(:mod:`pnpseg.sources.gpt4o`) reads a dataset's prompted classes from it, without building
a dataset.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import NamedTuple

from pnpseg.errors import PnpsegError


class ClassListError(PnpsegError):
    """A class list that cannot be read or parsed, or a dataset with no shipped class list."""


class DatasetClasses(NamedTuple):
    """A built-in dataset's class list: the shipped file, and whether its class 0 is a
    background class that is scored but never prompted."""

    file: str
    background: bool


#: Built-in dataset → its class list (``pnpseg/data/classes/<file>.txt``).
DATASET_CLASSES: dict[str, DatasetClasses] = {
    "voc21": DatasetClasses("cls_voc21", True),
    "voc20": DatasetClasses("cls_voc20", False),
    "pc60": DatasetClasses("cls_context60", True),
    "pc59": DatasetClasses("cls_context59", False),
    "coco-object": DatasetClasses("cls_coco_object", True),
    "coco-stuff": DatasetClasses("cls_coco_stuff", False),
    "ade20k": DatasetClasses("cls_ade20k", False),
    "cityscapes": DatasetClasses("cls_city_scapes", False),
    "voc21-authors": DatasetClasses("authors_voc21", True),
    "pc60-authors": DatasetClasses("authors_context60", True),
    "coco-object-authors": DatasetClasses("authors_coco_object", True),
    "coco-stuff-authors": DatasetClasses("authors_coco_stuff", True),
    "ade20k-authors": DatasetClasses("authors_ade20k", True),
}


def parse_class_lines(text: str, source: str = "class list") -> list[list[str]]:
    """One class per line, synonyms comma-separated; blank lines and ``#`` comments skipped."""
    classes = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        names = [" ".join(n.split()) for n in line.split(",")]
        if any(not n for n in names):
            raise ClassListError(f"{source}, line {number}: empty synonym in {line.strip()!r}")
        classes.append(names)
    if not classes:
        raise ClassListError(f"{source}: no classes")
    return classes


def read_class_file(path: str | Path) -> list[list[str]]:
    """Read a class list file (see :func:`parse_class_lines`)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ClassListError(f"cannot read class list {path}: {error}") from None
    return parse_class_lines(text, str(path))


def builtin_classes(name: str) -> list[list[str]]:
    """A class list shipped in ``pnpseg/data/classes`` (e.g. ``"cls_voc21"``)."""
    resource = importlib.resources.files("pnpseg") / "data" / "classes" / f"{name}.txt"
    return parse_class_lines(resource.read_text(encoding="utf-8"), f"{name}.txt")


def dataset_classes(dataset: str) -> list[list[str]]:
    """Every class of the built-in ``dataset``, background included (synonym lists)."""
    if dataset not in DATASET_CLASSES:
        raise ClassListError(f"no class list ships for dataset {dataset!r}; known: {', '.join(DATASET_CLASSES)}")
    return builtin_classes(DATASET_CLASSES[dataset].file)


def prompted_classes(dataset: str) -> list[list[str]]:
    """The classes a model is asked about on the built-in ``dataset``: all but its background."""
    classes = dataset_classes(dataset)
    return classes[1:] if DATASET_CLASSES[dataset].background else classes
