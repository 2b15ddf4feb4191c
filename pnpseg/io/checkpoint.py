"""A checkpoint's ``config.json``, from a local folder or from the hub through the
offline-aware cache (:func:`pnpseg.io.hub.hub_file`); :func:`pnpseg.plugins.adapter_for`
matches it against the adapters' claims. Nothing here imports transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pnpseg.errors import ModelLoadError
from pnpseg.io.jsontext import parse_json


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
