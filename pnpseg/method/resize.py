"""Shrinking an image to a longest side: one rule for step 4, the reward, the scorers and the LLM source."""

from __future__ import annotations

from PIL import Image


def fit_longest_side(
    image: Image.Image, side: int, resample: Image.Resampling = Image.Resampling.BILINEAR
) -> Image.Image:
    """``image`` shrunk (never enlarged) so that its longest side is at most ``side``.

    Returns ``image`` itself when it already fits, so callers can test ``result is image``.
    Each side is rounded and kept ≥ 1 pixel.
    """
    scale = min(1.0, side / max(image.size))
    if scale == 1.0:
        return image
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)
