"""``pnpseg convert blip``: the plugin's command, added through the ``register_commands`` hook."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pnpseg import AsJson, console, json_summary

convert_app = typer.Typer(no_args_is_help=True, help="Convert model checkpoints for use with pnpseg's adapters.")


@convert_app.command("blip")
def convert_blip_command(
    checkpoint: Path = typer.Argument(..., help="An original BLIP or LAVIS ITM/retrieval checkpoint (.pth)."),
    out_dir: Path = typer.Argument(..., help="The Hugging Face folder to write (must not exist)."),
    image_size: Optional[int] = typer.Option(
        None,
        "--image-size",
        help="Image size of the converted model (position embeddings resized); default: the checkpoint's.",
    ),
    tokenizer: Optional[str] = typer.Option(
        None,
        "--tokenizer",
        help="Folder with BERT's vocab.txt; default: the one beside CHECKPOINT, else bert-base-uncased (cache or hub).",
    ),
    as_json: AsJson = False,
) -> None:
    """Turn a BLIP/LAVIS ITM checkpoint into a folder for `--adapter blip --model OUT_DIR`."""
    from .convert import convert_blip

    convert_blip(checkpoint, out_dir, image_size=image_size, tokenizer=tokenizer)
    console.print(f"wrote {out_dir}: use it with --adapter blip --model {out_dir}", highlight=False)
    if as_json:
        json_summary({"command": "convert blip", "output": str(out_dir)})
