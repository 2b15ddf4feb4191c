"""``pnpseg tune``: pick layer, head, threshold and blur σ without masks (CLIP reward).

Registered on :data:`pnpseg.cli.app.app`; heavy imports happen inside the command. See
docs/tuning.md.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

import pnpseg.cli.options as o
from pnpseg.cli.app import app


@app.command()
def tune(
    inputs: list[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively)."),
    labels: Path = typer.Option(
        ...,
        "--labels",
        "-l",
        help="JSON object (image → list of class names) or CSV rows image,classes with the classes separated by ';'.",
    ),
    adapter: Optional[str] = typer.Option(
        None, "--adapter", "-a", help="VLM adapter (see `pnpseg plugins`); default: blip.", rich_help_panel=o.METHOD
    ),
    model: o.Model = None,
    scorer: str = typer.Option(
        "clip", "--scorer", help="Reward scorer (clip, or synthetic for tests; see `pnpseg plugins`)."
    ),
    scorer_model: Optional[str] = typer.Option(
        None, "--scorer-model", help="For clip: ARCH:TAG, ARCH:PATH or PATH; default ViT-L-14-336:openai."
    ),
    trials: int = typer.Option(
        200, "--trials", "-n", min=1, help="Random-search trials per stage (the whole grid if it is smaller)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random-search seed (same seed, same trials)."),
    layers: Optional[str] = typer.Option(None, "--layers", help="Layers to search, 1-based, e.g. 1-12 (default: all)."),
    heads: Optional[str] = typer.Option(None, "--heads", help="Heads to search, 1-based, e.g. 1-12 (default: all)."),
    thresholds: str = typer.Option(
        "0.05:0.5:0.1", "--thresholds", help="start:stop:step (stop excluded) or a comma list."
    ),
    blur_scales: str = typer.Option(
        "0.01:0.11:0.02", "--blur-scales", help="Blur σ scales for stage 2, start:stop:step or a list."
    ),
    out: Path = typer.Option(
        Path("preset.json"), "--out", "-o", help="Preset file to write (heat-map PNG goes beside it)."
    ),
    cache: Optional[Path] = typer.Option(
        None, "--cache", help="Capture cache folder (default: <out stem>.cache beside the preset)."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Keep captures in memory only."),
    image_size: o.ImageSize = None,
    device: o.Device = "auto",
    top: int = typer.Option(10, "--top", min=1, help="Rows in the table of best trials."),
) -> None:
    """Search layer, head, threshold (stage 1) and blur σ (stage 2) by the CLIP reward; write a preset."""
    import numpy as np
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.table import Table

    from pnpseg.errors import ClassNameError, PnpsegError
    from pnpseg.io.images import discover
    from pnpseg.method.params import DEFAULT_ADAPTER
    from pnpseg.method.preset import save_preset
    from pnpseg.method.segmenter import Segmenter, resolve_device
    from pnpseg.sources.image_classes import ImageClassesError
    from pnpseg.tuning.scorers import build_scorer
    from pnpseg.tuning.tune import (
        Trial,
        Tuner,
        best_trial,
        gradcam_masks,
        heatmap_grid,
        make_blur_masks,
        parse_float_range,
        parse_int_range,
        read_labels,
        sample_grid,
        save_heatmap,
        stage1_grid,
    )

    console = Console(stderr=True)
    started = time.perf_counter()
    adapter = adapter or DEFAULT_ADAPTER
    items, _ = discover(inputs)
    labelled, unlabelled = read_labels(labels, items)
    if not labelled:
        raise ImageClassesError(f"none of the inputs is listed in {labels}")
    if unlabelled:
        console.print(f"[dim]{len(unlabelled)} input image(s) not in the labels file are ignored[/]", highlight=False)
    threshold_values = parse_float_range(thresholds, "thresholds")
    blur_values = parse_float_range(blur_scales, "blur scales")
    if any(not 0 <= t < 1 for t in threshold_values):
        raise PnpsegError(f"thresholds must lie in [0, 1), got {threshold_values}")
    if any(b < 0 for b in blur_values):
        raise PnpsegError(f"blur scales must be ≥ 0, got {blur_values}")

    dev = resolve_device(device)
    segmenter = Segmenter.from_pretrained(adapter, model=model, device=dev, layer=1, head=1, image_size=image_size)
    vlm = segmenter.adapter
    layer_values = parse_int_range(layers or f"1-{vlm.num_layers}", 1, vlm.num_layers, "layers")
    head_values = parse_int_range(heads or f"1-{vlm.num_heads}", 1, vlm.num_heads, "heads")
    for entry in labelled:  # tokenizer-level checks before any pass
        try:
            segmenter.plan(entry.classes)
        except ClassNameError as error:
            raise ImageClassesError(f"labels for {entry.item.relative.as_posix()!r}: {error}") from None
    score = build_scorer(scorer, model=scorer_model, device=dev)
    cache_dir = None if no_cache else (cache or out.parent / f"{out.stem}.cache")
    tuner = Tuner(segmenter, adapter, model, score, cache_dir)

    def progress() -> Progress:
        return Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )

    console.print(
        f"Tuning {adapter} on {len(labelled)} image(s) at {segmenter.input_size[0]}x{segmenter.input_size[1]} "
        f"with the {scorer} scorer on {dev}",
        highlight=False,
        soft_wrap=True,
    )
    with progress() as bars:
        task = bars.add_task("capture", total=len(labelled))
        for entry in labelled:
            try:
                tuner.capture(entry)
            except ClassNameError as error:
                raise ImageClassesError(f"labels for {entry.item.relative.as_posix()!r}: {error}") from None
            bars.advance(task)
    capture_seconds = time.perf_counter() - started

    grid1 = stage1_grid(layer_values, head_values, threshold_values)
    stage1 = [Trial(l, h, t) for l, h, t in sample_grid(grid1, trials, seed)]
    grid2 = [(b,) for b in blur_values]
    with progress() as bars:
        task = bars.add_task("stage 1: layer/head/threshold", total=len(stage1) * len(labelled))
        tuner.run_trials(stage1, gradcam_masks, lambda n: bars.advance(task, n))
        best1 = best_trial(stage1)
        stage2 = [Trial(best1.layer, best1.head, best1.threshold, b) for (b,) in sample_grid(grid2, trials, seed)]
        task = bars.add_task("stage 2: blur σ", total=len(stage2) * len(labelled))
        params = segmenter.params
        tuner.run_trials(stage2, make_blur_masks(params.background, params.compat), lambda n: bars.advance(task, n))
    best2 = best_trial(stage2)
    seconds = time.perf_counter() - started

    chosen = {
        "layer": best2.layer,
        "head": best2.head,
        "threshold": best2.threshold,
        "blur_sigma": best2.blur_sigma,
        "image_size": list(segmenter.input_size),
    }
    heat = heatmap_grid(stage1, vlm.num_layers, vlm.num_heads)
    heat_path = out.parent / f"{out.stem}-heatmap.png"
    save_heatmap(heat_path, heat, (best1.layer, best1.head), f"best stage-1 reward per (layer, head), {adapter}")
    ranked1 = sorted(stage1, key=lambda t: t.key(), reverse=True)
    save_preset(
        out,
        adapter=adapter,
        model=model,
        params=chosen,
        image_size=list(segmenter.input_size),
        reward={**best2.reward.to_dict(), "stage1": best1.reward.to_dict()},
        scorer={"name": scorer, "model": scorer_model or getattr(score, "name", None)},
        search={
            "seed": seed,
            "trials": trials,
            "images": len(labelled),
            "vlm_passes": tuner.vlm_passes,
            "cache_hits": tuner.cache_hits,
            "scored_images": tuner.evaluator.images_scored,
            "space": {
                "layers": layer_values,
                "heads": head_values,
                "thresholds": threshold_values,
                "blur_scales": blur_values,
            },
            "seconds": round(seconds, 3),
            "heatmap": heat_path.name,
            "heatmap_grid": [[None if np.isnan(v) else v for v in row] for row in heat.tolist()],
        },
        log={"stage1": [t.to_dict() for t in stage1], "stage2": [t.to_dict() for t in stage2]},
    )

    table = Table(title=f"top {min(top, len(ranked1))} of {len(stage1)} stage-1 trials (of {len(grid1)} in the grid)")
    for column in ("layer", "head", "threshold", "reward", "margin"):
        table.add_column(column, justify="right")
    possible = best1.reward.possible
    for trial in ranked1[:top]:
        table.add_row(
            str(trial.layer),
            str(trial.head),
            f"{trial.threshold:g}",
            f"{trial.reward.total}/{possible}",
            f"{trial.reward.margin:.3f}",
        )
    console.print(table)
    blur_table = Table(
        title=f"stage 2: blur σ at layer {best1.layer}, head {best1.head}, threshold {best1.threshold:g}"
    )
    for column in ("blur σ", "reward", "margin"):
        blur_table.add_column(column, justify="right")
    for trial in sorted(stage2, key=lambda t: t.key(), reverse=True)[:top]:
        blur_table.add_row(f"{trial.blur_sigma:g}", f"{trial.reward.total}/{possible}", f"{trial.reward.margin:.3f}")
    console.print(blur_table)
    per_class = ", ".join(f"{k} {v:.2f}" for k, v in best2.reward.per_class.items())
    console.print(
        f"best: layer {best2.layer}, head {best2.head}, threshold {best2.threshold:g}, blur σ {best2.blur_sigma:g}; "
        f"reward {best2.reward.total}/{possible} (per class: {per_class})\n"
        f"VLM passes: {tuner.vlm_passes} for {len(labelled)} image(s) ({tuner.cache_hits} from the cache); "
        f"{len(stage1) + len(stage2)} trials, {tuner.evaluator.images_scored} scorer images; "
        f"capture {capture_seconds:.1f} s, total {seconds:.1f} s\n"
        f"wrote {out} and {heat_path}" + (f"; cache {cache_dir}" if cache_dir else ""),
        highlight=False,
        soft_wrap=True,
    )
