"""Figures of a :class:`PipelineTrace` and a :class:`HeadAtlas` (matplotlib, the ``[viz]`` extra).

Maps use viridis, which stays ordered and readable for colour-blind readers and in grey;
the chosen (layer, head) and dropped patches are drawn as outlines, never by colour alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pnpseg.errors import MissingDependencyError
from pnpseg.explain.trace import HeadAtlas, PipelineTrace
from pnpseg.io.ownership import Ownership

MAP_CMAP = "viridis"


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend, or a one-line install hint."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError("figures need matplotlib: pip install 'pnpseg[viz]'") from None
    return plt


def _show(ax: Any, data: np.ndarray, title: str, aspect: float = 1.0, **kwargs: Any) -> None:
    """``aspect``: height / width the picture should have (maps follow the image's shape)."""
    ax.imshow(data, cmap=MAP_CMAP, interpolation="nearest", aspect=aspect * data.shape[1] / data.shape[0], **kwargs)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _outline(ax: Any, mask: np.ndarray) -> None:
    """White outline of a boolean/0-1 mask; matplotlib cannot contour less than 2×2 (a 1-pixel
    image, a 1-patch map), where there is no outline to draw anyway."""
    if min(mask.shape) >= 2:
        ax.contour(mask, levels=[0.5], colors="white", linewidths=1.0)


def pipeline_figure(trace: PipelineTrace, image: Image.Image) -> Any:
    """One row per class: each round's map (patches dropped before it outlined in white) on
    one colour scale with the summed map, so a round that adds little looks dark; each
    score stage (threshold, postprocessors) and the final mask."""
    plt = pyplot()
    stage_names = [name for name, _ in trace.stages]
    columns = len(trace.rounds) + 1 + len(stage_names) + 1
    rows = len(trace.class_names)
    rgb = np.asarray(image.convert("RGB"))
    aspect = rgb.shape[0] / rgb.shape[1]
    fig, axes = plt.subplots(
        rows, columns, figsize=(1.9 * columns, (1.9 * aspect + 0.6) * rows + 0.4), squeeze=False, layout="constrained"
    )
    numbers = trace.numbers()["classes"]
    for k, name in enumerate(trace.class_names):
        row, info = axes[k], numbers[name]
        scale = {"vmin": 0.0, "vmax": max(float(trace.summed[k].max()), 1e-12)}
        for t, (round_, stats) in enumerate(zip(trace.rounds, info["rounds"])):
            ax = row[t]
            title = f"round {t + 1}: max {stats['max']:.3g}\nkept {stats['kept_fraction']:.0%}"
            _show(ax, round_.maps[k].numpy(), title, aspect, **scale)
            dropped = round_.dropped_before.numpy().astype(float)
            if dropped.any():
                _outline(ax, dropped)
        col = len(trace.rounds)
        _show(row[col], trace.summed[k].numpy(), f"summed: max {info['summed_max']:.3g}", aspect, **scale)
        for stage_name, scores in trace.stages:
            col += 1
            channel = trace.channel(scores, k).numpy()
            title = f"{stage_name}: top in {info['stages'][stage_name]:.1%}"
            _show(row[col], channel, title, aspect, vmin=0.0, vmax=max(float(channel.max()), 1e-12))
        ax = row[col + 1]
        ax.imshow(rgb)
        mask = np.ma.masked_where(trace.labels != k + 1, np.ones_like(trace.labels, dtype=float))
        ax.imshow(mask, cmap="cividis", alpha=0.55, vmin=0.0, vmax=1.0, interpolation="nearest")
        _outline(ax, trace.labels == k + 1)
        ax.set_title(f"mask: {info['pixel_share']:.1%} of pixels", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        row[0].set_ylabel(name, fontsize=10)
    p = trace.params
    fig.suptitle(
        f"layer {p['layer']}, head {p['head']}, threshold {p['threshold']}, blur σ {p['blur_sigma']}, "
        f"drop rule {p['drop_rule']}",
        fontsize=9,
    )
    return fig


def atlas_figure(atlas: HeadAtlas, k: int) -> Any:
    """Round-1 GradCAM of class ``k`` for every (layer, head), each cell titled with its
    contrast (and tuning reward when known); the chosen cell framed red, the best dashed."""
    plt = pyplot()
    layers, heads = atlas.contrast.shape[:2]
    fig, axes = plt.subplots(
        layers, heads, figsize=(1.3 * heads, 1.4 * layers + 0.5), squeeze=False, layout="constrained"
    )
    best = atlas.best(k)
    for layer in range(layers):
        for head in range(heads):
            ax = axes[layer][head]
            cell = (layer + 1, head + 1)
            title = f"L{cell[0]} H{cell[1]} c{float(atlas.contrast[layer, head, k]):.2f}"
            if cell in atlas.rewards:
                title += f"\nreward {atlas.rewards[cell]:g}"
            _show(ax, atlas.maps[layer, head, k].numpy(), title)
            for frame, style in ((atlas.chosen, "-"), (best, "--")):
                if cell == frame:
                    for spine in ax.spines.values():
                        spine.set(edgecolor="red", linewidth=2.5, linestyle=style)
    fig.suptitle(
        f"{atlas.class_names[k]!r}: round-1 GradCAM per layer × head, c = class contrast\n"
        f"chosen L{atlas.chosen[0]} H{atlas.chosen[1]} (solid frame), best L{best[0]} H{best[1]} (dashed)",
        fontsize=9,
    )
    return fig


def save_figure(fig: Any, folder: Ownership, *names: str) -> list[Path]:
    """Write ``fig`` to each claimed file of ``folder`` atomically (format from the suffix),
    then release it."""
    paths = []
    for name in names:
        with folder.atomic(name) as tmp:
            fig.savefig(tmp, format=Path(name).suffix.lstrip("."), dpi=110)
        paths.append(Path(folder.store.location) / name)
    pyplot().close(fig)
    return paths
