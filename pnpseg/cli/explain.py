"""``pnpseg explain``: figures of what the model sees in one image (docs/explain.md)."""

from __future__ import annotations

from pathlib import Path

import typer

import pnpseg.cli.options as o
from pnpseg.cli.app import app, console, json_summary


@app.command()
def explain(
    ctx: typer.Context,
    image: Path = typer.Argument(..., help="The image to explain."),
    classes: o.Classes = None,
    classes_file: o.ClassesFile = None,
    out: Path = typer.Option(
        Path("pnpseg-explain"), "--out", "-o", help="Folder for the figures and explain.json.", rich_help_panel=o.IO
    ),
    heads: bool = typer.Option(
        False,
        "--heads",
        help="Also draw the head atlas: round-1 GradCAM of every (layer, head), one figure per class.",
        rich_help_panel=o.IO,
    ),
    adapter: o.Adapter = None,
    model: o.Model = None,
    preset: o.PresetPath = None,
    device: o.Device = "auto",
    image_size: o.ImageSize = None,
    layer: o.Layer = None,
    head: o.Head = None,
    threshold: o.Threshold = None,
    blur_sigma: o.BlurSigma = None,
    drop_rounds: o.DropRounds = None,
    drop_rule: o.DropRule = None,
    postprocess: o.Postprocess = None,
    background: o.Background = None,
    background_if_fewer: o.BackgroundIfFewer = None,
    compat: o.CompatOption = None,
    as_json: o.AsJson = False,
) -> None:
    """Draw each DropOut round, the summed and thresholded maps, each postprocessor and the
    final mask per class (pipeline.png/.svg), and with --heads the head atlas (with a preset,
    each cell's tuning reward); numbers in explain.json."""
    from pnpseg.explain import explain_image
    from pnpseg.io.class_names import read_class_names

    names = read_class_names(classes, classes_file)
    method = o.method_choice(ctx)
    written = explain_image(
        image,
        names,
        out,
        adapter=method.adapter,
        model=method.model,
        device=device,
        params=method.params,
        heads=heads,
        preset=method.preset_data,
    )
    for path in written:
        console.print(f"wrote {path}", highlight=False)
    if as_json:
        json_summary({"command": "explain", "output": str(out), "written": [str(path) for path in written]})
