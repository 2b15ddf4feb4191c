"""Label maps as arrays: (H, W) values 0..255, 0 the background and ``i`` the ``i``-th class.
The check every writer and drawer applies, and the name of a label value."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def check_labels(labels: np.ndarray) -> np.ndarray:
    """Validate an (H, W) label map with values 0..255 and return it as uint8."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty (H, W) array, got shape {labels.shape}")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise ValueError(f"labels must have an integer dtype, got {labels.dtype}")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi > 255:
        raise ValueError(
            f"label values must be in 0..255 for a palette PNG, got {lo}..{hi} (at most 255 classes plus background)"
        )
    return labels.astype(np.uint8)


def label_name(label: int, class_names: Sequence[str]) -> str:
    """The name of label value ``label``: 0 is "background", ``i`` is ``class_names[i - 1]``."""
    if label == 0:
        return "background"
    return class_names[label - 1] if label - 1 < len(class_names) else f"class {label}"
