"""``pnpseg explain``: figures of what the model sees in one image (docs/explain.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pnpseg.cli.app import app, console, friendly


@app.command()
@friendly
def explain(
    image: Path = typer.Argument(..., help="The image to explain."),
    classes: Optional[str] = typer.Option(None, "--classes", "-c", help='Comma-separated class names, e.g. "cat,dog".'),
    classes_file: Optional[Path] = typer.Option(None, "--classes-file", help="A file with one class name per line."),
    out: Path = typer.Option(Path("pnpseg-explain"), "--out", "-o", help="Folder for the figures and explain.json."),
    heads: bool = typer.Option(
        False, "--heads", help="Also draw the head atlas: round-1 GradCAM of every (layer, head), one figure per class."
    ),
    adapter: Optional[str] = typer.Option(
        None, "--adapter", "-a", help="VLM adapter; default: the preset's, else blip."
    ),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Checkpoint name or local folder."),
    preset: Optional[Path] = typer.Option(
        None, "--preset", help="Parameters from `pnpseg tune`; the atlas then shows each cell's tuning reward."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    image_size: Optional[str] = typer.Option(None, "--image-size", help="Model input size: N or HxW."),
    layer: Optional[int] = typer.Option(None, "--layer", help="Text→image attention layer (1-based)."),
    head: Optional[int] = typer.Option(None, "--head", help="Attention head (1-based)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Keep normalised saliency ≥ T."),
    blur_sigma: Optional[float] = typer.Option(None, "--blur-sigma", help="Blur σ as a fraction of max(H, W)."),
    drop_rounds: Optional[int] = typer.Option(None, "--drop-rounds", help="Saliency DropOut rounds."),
    drop_rule: Optional[str] = typer.Option(None, "--drop-rule", help="median or topk:N."),
    postprocess: Optional[str] = typer.Option(None, "--postprocess", help='Postprocessor chain, e.g. "blur,crf".'),
    background: Optional[bool] = typer.Option(None, "--background/--no-background", help="Background channel."),
    compat: Optional[str] = typer.Option(None, "--compat", help="paper or authors."),
) -> None:
    """Draw each DropOut round, the summed and thresholded maps, each postprocessor and the
    final mask per class (pipeline.png/.svg), and with --heads the head atlas; numbers in
    explain.json."""
    from pnpseg.engines.local import read_class_names
    from pnpseg.explain import explain_image
    from pnpseg.method.preset import apply_preset, load_preset

    names = read_class_names(classes, classes_file)
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
    loaded = load_preset(preset) if preset else None
    adapter, model, params = apply_preset(loaded, adapter, model, params)
    written = explain_image(
        image, names, out, adapter=adapter, model=model, device=device, params=params, heads=heads, preset=loaded
    )
    for path in written:
        console.print(f"wrote {path}", highlight=False)
