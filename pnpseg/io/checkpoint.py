"""Checkpoints: the ``config.json`` of one, from a local folder or from the hub through the
offline-aware cache (:func:`pnpseg.io.hub.hub_file`), which :func:`pnpseg.plugins.adapter_for`
matches against the adapters' claims; and the state dict of a ``.pth`` file. Nothing here
imports transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pnpseg.errors import EnvironmentProblem, ModelLoadError, PnpsegError, first_line
from pnpseg.io.jsontext import parse_json

if TYPE_CHECKING:
    import torch


def load_state_dict(
    path: str | Path, invalid: type[PnpsegError] = ModelLoadError, suggestion: str = ""
) -> dict[str, torch.Tensor]:
    """The ``model`` state dict of a PyTorch checkpoint file (BLIP, LAVIS and ALBEF ``.pth``
    files nest it there), or the file's own dict of tensors.

    Loaded with ``weights_only`` (no code in a checkpoint runs) and memory-mapped where the
    file format allows (reading the shapes costs nothing). A missing file, one that is not a
    PyTorch checkpoint or holds no state dict raises ``invalid`` (``suggestion`` ends that
    last message); an unreadable one :class:`~pnpseg.EnvironmentProblem`. One line each.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise invalid(f"no checkpoint file at {str(path)!r}")
    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # a legacy (non-zip) file cannot be memory-mapped
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot read {str(path)!r}: {first_line(exc)}") from None
    except Exception as exc:  # any bytes at all: torch's unpickler raises whatever they trip (KeyError, ...)
        raise invalid(f"{str(path)!r} is not a PyTorch checkpoint ({first_line(exc)})") from None
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise invalid(f"{str(path)!r} holds no state dict" + (f"; {suggestion}" if suggestion else ""))
    return state


def read_config(model: str) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint folder or hub id."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        path = folder / "config.json"
        if not path.is_file():
            raise ModelLoadError(f"folder {model!r} has no config.json: pass adapter=NAME (--adapter)")
    elif folder.exists():
        raise ModelLoadError(f"{model!r} is a file, not a model folder")
    else:
        from pnpseg.io.hub import hub_file

        path = hub_file(model, "config.json", "model config")
    try:
        config = parse_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot read the config of {model!r}: {error}") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"the config of {model!r} is not a JSON object")
    return config
