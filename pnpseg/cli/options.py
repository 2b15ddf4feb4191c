"""Options shared by several commands, defined once, grouped in help panels.

Panels: **Method** (adapter, model, preset and every :class:`~pnpseg.SegmentParams` flag),
**Input / output** and **Engine**. Closed sets of values are Enums, so ``--help`` lists them
and a typo is a usage error (exit 2) before anything runs. Flags that set a parameter carry
the parameter's name, and :func:`method_choice` turns them, with ``--preset``, into what a
Segmenter needs: the one place a command builds its parameters.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

METHOD = "Method"
IO = "Input / output"
ENGINE = "Engine"
SEARCH = "Search"
SERVER = "Server"


class Compat(str, Enum):
    paper = "paper"
    authors = "authors"


class EngineName(str, Enum):
    local = "local"
    ray = "ray"


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"
    bf16_vision = "bf16-vision"
    fp16_vision = "fp16-vision"


class Protocol(str, Enum):
    pnp = "pnp"
    standard = "standard"


# -- classes -------------------------------------------------------------------------------
Classes = Annotated[
    Optional[str],
    typer.Option("--classes", "-c", help='Comma-separated class names, e.g. "cat,dog,grass".', rich_help_panel=IO),
]
ClassesFile = Annotated[
    Optional[Path],
    typer.Option(
        "--classes-file",
        help="A UTF-8 file with one class name per line; a line starting with # is a comment.",
        rich_help_panel=IO,
    ),
]


AsJson = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print one JSON document on stdout, also on failure (with exit_code and error); progress stays on stderr.",
        rich_help_panel=IO,
    ),
]
Overwrite = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Start over instead of resuming what --out holds (segment: also allows another class list).",
        rich_help_panel=IO,
    ),
]


MaxImagePixels = Annotated[
    Optional[int],
    typer.Option(
        "--max-image-pixels",
        min=0,
        help="Refuse images with more pixels than this, a guard against decompression bombs (default ~89 million; 0: no limit).",
        rich_help_panel=IO,
    ),
]


# -- method ----------------------------------------------------------------------------
Adapter = Annotated[
    Optional[str],
    typer.Option(
        "--adapter",
        "-a",
        help="VLM adapter (see `pnpseg plugins`); default: the preset's, else blip.",
        rich_help_panel=METHOD,
    ),
]
Model = Annotated[
    Optional[str],
    typer.Option(
        "--model", "-m", help="Checkpoint name or local folder; default: the adapter's.", rich_help_panel=METHOD
    ),
]
PresetPath = Annotated[
    Optional[str],
    typer.Option(
        "--preset",
        help="Parameters (and adapter/model) from `pnpseg tune`: a file or hf://ORG/REPO/FILE.json; explicit flags "
        "win (schema: docs/preset.schema.json).",
        rich_help_panel=METHOD,
    ),
]
ImageSize = Annotated[
    Optional[str],
    typer.Option(
        "--image-size",
        help="Model input size N or HxW, rounded down to a multiple of the model's patch size (the size used is "
        "recorded); smaller than one patch or larger than 4096 is an error.",
        rich_help_panel=METHOD,
    ),
]
Layer = Annotated[
    Optional[int], typer.Option("--layer", help="Text→image attention layer (1-based).", rich_help_panel=METHOD)
]
Head = Annotated[Optional[int], typer.Option("--head", help="Attention head (1-based).", rich_help_panel=METHOD)]
Threshold = Annotated[
    Optional[float],
    typer.Option("--threshold", help="Keep normalised saliency ≥ T, in [0, 1).", rich_help_panel=METHOD),
]
BlurSigma = Annotated[
    Optional[float],
    typer.Option("--blur-sigma", help="Blur σ as a fraction of max(H, W), in [0, 1].", rich_help_panel=METHOD),
]
DropRounds = Annotated[
    Optional[int],
    typer.Option("--drop-rounds", help="Saliency DropOut rounds (1 = plain GradCAM).", rich_help_panel=METHOD),
]
DropRule = Annotated[
    Optional[str],
    typer.Option(
        "--drop-rule",
        help="median (paper) or topk:N (authors' code); default: median, or topk:10 with --compat authors.",
        rich_help_panel=METHOD,
    ),
]
Postprocess = Annotated[
    Optional[str],
    typer.Option("--postprocess", help='Postprocessor chain, e.g. "blur,crf" or "none".', rich_help_panel=METHOD),
]
Background = Annotated[
    Optional[bool],
    typer.Option(
        "--background/--no-background", help="Label pixels no class claims as background (0).", rich_help_panel=METHOD
    ),
]
BackgroundIfFewer = Annotated[
    Optional[int],
    typer.Option(
        "--background-if-fewer",
        min=1,
        metavar="N",
        help="Add the background channel only to images prompted with fewer than N classes "
        "(the released code's rule on Pascal Context, ADE20K and COCO-Stuff: 3).",
        rich_help_panel=METHOD,
    ),
]
CompatOption = Annotated[
    Optional[Compat],
    typer.Option(
        "--compat", help="paper (default) or authors (the released code's arithmetic).", rich_help_panel=METHOD
    ),
]

# -- engine ----------------------------------------------------------------------------
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.", rich_help_panel=ENGINE)]
Engine = Annotated[
    EngineName,
    typer.Option(
        "--engine", help="local (this machine) or ray (needs pnpseg[ray], docs/scale-out.md).", rich_help_panel=ENGINE
    ),
]
RayAddress = Annotated[
    Optional[str],
    typer.Option(
        "--ray-address",
        help="--engine ray: auto, HOST:PORT or ray://HOST:PORT (default: $RAY_ADDRESS, else a local Ray instance).",
        rich_help_panel=ENGINE,
    ),
]
GpusPerWorker = Annotated[
    float,
    typer.Option(
        "--gpus-per-worker",
        min=0.0,
        help="--engine ray: GPUs per model worker (fractions share a GPU).",
        rich_help_panel=ENGINE,
    ),
]


def method_flags(params: dict[str, Any]) -> dict[str, Any]:
    """The :class:`~pnpseg.SegmentParams` fields among a command's parameters (``ctx.params``)."""
    from pnpseg.errors import PnpsegError
    from pnpseg.method.params import SegmentParams

    flags = {
        name: value.value if isinstance(value, Enum) else value
        for name, value in params.items()
        if name in SegmentParams.model_fields
    }
    fewer = params.get("background_if_fewer")
    if fewer is not None:
        if flags.get("background") is False:
            raise PnpsegError("--background-if-fewer and --no-background contradict each other")
        flags["background"] = f"if-fewer-prompted:{fewer}"
    return flags


def method_choice(ctx: typer.Context) -> Any:
    """Preset + adapter/model + parameter flags of this command, merged and validated once."""
    from pnpseg.io.preset import choose_method

    given = ctx.params
    return choose_method(given.get("preset"), given.get("adapter"), given.get("model"), method_flags(given))
