"""``--viz`` overlays people can read: safe colours, outlines, names, honest legend swatches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageColor

from pnpseg.drawing import ALPHA, SAFE_COLOURS, class_colours, render_overlay
from pnpseg.io.overlay import save_overlay

GREY = (200, 200, 200)


def scene() -> tuple[Image.Image, np.ndarray]:
    image = Image.new("RGB", (120, 80), GREY)
    labels = np.zeros((80, 120), dtype=np.uint8)
    labels[:, 60:] = 1  # a large region
    labels[:4, :4] = 2  # a tiny one
    return image, labels


def test_a_class_named_after_a_colour_gets_that_colour():
    colours = class_colours(["blue", "cat", "red", "dog"])
    assert tuple(colours[0]) == ImageColor.getrgb("blue")
    assert tuple(colours[2]) == ImageColor.getrgb("red")
    safe = {ImageColor.getrgb(c) for c in SAFE_COLOURS}
    assert tuple(colours[1]) in safe and tuple(colours[3]) in safe
    assert len({tuple(c) for c in colours}) == 4


def test_many_classes_stay_distinct_as_long_as_the_palette_lasts():
    colours = class_colours([f"class {i}" for i in range(len(SAFE_COLOURS))])
    assert len({tuple(c) for c in colours}) == len(SAFE_COLOURS)


def test_regions_are_tinted_outlined_and_the_legend_shows_the_blended_colour():
    image, labels = scene()
    out = np.asarray(render_overlay(image, labels, ["cat", "dog"])).astype(int)
    colour = class_colours(["cat", "dog"])[0].astype(int)
    tinted = np.rint((1 - ALPHA) * np.array(GREY) + ALPHA * colour).astype(int)
    assert np.abs(out[75, 110] - tinted).max() <= 1  # inside the region, away from its name
    assert np.array_equal(out[70, 20], GREY)  # background keeps the image's colours
    assert np.array_equal(out[40, 60], colour)  # the region's outline is the pure colour
    legend = out[:, 120:]
    assert (np.abs(legend - tinted).max(-1) <= 1).any()  # swatch = what the region shows
    assert (legend == colour).all(-1).any()  # framed by the pure colour


def test_large_regions_carry_their_name_and_small_ones_do_not():
    image, labels = scene()
    tint = np.rint((1 - ALPHA) * np.array(GREY) + ALPHA * class_colours(["cat", "dog"])[0]).astype(int)
    named = np.asarray(render_overlay(image, labels, ["cat", "dog"])).astype(int)[4:-4, 64:116]
    assert (np.abs(named - tint).max(-1) > 60).sum() > 20  # text written inside the large region
    only_small = np.where(labels == 1, 0, labels).astype(np.uint8)
    unnamed = np.asarray(render_overlay(image, only_small, ["cat", "dog"])).astype(int)[:, :120]
    assert (np.abs(unnamed[8:] - GREY).max(-1) == 0).all()  # the 16-pixel region is not named


def test_saved_as_png_atomically(tmp_path: Path):
    image, labels = scene()
    save_overlay(tmp_path / "o.png", image, labels, ["cat", "dog"])
    assert Image.open(tmp_path / "o.png").format == "PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png"]
    with pytest.raises(ValueError, match="PNG"):
        save_overlay(tmp_path / "o.jpg", image, labels, ["cat", "dog"])


def test_legend_taller_than_a_tiny_image_and_shape_checks():
    out = render_overlay(Image.new("RGB", (1, 1)), np.array([[2]], dtype=np.uint8), ["a", "b"])
    assert out.width > 1 and out.height > 1
    with pytest.raises(ValueError):
        render_overlay(Image.new("RGB", (4, 3)), np.zeros((4, 3), dtype=np.uint8), ["a"])
