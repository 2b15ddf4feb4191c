"""The two evaluation protocols and the class bookkeeping they share.

``pnp`` is the paper's: the prompted classes without synonyms, mIoU over the classes present
in each image (``present`` averaging); ``standard`` is MMSegmentation's: synonyms max-pooled,
mIoU over the union of classes (``union``). See docs/evaluation.md.

Prediction value convention (what ``pnpseg segment`` writes and ``--predictions`` reads):
label 0 = background / unlabelled, label i = the i-th *prompted* class, i.e. the dataset's
classes without its background class, in the order of its class list. A ``classes.json``
(``{"0": "background", "1": "aeroplane", ...}``) beside the PNGs overrides that order: each
name is matched (case-insensitively) against the dataset's class names and synonyms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pnpseg.errors import PnpsegError
from pnpseg.evaluation.datasets import Dataset, DatasetError

PROTOCOLS = ("pnp", "standard")


def averaging(protocol: str) -> str:
    """The mIoU averaging rule of a protocol (:func:`pnpseg.evaluation.metrics.scores`)."""
    if protocol not in PROTOCOLS:
        raise PnpsegError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    return "present" if protocol == "pnp" else "union"


@dataclass
class ClassMap:
    """Prompted classes (with synonyms) ↔ the flat name list a Segmenter is given.

    ``lut[l]`` maps a prediction label ``l`` (0 = background, i = prompted class i) to the
    dataset's class index, or ``N`` (none) where the dataset has no background class.
    """

    dataset: Dataset
    synonyms: bool = True
    flat: list[str] = field(init=False)
    groups: list[list[int]] = field(init=False)
    lut: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.flat, self.groups = [], []
        seen: dict[str, int] = {}
        for names in self.dataset.prompt_classes:
            group = []
            for name in names if self.synonyms else names[:1]:
                key = name.casefold()
                if key not in seen:
                    seen[key] = len(self.flat)
                    self.flat.append(name)
                group.append(seen[key])
            self.groups.append(group)
        n, k = self.dataset.num_classes, len(self.groups)
        if self.dataset.has_background:
            self.lut = np.arange(k + 1, dtype=np.int64)
        else:
            self.lut = np.concatenate([[n], np.arange(k)]).astype(np.int64)

    def fold(self, channels: torch.Tensor) -> torch.Tensor:
        """(len(flat), H, W) scores → (K, H, W): each class's map is the max over its synonyms."""
        return torch.stack([channels[group].amax(0) for group in self.groups])


def map_prediction_names(table: dict[str, str], dataset: Dataset, source: Path) -> np.ndarray:
    """A ``classes.json`` table → lookup array from prediction value to dataset index."""
    index: dict[str, int] = {}
    for i, names in enumerate(dataset.classes):
        for name in names:
            index.setdefault(" ".join(name.split()).casefold(), i)
    n = dataset.num_classes
    lut = np.full(256, -1, dtype=np.int64)
    if not isinstance(table, dict):
        raise DatasetError(f'{source}: must be an object of label value → class name, e.g. {{"0": "background"}}')
    bad = [key for key in table if not (key.isdigit() and int(key) < len(lut))]
    if bad:
        shown = ", ".join(repr(key[:20]) for key in bad[:5])
        raise DatasetError(f"{source}: key(s) {shown} are not label values 0-{len(lut) - 1}")
    unknown = []
    for key, name in table.items():
        value = int(key)
        folded = " ".join(str(name).split()).casefold()
        if folded in index:
            lut[value] = index[folded]
        elif folded in ("background", "unlabelled", "unlabeled", "none") or value == 0:
            lut[value] = 0 if dataset.has_background else n
        else:
            unknown.append(str(name))
    if unknown:
        raise DatasetError(
            f"{source}: class name(s) {', '.join(unknown[:10])} are not classes of {dataset.name} "
            f"(its classes: {', '.join(dataset.class_names[:10])}, ...)"
        )
    return lut
