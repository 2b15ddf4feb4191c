"""``pnpseg segment``: folders of images + class names → label PNGs, classes.json, manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

import pnpseg.cli.options as o
from pnpseg.cli.app import app, console, json_summary
from pnpseg.errors import ExitCode, PnpsegError


@app.command()
def segment(
    ctx: typer.Context,
    inputs: list[str] = typer.Argument(
        ...,
        help="Image files and/or folders (searched recursively); - reads one path per line from stdin (see --null, --root); with --engine ray also scheme://... URIs (s3://, gs://, file://, any pyarrow/fsspec file system).",
    ),
    null: bool = typer.Option(
        False, "--null", "-0", help="Paths on stdin are NUL-separated (find -print0).", rich_help_panel=o.IO
    ),
    root: Optional[Path] = typer.Option(
        None,
        "--root",
        help="Name each output by its input's path relative to this folder, so a/x.jpg and b/x.jpg stay apart "
        "(default with -: the current folder).",
        rich_help_panel=o.IO,
    ),
    classes: o.Classes = None,
    classes_file: o.ClassesFile = None,
    adapter: o.Adapter = None,
    model: o.Model = None,
    preset: o.PresetPath = None,
    out: str = typer.Option(
        "pnpseg-output", "--out", "-o", help="Output folder (with --engine ray also a URI).", rich_help_panel=o.IO
    ),
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
    class_source: str = typer.Option(
        "all",
        "--class-source",
        help="Which of --classes to segment per image: all, file:PATH, itm[:threshold=T|top=N], clip[:...], llm[:...] (docs/class-sources.md).",
        rich_help_panel=o.METHOD,
    ),
    device: o.Device = "auto",
    batch_size: str = typer.Option(
        "1",
        "--batch-size",
        help="Images per forward pass, or auto (largest that fits on the GPU; 1 on CPU).",
        rich_help_panel=o.ENGINE,
    ),
    workers: int = typer.Option(
        0,
        "--workers",
        min=0,
        help="Processes for blur/CRF, overlapped with the model (0 = serial, in-process); with --engine ray: model workers (actors), default 1.",
        rich_help_panel=o.ENGINE,
    ),
    model_workers: int = typer.Option(
        0,
        "--model-workers",
        min=0,
        help="Processes that each run the model at one thread (CPU, local engine; 0 = in-process): on a CPU with few cores, one image's CRF then overlaps the next ones' model passes. Labels unchanged; memory: one model each.",
        rich_help_panel=o.ENGINE,
    ),
    precision: o.Precision = typer.Option(
        o.Precision.fp32,
        "--precision",
        help="Autocast for the model passes: fp32, bf16 (CPU or CUDA) or fp16 (CUDA only); bf16-vision / fp16-vision: the vision tower alone, the text tower and gradient in fp32.",
        rich_help_panel=o.ENGINE,
    ),
    viz: bool = typer.Option(
        False, "--viz", help="Also write an overlay with a legend to OUT/overlays/.", rich_help_panel=o.IO
    ),
    max_image_pixels: o.MaxImagePixels = None,
    overwrite: o.Overwrite = False,
    formats: str = typer.Option(
        "png",
        "--format",
        help="Output formats, comma-separated: png (label PNGs, always written), coco, cvat, labelstudio (docs/formats.md).",
        rich_help_panel=o.IO,
    ),
    as_json: o.AsJson = False,
    engine: o.Engine = o.EngineName.local,
    ray_address: o.RayAddress = None,
    gpus_per_worker: o.GpusPerWorker = 0.0,
    cpus_per_worker: Optional[float] = typer.Option(
        None,
        "--cpus-per-worker",
        min=0.0,
        help="--engine ray: CPUs per model worker (default 1, less on clusters with no CPU to spare for blur/CRF).",
        rich_help_panel=o.ENGINE,
    ),
) -> None:
    """Segment images into the given classes; write label PNGs, classes.json and manifest.jsonl."""
    from pnpseg.engines.common import JobSpec
    from pnpseg.engines.local.parallel import parse_batch_size
    from pnpseg.io.class_names import read_class_names
    from pnpseg.io.formats import parse_formats
    from pnpseg.io.images import set_max_image_pixels

    names = read_class_names(classes, classes_file)
    if "-" in inputs:
        inputs, root = read_inputs(inputs, null), root or Path.cwd()
    chosen_formats = parse_formats(formats)
    method = o.method_choice(ctx)
    set_max_image_pixels(max_image_pixels)
    spec = JobSpec(names, method.adapter, method.model, device, method.params, precision.value, class_source)
    job: Any
    if engine == o.EngineName.ray:
        if model_workers:
            raise PnpsegError(
                "--model-workers is for the local engine; with --engine ray, --workers sets the model workers"
            )
        from pnpseg.engines.ray import RaySegmentJob as Job

        own: dict[str, Any] = dict(
            workers=workers or 1,
            address=ray_address,
            gpus_per_worker=gpus_per_worker,
            cpus_per_worker=cpus_per_worker,
            max_image_pixels=max_image_pixels,
        )
    else:
        from pnpseg.engines.local import SegmentJob as Job  # type: ignore[assignment]

        own = dict(workers=workers, model_workers=model_workers)
    job = Job(
        spec,
        inputs,
        out,
        batch_size=parse_batch_size(batch_size),
        viz=viz,
        overwrite=overwrite,
        formats=chosen_formats,
        root=root,
        console=console,
        **own,
    )
    summary = job.run()
    if as_json:
        json_summary({"command": "segment", **summary.to_json(job.folder.location, job.folder.manifest_uri)})
    if not summary.ok:
        raise typer.Exit(ExitCode.INPUT_FAILED)


def read_inputs(inputs: list[str], null: bool) -> list[str]:
    """``-`` stands for the paths on stdin, as ``find`` (or ``find -print0`` with ``null``) prints them."""
    from pnpseg.io.pathlist import split_paths

    stdin = split_paths(typer.get_binary_stream("stdin").read(), null)
    if not stdin:
        raise PnpsegError("segment -: no paths on stdin")
    expanded: list[str] = []
    for given in inputs:
        expanded += stdin if given == "-" else [given]
    return expanded
