"""Overlays for people (``--viz``): the image, tinted regions with outlines and names, a legend,
drawn in memory. Writing them is the output folder's job (:mod:`pnpseg.io.overlay`, the
engines' layout); ``SegmentationResult.overlay()`` draws one for a notebook.

The label PNG keeps the VOC palette (a data format tools rely on); overlays do not. Their
colours come from Okabe & Ito's colour-blind-safe set, then Paul Tol's "muted" set, and a
class named after a colour ("red", "sky blue") gets that colour when it is still free, so
class ``blue`` is never painted green. Colour is never the only cue: every region has an
outline, large regions carry their name, and each legend swatch shows the colour as it
appears after blending with the image, framed by the pure colour.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageColor, ImageDraw, ImageFont
from scipy import ndimage

from pnpseg.labelmaps import check_labels, label_name

#: Okabe & Ito (2008) without black, then Tol's muted scheme: distinguishable under the
#: common colour-vision deficiencies; cycled beyond 17 classes (names and outlines remain).
SAFE_COLOURS = [
    "#E69F00",
    "#56B4E9",
    "#009E73",
    "#F0E442",
    "#0072B2",
    "#D55E00",
    "#CC79A7",
    "#999999",
    "#332288",
    "#88CCEE",
    "#44AA99",
    "#117733",
    "#999933",
    "#DDCC77",
    "#CC6677",
    "#882255",
    "#AA4499",
]
#: Share of the class colour in a tinted pixel.
ALPHA = 0.45
#: Regions at least this share of the image get their class name written on them.
NAMED_REGION = 0.02


def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at ``size`` px (scalable when Pillow has FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except Exception:
        return ImageFont.load_default()


def _named_colour(name: str) -> tuple[int, int, int] | None:
    try:
        red, green, blue = ImageColor.getrgb(name.strip().lower().replace(" ", ""))[:3]
        return red, green, blue
    except ValueError:
        return None


def class_colours(class_names: Sequence[str]) -> np.ndarray:
    """(K, 3) uint8 overlay colours: a colour word's own colour if no earlier class took a
    close one, else the next free colour of :data:`SAFE_COLOURS`."""
    safe = [np.array(ImageColor.getrgb(c), dtype=float) for c in SAFE_COLOURS]
    chosen: list[np.ndarray] = []

    def free(colour: np.ndarray) -> bool:
        return all(np.abs(colour - other).sum() > 60 for other in chosen)

    for name in class_names:
        own = _named_colour(name)
        if own is not None and free(np.array(own, dtype=float)):
            chosen.append(np.array(own, dtype=float))
            continue
        options = [c for c in safe if free(c)]
        chosen.append(options[0] if options else safe[len(chosen) % len(safe)])
    return np.array(chosen, dtype=np.uint8).reshape(-1, 3)


def _boundaries(labels: np.ndarray, width: int) -> np.ndarray:
    """Pixels where the label changes, thickened to ``width``."""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:-1] |= labels[:-1] != labels[1:]
    edge[1:] |= labels[:-1] != labels[1:]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:, 1:] |= labels[:, :-1] != labels[:, 1:]
    return ndimage.binary_dilation(edge, iterations=width - 1) if width > 1 else edge


def render_overlay(image: Image.Image, labels: np.ndarray, class_names: Sequence[str]) -> Image.Image:
    """The image with each class tinted, outlined and named, and a legend on the right.

    Background (label 0) keeps the image's own colours. ``class_names[i - 1]`` names label ``i``.
    """
    lab = check_labels(labels)
    rgb = image.convert("RGB")
    if lab.shape != (rgb.height, rgb.width):
        raise ValueError(f"labels shape {lab.shape} != image size {rgb.height}x{rgb.width}")
    colours = np.zeros((256, 3), dtype=np.float32)
    colours[1 : len(class_names) + 1] = class_colours(class_names)
    base = np.asarray(rgb, dtype=np.float32)
    blended = np.where((lab > 0)[..., None], (1 - ALPHA) * base + ALPHA * colours[lab], base)
    size = max(12, min(48, round(max(rgb.size) / 40)))
    edge = _boundaries(lab, max(1, size // 12))
    tinted = blended.copy()
    tinted[edge] = np.where((lab[edge] > 0)[:, None], colours[lab[edge]], 255.0)
    over = Image.fromarray(np.clip(np.rint(tinted), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(over)
    text_font = font(size)
    present = [int(v) for v in np.unique(lab) if v > 0]
    for label in present:
        regions, count = ndimage.label(lab == label)
        for region in range(1, count + 1):
            mask = regions == region
            if mask.mean() < NAMED_REGION:
                continue
            inside = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]  # the image edge counts
            y, x = np.unravel_index(np.argmax(inside), mask.shape)
            draw.text(
                (int(x), int(y)),
                label_name(label, class_names)[:30],
                fill="white",
                stroke_width=max(1, size // 8),
                stroke_fill="black",
                font=text_font,
                anchor="mm",
            )
    return _with_legend(over, blended, lab, class_names, colours, size)


def _with_legend(
    over: Image.Image,
    blended: np.ndarray,
    lab: np.ndarray,
    class_names: Sequence[str],
    colours: np.ndarray,
    size: int,
) -> Image.Image:
    """A legend of the labels present: swatch = the mean blended colour the region shows,
    framed by the pure class colour; name and pixel share beside it."""
    pad, text_font = max(4, size // 2), font(size)
    entries = []
    for value in np.unique(lab):
        mask = lab == value
        shown = tuple(int(c) for c in np.rint(blended[mask].mean(0)))
        entries.append(
            (
                int(value),
                shown,
                f"{label_name(int(value), class_names)[:60]} ({mask.mean():.{0 if mask.mean() >= 0.01 else 1}%})",
            )
        )
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = int(max(probe.textbbox((0, 0), text, font=text_font)[2] for *_, text in entries))
    line_h = size + pad
    width = over.width + pad + size + pad + text_w + pad
    canvas = Image.new("RGB", (width, max(over.height, pad + line_h * len(entries))), "white")
    canvas.paste(over, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x0 = over.width + pad
    for row, (label, shown, text) in enumerate(entries):
        y = pad + row * line_h
        frame = tuple(int(c) for c in colours[label]) if label else (64, 64, 64)
        draw.rectangle([x0, y, x0 + size, y + size], fill=shown, outline=frame, width=max(2, size // 8))
        draw.text((x0 + size + pad, y), text, fill=(0, 0, 0), font=text_font)
    return canvas


def encode_overlay(image: Image.Image, labels: np.ndarray, class_names: Sequence[str]) -> bytes:
    """The PNG bytes of :func:`render_overlay` (lossless: outlines stay crisp)."""
    buffer = io.BytesIO()
    render_overlay(image, labels, class_names).save(buffer, format="PNG")
    return buffer.getvalue()
