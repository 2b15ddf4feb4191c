"""Synthetic test scenes with known ground truth, and a mean-IoU helper.

Scenes are coloured blobs on a dark/grey noisy background: the class names are the colour
words of :data:`COLOURS`, so :class:`~pnpseg.testing.SyntheticAdapter` (or a human) can
segment them, and the label map says exactly what the answer is.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

#: Class name → RGB. Every colour is a corner of the RGB cube, so it is far from any grey.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
    "white": (255, 255, 255),
}


def make_scene(
    height: int,
    width: int,
    colours: Sequence[str],
    *,
    seed: int,
    noise: float = 8.0,
    jpeg_quality: int | None = None,
) -> tuple[Image.Image, np.ndarray]:
    """Draw one or two blobs per colour on a noisy dark background.

    Returns ``(image, labels)``: an RGB image of size ``width × height`` and an (H, W) uint8
    label map where 0 is background and label ``i ≥ 1`` means ``colours[i - 1]``. Blobs
    (ellipses and rectangles) are placed at random, hence asymmetrically, and do not overlap,
    so a transposed or flipped prediction scores badly. ``noise`` is the per-pixel Gaussian
    noise σ in 0–255 units; ``jpeg_quality`` round-trips the image through JPEG (the labels
    stay exact). The same arguments always give the same scene.
    """
    names = [c.lower() for c in colours]
    unknown = [c for c in names if c not in COLOURS]
    if unknown or len(set(names)) != len(names) or not names:
        raise ValueError(f"colours must be distinct names from {sorted(COLOURS)}, got {list(colours)}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)

    # Dark/grey background with a gentle gradient: low saturation keeps it "no class".
    grey = rng.uniform(25, 95)
    slope = rng.uniform(-20, 20, size=2)
    base = grey + slope[0] * (yy / height - 0.5) + slope[1] * (xx / width - 0.5)
    image = np.repeat(base[..., None], 3, axis=2)
    labels = np.zeros((height, width), np.uint8)
    occupied: list[tuple[float, float, float, float]] = []  # (y0, x0, y1, x1) with margin

    # Blob sides shrink with the number of colours so all of them fit.
    side = min(height, width) * float(np.clip(0.55 / np.sqrt(len(names)), 0.12, 0.4))
    for index, name in enumerate(names):
        count = 1 + int(rng.random() < 0.35)
        placed = 0
        for attempt in range(400):
            if placed == count:
                break
            # The first blob shrinks if the canvas is crowded; an extra one is skipped instead.
            scale = 0.985 ** (attempt // 10) if placed == 0 else 0.7
            bh = side * scale * rng.uniform(0.7, 1.3)
            bw = side * scale * rng.uniform(0.7, 1.3)
            y0 = rng.uniform(0.03 * height, max(0.03 * height, 0.97 * height - bh))
            x0 = rng.uniform(0.03 * width, max(0.03 * width, 0.97 * width - bw))
            box = (y0, x0, y0 + bh, x0 + bw)
            pad = 0.04 * min(height, width)
            if any(
                box[0] < o[2] + pad and o[0] < box[2] + pad and box[1] < o[3] + pad and o[1] < box[3] + pad
                for o in occupied
            ):
                continue
            occupied.append(box)
            placed += 1
            if rng.random() < 0.5:  # ellipse
                cy, cx = y0 + bh / 2, x0 + bw / 2
                mask = ((yy + 0.5 - cy) / (bh / 2)) ** 2 + ((xx + 0.5 - cx) / (bw / 2)) ** 2 <= 1.0
            else:
                mask = (yy >= y0) & (yy < y0 + bh) & (xx >= x0) & (xx < x0 + bw)
            # "Roughly" the colour: each blob is pulled a little towards the middle of the cube.
            rgb = np.asarray(COLOURS[name], np.float32)
            rgb = rgb + (127.5 - rgb) * rng.uniform(0.0, 0.12)
            image[mask] = rgb
            labels[mask] = index + 1
        if placed == 0:
            raise ValueError(f"cannot fit {len(names)} colours into a {height}x{width} scene")

    image = image + rng.normal(0.0, noise, size=image.shape)
    pil = Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8), "RGB")
    if jpeg_quality is not None:
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=jpeg_quality)
        buffer.seek(0)
        pil = Image.open(buffer).convert("RGB")
    return pil, labels


def miou(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> float:
    """Mean IoU over the labels ``0..num_classes-1`` present in ``gt`` or ``pred``.

    Pixels whose ground truth is ``≥ num_classes`` (e.g. 255, "ignore") are not counted.
    Classes absent from both maps are skipped rather than scored 1, so they do not inflate
    the mean.
    """
    pred = np.asarray(pred).astype(np.int64)
    gt = np.asarray(gt).astype(np.int64)
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ in shape")
    valid = gt < num_classes
    pred, gt = pred[valid], gt[valid]
    ious = []
    for label in range(num_classes):
        p, g = pred == label, gt == label
        union = np.count_nonzero(p | g)
        if union:
            ious.append(np.count_nonzero(p & g) / union)
    return float(np.mean(ious)) if ious else float("nan")
