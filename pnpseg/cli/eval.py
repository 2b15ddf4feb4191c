"""``pnpseg eval``: score PnP-OVSS (or label PNGs already written) on a segmentation dataset.

Registered on :data:`pnpseg.cli.app.app`; heavy imports happen inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

import pnpseg.cli.options as o
from pnpseg.cli.app import app, console, json_summary
from pnpseg.errors import PnpsegError


@app.command("eval")
def eval_command(
    ctx: typer.Context,
    dataset: str = typer.Option(
        ...,
        "--dataset",
        "-d",
        help="Dataset name: voc21, voc20, pc60, pc59, coco-object, coco-stuff, ade20k, cityscapes; their -authors variants (scored as the authors' released code: voc21-authors, pc60-authors, coco-object-authors, coco-stuff-authors, ade20k-authors); or a plugin's.",
        rich_help_panel=o.IO,
    ),
    root: Path = typer.Option(
        ...,
        "--root",
        help="The dataset's root folder (MMSegmentation layout; see docs/evaluation.md).",
        rich_help_panel=o.IO,
    ),
    protocol: o.Protocol = typer.Option(
        o.Protocol.pnp,
        "--protocol",
        help="pnp (the paper's) or standard (MMSegmentation-style).",
        rich_help_panel=o.METHOD,
    ),
    predictions: Optional[Path] = typer.Option(
        None,
        "--predictions",
        help="Score label PNGs in this folder (DIR/<image id>.png, 0 = background, i = class i; classes.json honoured) instead of running a model.",
        rich_help_panel=o.IO,
    ),
    adapter: o.Adapter = None,
    model: o.Model = None,
    preset: o.PresetPath = None,
    limit: Optional[int] = typer.Option(
        None, "--limit", min=0, help="Evaluate only the first N images.", rich_help_panel=o.IO
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Output folder (default: pnpseg-eval/<dataset>-<protocol>).", rich_help_panel=o.IO
    ),
    save_predictions: bool = typer.Option(
        False,
        "--save-predictions",
        help="Also write label PNGs to OUT/predictions/ (re-scorable with --predictions).",
        rich_help_panel=o.IO,
    ),
    device: o.Device = "auto",
    image_size: o.ImageSize = None,
    layer: o.Layer = None,
    head: o.Head = None,
    threshold: o.Threshold = None,
    blur_sigma: o.BlurSigma = None,
    drop_rounds: o.DropRounds = None,
    drop_rule: o.DropRule = None,
    postprocess: o.Postprocess = None,
    compat: o.CompatOption = None,
    synonyms: Optional[bool] = typer.Option(
        None,
        "--synonyms/--no-synonyms",
        help="Prompt every synonym of a class and max-pool them (default: on for standard, off for pnp).",
        rich_help_panel=o.METHOD,
    ),
    pnp_background: Optional[str] = typer.Option(
        None,
        "--pnp-background",
        help="pnp protocol background channel: always, never or if-fewer-predicted:N (when fewer than N classes are predicted; default: the dataset's; docs/method.md §4).",
        rich_help_panel=o.METHOD,
    ),
    bg_threshold: float = typer.Option(
        0.0,
        "--bg-threshold",
        min=0.0,
        max=1.0,
        help="standard protocol, datasets with a background class: background also where the top class probability is below this (MMSeg's prob_thd; 0 = argmax only).",
        rich_help_panel=o.METHOD,
    ),
    slide: Optional[str] = typer.Option(
        None, "--slide", help="Sliding window CROP:STRIDE in pixels (after --short-side).", rich_help_panel=o.METHOD
    ),
    short_side: Optional[int] = typer.Option(
        None,
        "--short-side",
        min=1,
        help="Resize images to this short side before segmenting.",
        rich_help_panel=o.METHOD,
    ),
    checkpoint_every: int = typer.Option(
        20, "--checkpoint-every", min=1, help="Save the resumable state every N images.", rich_help_panel=o.IO
    ),
    overwrite: o.Overwrite = False,
    export_classes: Optional[Path] = typer.Option(
        None,
        "--export-classes",
        help="Write the dataset's prompted class names to this file (one per line, for `pnpseg segment --classes-file`) and exit.",
        rich_help_panel=o.IO,
    ),
    engine: o.Engine = o.EngineName.local,
    ray_address: o.RayAddress = None,
    workers: int = typer.Option(
        1, "--workers", min=1, help="--engine ray: model workers (actors).", rich_help_panel=o.ENGINE
    ),
    gpus_per_worker: o.GpusPerWorker = 0.0,
    as_json: o.AsJson = False,
) -> None:
    """Evaluate on a dataset: mIoU, per-class IoU and pixel accuracy; resumable."""
    from pnpseg.evaluation.datasets import get_dataset
    from pnpseg.evaluation.evaluate import Evaluation
    from pnpseg.evaluation.folder import export_classes as write_class_list
    from pnpseg.evaluation.spec import EvalSpec

    if export_classes is not None and export_classes.is_dir():
        raise PnpsegError(f"--export-classes needs a file name, but {str(export_classes)!r} is a folder")
    data = get_dataset(dataset, root)
    if export_classes is not None:
        names = [c[0] for c in data.prompt_classes]
        write_class_list(export_classes, names)
        console.print(f"wrote {len(names)} class names to {export_classes}", highlight=False)
        return
    out = out or Path("pnpseg-eval") / f"{dataset}-{protocol.value}"
    spec = EvalSpec.make(
        data,
        protocol=protocol.value,
        predictions=predictions,
        method=o.method_choice(ctx) if predictions is None else None,
        device=device,
        synonyms=synonyms,
        pnp_background=pnp_background,
        bg_threshold=bg_threshold,
        slide=slide,
        short_side=short_side,
    )
    run: dict[str, Any] = dict(
        limit=limit, save_predictions=save_predictions, checkpoint_every=checkpoint_every, overwrite=overwrite
    )
    bar = _Bar(f"Evaluating {data.name} ({data.num_classes} classes, protocol {protocol.value})")
    with bar:
        if engine == o.EngineName.ray:
            from pnpseg.engines.ray import ray_evaluate

            result = ray_evaluate(
                spec,
                out,
                address=ray_address,
                workers=workers,
                gpus_per_worker=gpus_per_worker,
                **run,
                progress=bar.update,
            )
        else:
            result = Evaluation.of(spec, out, **run, progress=bar.update).run()
    _report(result)
    if as_json:
        json_summary({"command": "eval", **result.to_json()})


class _Bar:
    """A Rich progress bar with the running mIoU, fed by ``progress(done, total, miou)``."""

    def __init__(self, header: str) -> None:
        from pnpseg.io.progress import progress_bar

        self.header = header
        self.progress = progress_bar(console, "mIoU {task.fields[miou]}")
        self.task: Any = None  # a rich TaskID once started

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.task is not None:
            self.progress.stop()

    def update(self, done: int, total: int, miou: float) -> None:
        from pnpseg.evaluation.report import format_percent

        if self.task is None:  # the first report: the records to reuse are known
            console.print(f"{self.header}: {total} image(s) to do", highlight=False, soft_wrap=True)
            self.progress.start()
            self.task = self.progress.add_task("eval", total=total, miou=format_percent(miou))
        self.progress.update(self.task, completed=done, miou=format_percent(miou))


def _report(result) -> None:
    """The per-class table, mIoU, aAcc and where the results are."""
    from rich.table import Table

    from pnpseg.evaluation.report import format_percent

    table = Table(title=f"pnpseg eval: {result.dataset} ({result.protocol})")
    table.add_column("class")
    table.add_column("IoU", justify="right")
    for name, iou in result.per_class.items():
        table.add_row(name, format_percent(iou))
    table.add_section()
    table.add_row("[bold]mIoU[/]", f"[bold]{format_percent(result.miou)}[/]")
    table.add_row("aAcc", format_percent(result.aacc))
    table.add_row("images", str(result.images))
    console.print(table)
    console.print(
        f"{result.computed} image(s) scored in this run, {result.reused} result(s) reused from the saved state "
        f"(their label and prediction inputs unchanged); results written to {result.out}",
        highlight=False,
        soft_wrap=True,
    )
