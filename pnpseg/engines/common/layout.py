"""Where a job's outputs go and what each manifest record says about them.

A record is keyed on its input's *resolved* path, written relative to the resolved output
folder (``../photos/a.jpg``), so the same folder named another way (absolute, relative
from elsewhere, through a symlink) resumes, and moving inputs and outputs together keeps
the keys. URI inputs are keyed on their URI; with a URI output, local inputs on their
absolute resolved path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from pnpseg.drawing import encode_overlay
from pnpseg.io.images import INPUT_DIGEST, InputItem
from pnpseg.io.outputs import class_fractions, encode_label_png
from pnpseg.io.ownership import write_owned
from pnpseg.io.store import Store, has_scheme, store_for


def to_vocabulary(labels: Any, proposed: Sequence[str] | None, classes: Sequence[str]) -> Any:
    """Per-image label values (index of the image's own class list ``proposed``) → ``classes`` indices."""
    if proposed is None or list(proposed) == list(classes):
        return labels
    index = {name: i + 1 for i, name in enumerate(classes)}
    lut = np.zeros(max(len(proposed) + 1, int(labels.max()) + 1), dtype=labels.dtype)
    lut[1 : len(proposed) + 1] = [index[name] for name in proposed]
    return lut[labels]


@dataclass(frozen=True)
class OutputLayout:
    """The output side of a job, picklable: folder, class list, settings and their fingerprint."""

    location: str
    classes: tuple[str, ...]
    settings: dict[str, Any]
    fingerprint: str
    viz: bool = False

    @property
    def store(self) -> Store:
        return store_for(self.location)

    # -- names ----------------------------------------------------------------------------
    def key(self, item: InputItem) -> str:
        """The resume key of ``item`` (see the module docstring)."""
        path = str(item.path)
        if has_scheme(path):
            return path
        resolved = Path(path).resolve()
        local = self.store.local
        if local is None:
            return resolved.as_posix()
        return Path(os.path.relpath(resolved, local.resolve())).as_posix()

    @staticmethod
    def label_file(item: InputItem) -> str:
        """The label PNG's path relative to the folder: ``a/x.jpg`` → ``a/x.png``."""
        return item.output_relative(".png").as_posix()

    @staticmethod
    def overlay_file(item: InputItem) -> str:
        return PurePosixPath("overlays", item.output_relative(".png").as_posix()).as_posix()

    # -- writing ----------------------------------------------------------------------------
    def write(self, item: InputItem, image: Any, labels: np.ndarray) -> str:
        """The label PNG (and, with ``viz``, the overlay), each atomically; returns the PNG's name
        as the manifest records it. Raises OSError if the file system refuses. The folder
        claimed these files before the run (:mod:`pnpseg.io.ownership`)."""
        store = self.store
        write_owned(store, self.label_file(item), encode_label_png(labels))
        if self.viz:
            write_owned(store, self.overlay_file(item), encode_overlay(image, labels, list(self.classes)))
        return store.uri(self.label_file(item))

    def record(
        self,
        item: InputItem,
        class_source: dict[str, Any],
        *,
        output: str | None = None,
        error: str | None = None,
        image: Any = None,
        labels: np.ndarray | None = None,
        seconds: float | None = None,
    ) -> dict[str, Any]:
        """One ``manifest.jsonl`` line: ``error`` is None for a written output. ``output`` names
        the label PNG as the user named the folder, ``file`` inside the folder."""
        ok = error is None
        return {
            "input": str(item.path),
            "key": self.key(item),
            "output": output if ok else None,
            "file": self.label_file(item) if ok else None,
            "width": image.width if image is not None else None,
            "height": image.height if image is not None else None,
            "status": "ok" if ok else "error",
            INPUT_DIGEST: image.info.get(INPUT_DIGEST) if image is not None else None,
            "error": error,
            "classes": class_fractions(labels, list(self.classes)) if labels is not None else {},
            "seconds": round(seconds, 4) if seconds is not None else None,
            "fingerprint": self.fingerprint,
            "settings": self.settings,
            "class_source": class_source,
        }
