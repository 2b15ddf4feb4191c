"""Overlay files: :mod:`pnpseg.drawing`'s overlay written atomically as a PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from pnpseg.drawing import encode_overlay
from pnpseg.io.outputs import atomic_write_bytes


def save_overlay(path: Path, image: Image.Image, labels: np.ndarray, class_names: Sequence[str]) -> None:
    """Write :func:`~pnpseg.drawing.encode_overlay` atomically."""
    if Path(path).suffix.lower() != ".png":
        raise ValueError(f"overlays are PNG files, got {path}")
    atomic_write_bytes(path, encode_overlay(image, labels, class_names))
