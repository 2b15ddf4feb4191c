"""``pnpseg serve labelstudio``: a Label Studio ML backend (docs/formats.md)."""

from __future__ import annotations

import os
from typing import Optional

import typer

import pnpseg.cli.options as o
from pnpseg.cli.app import app, console
from pnpseg.cli.demo import check_port

serve_app = typer.Typer(help="Answer annotation tools from a warm model.", no_args_is_help=True)
app.add_typer(serve_app, name="serve")


@serve_app.command("labelstudio")
def labelstudio(
    ctx: typer.Context,
    adapter: o.Adapter = None,
    model: o.Model = None,
    preset: o.PresetPath = None,
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
        help="Which of the project's labels to segment per image: all, itm[:...], clip[:...], llm[:...] (docs/class-sources.md).",
        rich_help_panel=o.METHOD,
    ),
    device: o.Device = "auto",
    precision: o.Precision = typer.Option(
        o.Precision.fp32, "--precision", help="fp32, bf16, fp16, bf16-vision or fp16-vision.", rich_help_panel=o.ENGINE
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; the default serves this machine only."),
    port: int = typer.Option(9090, "--port", min=0, max=65535, help="Port (0: any free port)."),
    label_studio_url: Optional[str] = typer.Option(
        None,
        "--label-studio-url",
        help="Label Studio's address, to fetch task images (default: what Label Studio sends at setup, or $LABEL_STUDIO_URL).",
    ),
    label_studio_token: Optional[str] = typer.Option(
        None,
        "--label-studio-token",
        help="Its API token (legacy token; default: the one sent at setup, or $LABEL_STUDIO_API_KEY).",
    ),
    max_image_pixels: o.MaxImagePixels = None,
) -> None:
    """Serve a Label Studio ML backend: Label Studio asks it to pre-annotate each task with
    brush masks of the project's labels (connect it in the project's Settings → Model)."""
    from pnpseg.io.images import set_max_image_pixels
    from pnpseg.method.segmenter import Segmenter
    from pnpseg.serve.labelstudio import Backend, Fetcher, make_server
    from pnpseg.sources.class_sources import build_class_source
    from pnpseg.specs import parse_spec

    method = o.method_choice(ctx)
    set_max_image_pixels(max_image_pixels)
    if port:
        check_port(host, port)  # a taken port: exit 3, before the model loads
    if parse_spec(class_source, "--class-source")[0] == "file":
        raise typer.BadParameter("file: names classes per input file; a backend has tasks", param_hint="--class-source")
    build_class_source(class_source, ["object"])  # a bad spec fails before the model loads
    segmenter = Segmenter.from_pretrained(  # once: every request is answered by this warm model
        method.model, adapter=method.adapter, device=device, precision=precision.value, **method.params
    )
    version = f"pnpseg-{method.adapter}" + (f"-{method.model}" if method.model else "")
    fetch = Fetcher(
        label_studio_url or os.environ.get("LABEL_STUDIO_URL"),
        label_studio_token or os.environ.get("LABEL_STUDIO_API_KEY"),
    )
    backend = Backend(segmenter, lambda names: build_class_source(class_source, names), version, fetch)
    server = make_server(backend, host, port, lambda line: console.print(line, highlight=False, markup=False))
    console.print(
        f"pnpseg Label Studio backend on http://{host}:{server.server_port} ({version}; Ctrl+C stops it)",
        highlight=False,
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()
