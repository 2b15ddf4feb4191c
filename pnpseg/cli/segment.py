"""``pnpseg segment``: folders of images + class names → label PNGs, classes.json, manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pnpseg.cli.app import EXIT_INPUT_FAILED, app, console, friendly, print_json
from pnpseg.errors import PnpsegError
from pnpseg.method.defaults import DEFAULT_ADAPTER


@app.command()
@friendly
def segment(
    inputs: list[str] = typer.Argument(
        ...,
        help="Image files and/or folders (searched recursively); - reads one path per line from stdin; with --engine ray also scheme://... URIs (s3://, gs://, file://, any pyarrow/fsspec file system).",
    ),
    classes: Optional[str] = typer.Option(
        None, "--classes", "-c", help='Comma-separated class names, e.g. "cat,dog,grass".'
    ),
    classes_file: Optional[Path] = typer.Option(None, "--classes-file", help="A file with one class name per line."),
    adapter: Optional[str] = typer.Option(
        None, "--adapter", "-a", help="VLM adapter (see `pnpseg plugins`); default: the preset's, else blip."
    ),
    model: Optional[str] = typer.Option(
        None, "--model", "-m", help="Checkpoint name or local folder; default: the adapter's."
    ),
    out: str = typer.Option("pnpseg-output", "--out", "-o", help="Output folder (with --engine ray also a URI)."),
    image_size: Optional[str] = typer.Option(
        None, "--image-size", help="Model input size: N or HxW (rounded down to the patch size)."
    ),
    layer: Optional[int] = typer.Option(None, "--layer", help="Text→image attention layer (1-based)."),
    head: Optional[int] = typer.Option(None, "--head", help="Attention head (1-based)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Keep normalised saliency ≥ T."),
    blur_sigma: Optional[float] = typer.Option(None, "--blur-sigma", help="Blur σ as a fraction of max(H, W)."),
    drop_rounds: Optional[int] = typer.Option(
        None, "--drop-rounds", help="Saliency DropOut rounds (1 = plain GradCAM)."
    ),
    drop_rule: Optional[str] = typer.Option(
        None, "--drop-rule", help="median or topk:N; default: median, or topk:10 with --compat authors."
    ),
    postprocess: Optional[str] = typer.Option(
        None, "--postprocess", help='Postprocessor chain, e.g. "blur,crf" or "none".'
    ),
    background: Optional[bool] = typer.Option(
        None, "--background/--no-background", help="Label pixels no class claims as background (0)."
    ),
    compat: Optional[str] = typer.Option(
        None, "--compat", help="paper (default) or authors (the released code's arithmetic)."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    batch_size: str = typer.Option(
        "1", "--batch-size", help="Images per forward pass, or auto (largest that fits on the GPU; 1 on CPU)."
    ),
    workers: int = typer.Option(
        0,
        "--workers",
        min=0,
        help="Processes for blur/CRF, overlapped with the model (0 = serial, in-process); with --engine ray: model workers (actors), default 1.",
    ),
    precision: str = typer.Option(
        "fp32", "--precision", help="fp32, bf16 (CPU or CUDA) or fp16 (CUDA only): autocast for the model passes."
    ),
    viz: bool = typer.Option(False, "--viz", help="Also write an overlay with a legend to OUT/overlays/."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Redo images already done; allow a different class list."
    ),
    preset: Optional[str] = typer.Option(
        None,
        "--preset",
        help="Parameters (and adapter/model) from `pnpseg tune`: a file or hf://ORG/REPO/FILE.json; explicit flags win.",
    ),
    class_source: str = typer.Option(
        "all",
        "--class-source",
        help="Which of --classes to segment per image: all, file:PATH, itm[:threshold=T|top=N], clip[:...], llm[:...] (docs/class-sources.md).",
    ),
    formats: str = typer.Option(
        "png",
        "--format",
        help="Output formats, comma-separated: png (label PNGs, always written), coco, cvat, labelstudio (docs/formats.md).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout (progress stays on stderr)."),
    engine: str = typer.Option(
        "local", "--engine", help="local (this machine) or ray (a Ray cluster; needs pnpseg[ray], docs/scale-out.md)."
    ),
    ray_address: Optional[str] = typer.Option(
        None,
        "--ray-address",
        help="--engine ray: auto, HOST:PORT or ray://HOST:PORT (default: $RAY_ADDRESS, else a local Ray instance).",
    ),
    gpus_per_worker: float = typer.Option(
        0.0, "--gpus-per-worker", min=0.0, help="--engine ray: GPUs per model worker (fractions share a GPU)."
    ),
    cpus_per_worker: Optional[float] = typer.Option(
        None,
        "--cpus-per-worker",
        min=0.0,
        help="--engine ray: CPUs per model worker (default 1, less on clusters with no CPU to spare for blur/CRF).",
    ),
) -> None:
    """Segment images into the given classes; write label PNGs, classes.json and manifest.jsonl."""
    from pnpseg.engines.local import SegmentJob, read_class_names
    from pnpseg.engines.parallel import parse_batch_size
    from pnpseg.io.formats import parse_formats
    from pnpseg.method.preset import apply_preset, load_preset

    names = read_class_names(classes, classes_file)
    inputs = read_inputs(inputs)
    chosen_formats = parse_formats(formats)
    params = dict(
        layer=layer,
        head=head,
        threshold=threshold,
        blur_sigma=blur_sigma,
        drop_rounds=drop_rounds,
        drop_rule=drop_rule,
        image_size=image_size,
        postprocess=postprocess,
        background=background,
        compat=compat,
    )
    adapter, model, params = apply_preset(load_preset(preset) if preset else None, adapter, model, params)
    if engine not in ("local", "ray"):
        raise PnpsegError(f"--engine must be local or ray, got {engine!r}")
    if engine == "ray":
        from pnpseg.engines.ray import RaySegmentJob

        job = RaySegmentJob(
            inputs,
            names,
            out,
            adapter=adapter or DEFAULT_ADAPTER,
            model=model,
            device=device,
            params=params,
            batch_size=parse_batch_size(batch_size),
            viz=viz,
            overwrite=overwrite,
            console=console,
            workers=workers or 1,
            precision=precision,
            class_source=class_source,
            formats=chosen_formats,
            address=ray_address,
            gpus_per_worker=gpus_per_worker,
            cpus_per_worker=cpus_per_worker,
        )
        summary = job.run()
        if as_json:
            print_json({"command": "segment", **summary.to_json(job.folder.location, job.folder.manifest_uri)})
        if summary.failed:
            raise typer.Exit(EXIT_INPUT_FAILED)
        return
    job = SegmentJob(
        [Path(p) for p in inputs],
        names,
        Path(out),
        adapter=adapter,
        model=model,
        device=device,
        params=params,
        batch_size=parse_batch_size(batch_size),
        viz=viz,
        overwrite=overwrite,
        console=console,
        workers=workers,
        precision=precision,
        class_source=class_source,
        formats=chosen_formats,
    )
    summary = job.run()
    if as_json:
        print_json({"command": "segment", **summary.to_json(job.folder.location, job.folder.manifest_uri)})
    if summary.failed:
        raise typer.Exit(EXIT_INPUT_FAILED)


def read_inputs(inputs: list[str]) -> list[str]:
    """``-`` stands for the paths on stdin, one per line (blank lines skipped), as ``find`` prints them."""
    if "-" not in inputs:
        return inputs
    stdin = [line.strip() for line in typer.get_text_stream("stdin").read().splitlines() if line.strip()]
    if not stdin:
        raise PnpsegError("segment -: no paths on stdin")
    expanded: list[str] = []
    for given in inputs:
        expanded += stdin if given == "-" else [given]
    return expanded
