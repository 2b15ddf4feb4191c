"""``pnpseg demo``: the local web app (docs/explain.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

import pnpseg.cli.options as o
from pnpseg.cli.app import app, console
from pnpseg.errors import EnvironmentProblem


@app.command()
def demo(
    ctx: typer.Context,
    adapter: o.Adapter = None,
    model: o.Model = None,
    preset: o.PresetPath = None,
    device: o.Device = "auto",
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to bind; the default serves this machine only.", rich_help_panel=o.SERVER
    ),
    port: int = typer.Option(
        7860, "--port", min=0, max=65535, help="Port (0: any free port).", rich_help_panel=o.SERVER
    ),
    image: Optional[Path] = typer.Option(
        None, "--image", help="Open the page with this image (and --classes segmented at once).", rich_help_panel=o.IO
    ),
    classes: o.Classes = None,
    max_image_pixels: o.MaxImagePixels = None,
) -> None:
    """Open a local web app: upload an image, type class names, move threshold and blur σ
    (instant, from cached saliency), pick layer and head (re-runs the model), draw the head
    atlas, download the label PNG and manifest record."""
    from pnpseg.demo import DemoSession, build_demo
    from pnpseg.io.images import set_max_image_pixels

    method = o.method_choice(ctx)
    set_max_image_pixels(max_image_pixels)  # uploads are decoded under the same limit as segment's inputs
    port = check_port(host, port)  # before the model loads
    session = DemoSession(method.adapter, method.model, device, method.params)
    page = build_demo(session, image, classes or "")
    console.print(f"pnpseg demo on http://{host}:{port} (Ctrl+C stops it)", highlight=False)
    page.launch(server_name=host, server_port=port, show_error=True, quiet=True)


def check_port(host: str, port: int) -> int:
    """The port to serve on: ``port``, refused in one line (exit 3) before any work if
    something else listens there, or with 0 one the OS picks free now."""
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will bind it
        try:
            probe.bind((host, port))
        except OSError as error:
            raise EnvironmentProblem(
                f"cannot serve on {host}:{port}: {error.strerror or error}; choose another --port (0: any free port)"
            ) from None
        return probe.getsockname()[1]
