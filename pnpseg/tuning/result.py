"""What a search returns: :class:`TuneResult` (best parameters, the trials, the heat-map
data, the margin over the median trial) and the heat-map picture of stage 1."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from pnpseg.drawing import font
from pnpseg.io.outputs import atomic_path
from pnpseg.tuning.stages import Trial

#: The best stage-1 reward should beat the median trial by at least this fraction of the
#: possible wins; below it the reward barely tells trials apart and the result warns.
MIN_MARGIN = 0.05


@dataclass
class TuneResult:
    """Everything ``pnpseg tune`` reports, with no console or file side effects."""

    adapter: str
    model: str | None
    params: dict[str, Any]  # layer, head, threshold, blur_sigma, image_size: a preset's "params"
    input_size: tuple[int, int]
    stage1: list[Trial]
    stage2: list[Trial]
    best_stage1: Trial
    best: Trial
    heatmap: np.ndarray  # (layers, heads) best stage-1 reward, NaN where untried
    space: dict[str, list]
    grid_size: int  # stage-1 grid points (the trials are a sample of them)
    images: int
    ignored: int  # inputs the labels file does not list
    single_class: int  # labelled images with one class: they cannot win (docs/tuning.md)
    vlm_passes: int
    cache_hits: int
    scored_images: int
    capture_seconds: float
    seconds: float
    scorer: dict[str, Any]
    seed: int
    trials: int
    device: str
    margin: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The ``tune --json`` summary: the choice, its reward and margin, and the search's cost."""
        return {
            "adapter": self.adapter,
            "model": self.model,
            "params": self.params,
            "reward": self.best.reward.to_dict(),
            "margin": self.margin,
            "warnings": self.warnings,
            "images": self.images,
            "trials": len(self.stage1) + len(self.stage2),
            "vlm_passes": self.vlm_passes,
            "seconds": round(self.seconds, 3),
        }

    def ranked(self, stage: int = 1) -> list[Trial]:
        """The trials of a stage, best first."""
        return sorted(self.stage1 if stage == 1 else self.stage2, key=lambda t: t.key(), reverse=True)


def reward_margin(trials: list[Trial], best: Trial) -> dict[str, float]:
    """How far the best trial's total reward is above the median trial's, also as a fraction
    of the possible wins: a search whose best barely beats its median chose by chance."""
    middle = float(median(t.reward.total for t in trials))
    possible = best.reward.possible
    return {
        "best": best.reward.total,
        "median": middle,
        "possible": possible,
        "margin": round((best.reward.total - middle) / possible, 6) if possible else 0.0,
    }


def heatmap_grid(trials: list[Trial], num_layers: int, num_heads: int) -> np.ndarray:
    """Best total reward per (layer, head) over thresholds; NaN where nothing was tried."""
    grid = np.full((num_layers, num_heads), np.nan)
    for trial in trials:
        current = grid[trial.layer - 1, trial.head - 1]
        if np.isnan(current) or trial.reward.total > current:
            grid[trial.layer - 1, trial.head - 1] = trial.reward.total
    return grid


_VIRIDIS = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]


def _colour(value: float) -> tuple[int, int, int]:
    value = min(max(value, 0.0), 1.0) * (len(_VIRIDIS) - 1)
    i = min(int(value), len(_VIRIDIS) - 2)
    t = value - i
    r, g, b = (round(low + (high - low) * t) for low, high in zip(_VIRIDIS[i], _VIRIDIS[i + 1]))
    return r, g, b


def save_heatmap(path: Path, grid: np.ndarray, best: tuple[int, int], title: str) -> None:
    """Layers as rows, heads as columns (like the paper's Table 6), values written in cells."""
    layers, heads = grid.shape
    cell, left, top, right, bottom = 44, 70, 56, 20, 40
    big, small = font(14), font(11)
    title_width = int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(title, font=big))
    width = max(left + heads * cell + right, title_width + 20)
    height = top + layers * cell + bottom
    im = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(im)
    finite = grid[np.isfinite(grid)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    draw.text((8, 8), title, fill="black", font=big)
    draw.text((left, top - 20), "head", fill="black", font=small)
    draw.text((6, top - 20), "layer", fill="black", font=small)
    for h in range(heads):
        draw.text((left + h * cell + cell // 2 - 6, top + layers * cell + 6), str(h + 1), fill="black", font=small)
    for l in range(layers):
        draw.text((left - 26, top + l * cell + cell // 2 - 7), str(l + 1), fill="black", font=small)
        for h in range(heads):
            x0, y0 = left + h * cell, top + l * cell
            value = grid[l, h]
            if np.isnan(value):
                fill, text, ink = (225, 225, 225), "-", (120, 120, 120)
            else:
                t = (value - low) / (high - low) if high > low else 1.0
                fill = _colour(t)
                text = f"{value:g}"
                ink = (0, 0, 0) if t > 0.55 else (255, 255, 255)
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=fill, outline="white")
            draw.text((x0 + 6, y0 + cell // 2 - 7), text, fill=ink, font=small)
    bl, bh = best
    x0, y0 = left + (bh - 1) * cell, top + (bl - 1) * cell
    draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], outline=(220, 20, 60), width=3)
    with atomic_path(Path(path)) as tmp:
        im.save(tmp, format="PNG")
