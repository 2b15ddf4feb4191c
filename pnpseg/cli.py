"""The ``pnpseg`` command line (Typer). Thin: parsing, I/O and reporting around the library."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import PnpsegError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Open-vocabulary semantic segmentation from off-the-shelf vision-language models (PnP-OVSS).",
)
console = Console(stderr=True)

EXIT_INPUT_FAILED = 1
EXIT_USAGE = 2


def friendly(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn PnpsegError into one red line and exit status 2, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except PnpsegError as error:  # escaped: "pip install 'pnpseg[ray]'" is not markup
            console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_USAGE) from None

    return wrapper


@app.callback()
def main_options(
    plugins_dir: Optional[Path] = typer.Option(
        None, "--plugins-dir", help="Also load every *.py file in this folder as a plugin.", envvar="PNPSEG_PLUGINS_DIR"
    ),
) -> None:
    if plugins_dir is not None:
        from .plugins import load_plugins, load_plugins_dir

        load_plugins()
        try:
            load_plugins_dir(plugins_dir)
        except PnpsegError as error:
            console.print(f"[bold red]error:[/] {error}", highlight=False)
            raise typer.Exit(EXIT_USAGE) from None


@app.command()
@friendly
def plugins(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List installed plugins and what each registers (adapters, postprocessors, scorers, ...)."""
    from .plugins import KINDS, plugin_info

    infos = plugin_info()
    if as_json:
        typer.echo(json.dumps([info.__dict__ for info in infos], indent=2))
        return
    table = Table(title="pnpseg plugins")
    for column in ("plugin", "package", "version", *KINDS):
        table.add_column(column)
    for info in infos:
        table.add_row(info.name, info.package, info.version, *(", ".join(info.provides[k]) or "-" for k in KINDS))
    Console().print(table)


@app.command()
@friendly
def segment(
    inputs: list[str] = typer.Argument(..., help="Image files and/or folders (searched recursively); with --engine ray also scheme://... URIs (s3://, gs://, file://, any pyarrow/fsspec file system)."),
    classes: Optional[str] = typer.Option(None, "--classes", "-c", help='Comma-separated class names, e.g. "cat,dog,grass".'),
    classes_file: Optional[Path] = typer.Option(None, "--classes-file", help="A file with one class name per line."),
    adapter: Optional[str] = typer.Option(None, "--adapter", "-a", help="VLM adapter (see `pnpseg plugins`); default: the preset's, else blip."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Checkpoint name or local folder; default: the adapter's."),
    out: str = typer.Option("pnpseg-output", "--out", "-o", help="Output folder (with --engine ray also a URI)."),
    image_size: Optional[str] = typer.Option(None, "--image-size", help="Model input size: N or HxW (rounded down to the patch size)."),
    layer: Optional[int] = typer.Option(None, "--layer", help="Text→image attention layer (1-based)."),
    head: Optional[int] = typer.Option(None, "--head", help="Attention head (1-based)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Keep normalised saliency ≥ T."),
    blur_sigma: Optional[float] = typer.Option(None, "--blur-sigma", help="Blur σ as a fraction of max(H, W)."),
    drop_rounds: Optional[int] = typer.Option(None, "--drop-rounds", help="Saliency DropOut rounds (1 = plain GradCAM)."),
    drop_rule: Optional[str] = typer.Option(None, "--drop-rule", help="median (paper) or topk:N (authors' code)."),
    postprocess: Optional[str] = typer.Option(None, "--postprocess", help='Postprocessor chain, e.g. "blur,crf" or "none".'),
    background: Optional[bool] = typer.Option(None, "--background/--no-background", help="Label pixels no class claims as background (0)."),
    compat: Optional[str] = typer.Option(None, "--compat", help="paper (default) or authors (the released code's arithmetic)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    batch_size: str = typer.Option("1", "--batch-size", help="Images per forward pass, or auto (largest that fits on the GPU; 1 on CPU)."),
    workers: int = typer.Option(0, "--workers", min=0, help="Processes for blur/CRF, overlapped with the model (0 = serial, in-process); with --engine ray: model workers (actors), default 1."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 (CPU or CUDA) or fp16 (CUDA only): autocast for the model passes."),
    viz: bool = typer.Option(False, "--viz", help="Also write an overlay with a legend to OUT/overlays/."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo images already done; allow a different class list."),
    preset: Optional[Path] = typer.Option(None, "--preset", help="Parameters (and adapter/model) from `pnpseg tune`; explicit flags win."),
    class_source: str = typer.Option("all", "--class-source", help="Which of --classes to segment per image: all, file:PATH, itm[:threshold=T|top=N], clip[:...], llm[:...] (docs/class-sources.md)."),
    engine: str = typer.Option("local", "--engine", help="local (this machine) or ray (a Ray cluster; needs pnpseg[ray], docs/scale-out.md)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="--engine ray: auto, HOST:PORT or ray://HOST:PORT (default: $RAY_ADDRESS, else a local Ray instance)."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", min=0.0, help="--engine ray: GPUs per model worker (fractions share a GPU)."),
    cpus_per_worker: Optional[float] = typer.Option(None, "--cpus-per-worker", min=0.0, help="--engine ray: CPUs per model worker (default 1, less on clusters with no CPU to spare for blur/CRF)."),
) -> None:
    """Segment images into the given classes; write label PNGs, classes.json and manifest.jsonl."""
    from .preset import apply_preset, load_preset
    from .run import SegmentJob, read_class_names

    from .parallel import parse_batch_size

    names = read_class_names(classes, classes_file)
    params = dict(
        layer=layer, head=head, threshold=threshold, blur_sigma=blur_sigma, drop_rounds=drop_rounds,
        drop_rule=drop_rule, image_size=image_size, postprocess=postprocess, background=background, compat=compat,
    )  # fmt: skip
    adapter, model, params = apply_preset(load_preset(preset) if preset else None, adapter, model, params)
    if engine not in ("local", "ray"):
        raise PnpsegError(f"--engine must be local or ray, got {engine!r}")
    if engine == "ray":
        from .ray_engine import RaySegmentJob

        job = RaySegmentJob(inputs, names, out, adapter=adapter or "blip", model=model, device=device, params=params,
                            batch_size=parse_batch_size(batch_size), viz=viz, overwrite=overwrite, console=console,
                            workers=workers or 1, precision=precision, class_source=class_source,
                            address=ray_address, gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker)  # fmt: skip
        if job.run().failed:
            raise typer.Exit(EXIT_INPUT_FAILED)
        return
    job = SegmentJob([Path(p) for p in inputs], names, Path(out), adapter=adapter, model=model, device=device, params=params,
                     batch_size=parse_batch_size(batch_size), viz=viz, overwrite=overwrite, console=console,
                     workers=workers, precision=precision, class_source=class_source)  # fmt: skip
    summary = job.run()
    if summary.failed:
        raise typer.Exit(EXIT_INPUT_FAILED)


from .cli_tune import tune  # noqa: E402

app.command()(friendly(tune))

from .cli_eval import eval_command  # noqa: E402

app.command("eval")(friendly(eval_command))


def main() -> None:
    app(prog_name="pnpseg")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
