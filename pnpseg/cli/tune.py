"""``pnpseg tune``: pick layer, head, threshold and blur σ without masks (CLIP reward).

Registered on :data:`pnpseg.cli.app.app`; heavy imports happen inside the command. See
docs/tuning.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape

import pnpseg.cli.options as o
from pnpseg.cli.app import app, console, json_summary
from pnpseg.method.defaults import DEFAULT_ADAPTER


@app.command()
def tune(
    inputs: list[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively)."),
    labels: Path = typer.Option(
        ...,
        "--labels",
        "-l",
        help="JSON object (image → list of class names) or CSV rows image,classes with the classes separated by ';'.",
        rich_help_panel=o.IO,
    ),
    adapter: o.Adapter = None,
    model: o.Model = None,
    image_size: o.ImageSize = None,
    scorer: str = typer.Option(
        "clip",
        "--scorer",
        help="Reward scorer (clip, or synthetic for tests; see `pnpseg plugins`).",
        rich_help_panel=o.SEARCH,
    ),
    scorer_model: Optional[str] = typer.Option(
        None,
        "--scorer-model",
        help="For clip: ARCH:TAG, ARCH:PATH or PATH; default ViT-L-14-336:openai.",
        rich_help_panel=o.SEARCH,
    ),
    trials: int = typer.Option(
        200,
        "--trials",
        "-n",
        min=1,
        help="Random-search trials per stage (the whole grid if it is smaller).",
        rich_help_panel=o.SEARCH,
    ),
    seed: int = typer.Option(
        0, "--seed", help="Random-search seed (same seed, same trials).", rich_help_panel=o.SEARCH
    ),
    layers: Optional[str] = typer.Option(
        None, "--layers", help="Layers to search, 1-based, e.g. 1-12 (default: all).", rich_help_panel=o.SEARCH
    ),
    heads: Optional[str] = typer.Option(
        None, "--heads", help="Heads to search, 1-based, e.g. 1-12 (default: all).", rich_help_panel=o.SEARCH
    ),
    thresholds: str = typer.Option(
        "0.05:0.5:0.1",
        "--thresholds",
        help="start:stop:step (stop excluded) or a comma list.",
        rich_help_panel=o.SEARCH,
    ),
    blur_scales: str = typer.Option(
        "0.01:0.11:0.02",
        "--blur-scales",
        help="Blur σ scales for stage 2, start:stop:step or a list.",
        rich_help_panel=o.SEARCH,
    ),
    out: Path = typer.Option(
        Path("preset.json"),
        "--out",
        "-o",
        help="Preset file to write (heat-map PNG goes beside it).",
        rich_help_panel=o.IO,
    ),
    cache: Optional[Path] = typer.Option(
        None,
        "--cache",
        help="Capture cache folder (default: <out stem>.cache beside the preset).",
        rich_help_panel=o.IO,
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Keep captures in memory only.", rich_help_panel=o.IO),
    top: int = typer.Option(10, "--top", min=1, help="Rows in the table of best trials.", rich_help_panel=o.IO),
    device: o.Device = "auto",
    as_json: o.AsJson = False,
) -> None:
    """Search layer, head, threshold (stage 1) and blur σ (stage 2) by the CLIP reward; write a preset."""
    from pnpseg.tuning.tune import tune as run_tune
    from pnpseg.tuning.write import heatmap_path

    adapter = adapter or DEFAULT_ADAPTER  # tune has no --preset to take one from
    cache_dir = None if no_cache else (cache or out.parent / f"{out.stem}.cache")
    with _Bars(f"Tuning {adapter} with the {scorer} scorer") as bars:
        result = run_tune(
            inputs,
            labels,
            adapter=adapter,
            model=model,
            scorer=scorer,
            scorer_model=scorer_model,
            trials=trials,
            seed=seed,
            layers=layers,
            heads=heads,
            thresholds=thresholds,
            blur_scales=blur_scales,
            image_size=image_size,
            device=device,
            cache=cache_dir,
            out=out,
            progress=bars.update,
        )
    _print_tables(result, top)
    best, possible = result.best, result.best.reward.possible
    per_class = ", ".join(f"{k} {v:.2f}" for k, v in best.reward.per_class.items())
    notes = []
    if result.ignored:
        notes.append(f"{result.ignored} input image(s) not in the labels file are ignored")
    if result.single_class:
        notes.append(f"{result.single_class} image(s) with one class cannot win (docs/tuning.md)")
    for note in notes:
        console.print(f"[dim]{note}[/]", highlight=False)
    for warning in result.warnings:
        console.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    margin = result.margin
    console.print(
        f"best: layer {best.layer}, head {best.head}, threshold {best.threshold:g}, blur σ {best.blur_sigma:g}; "
        f"reward {best.reward.total}/{possible} (per class: {per_class}); "
        f"stage-1 margin over the median trial {100 * margin['margin']:.1f}%\n"
        f"VLM passes: {result.vlm_passes} for {result.images} image(s) ({result.cache_hits} from the cache) "
        f"at {result.input_size[0]}x{result.input_size[1]} on {result.device}; "
        f"{len(result.stage1) + len(result.stage2)} trials, {result.scored_images} scorer images; "
        f"capture {result.capture_seconds:.1f} s, total {result.seconds:.1f} s\n"
        f"wrote {out} and {heatmap_path(out)}" + (f"; cache {cache_dir}" if cache_dir else ""),
        highlight=False,
        soft_wrap=True,
    )
    if as_json:
        json_summary({"command": "tune", "preset": str(out), "heatmap": str(heatmap_path(out)), **result.to_json()})


class _Bars:
    """Rich progress bars fed by :func:`pnpseg.tune`'s ``progress(stage, done, total)``."""

    NAMES = {"capture": "capture", "stage 1": "stage 1: layer/head/threshold", "stage 2": "stage 2: blur σ"}

    def __init__(self, header: str) -> None:
        from pnpseg.io.progress import progress_bar

        self.header = header
        self.progress = progress_bar(console)
        self.tasks: dict[str, Any] = {}  # stage → rich TaskID

    def __enter__(self) -> _Bars:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.tasks:
            self.progress.stop()

    def update(self, stage: str, done: int, total: int) -> None:
        if not self.tasks:  # the first report: the inputs and the model are checked
            console.print(self.header, highlight=False, soft_wrap=True)
            self.progress.start()
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(self.NAMES.get(stage, stage), total=total)
        self.progress.update(self.tasks[stage], completed=done, total=total)


def _print_tables(result, top: int) -> None:
    """The best trials of each stage."""
    from rich.table import Table

    ranked1 = result.ranked(1)
    best1, possible = result.best_stage1, result.best_stage1.reward.possible
    table = Table(
        title=f"top {min(top, len(ranked1))} of {len(result.stage1)} stage-1 trials (of {result.grid_size} in the grid)"
    )
    for column in ("layer", "head", "threshold", "reward", "margin"):
        table.add_column(column, justify="right")
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
    for trial in result.ranked(2)[:top]:
        blur_table.add_row(f"{trial.blur_sigma:g}", f"{trial.reward.total}/{possible}", f"{trial.reward.margin:.3f}")
    console.print(blur_table)
