"""Parameter presets: the JSON file ``pnpseg tune`` writes and ``segment --preset`` reads.

Format (``"format": "pnpseg-preset"``, ``"version": 1``)::

    {
      "format": "pnpseg-preset", "version": 1,
      "adapter": "blip", "model": null,
      "params": {"layer": 8, "head": 10, "threshold": 0.15, "blur_sigma": 0.05,
                 "image_size": [336, 336]},
      "image_size": [336, 336],
      "reward": {"total": 41, "possible": 57, "per_class": {"cat": 0.9, ...}, ...},
      "scorer": {"name": "clip", "model": "ViT-L-14-336:openai"},
      "search": {...}, "log": {"stage1": [...], "stage2": [...]}
    }

Only ``params`` (any :class:`~pnpseg.SegmentParams` fields), ``adapter`` and ``model`` are
used when segmenting; the rest documents how the preset was found. Precedence when
segmenting, lowest first: SegmentParams defaults → the adapter's defaults → the preset →
explicit flags.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pnpseg.errors import PnpsegError
from pnpseg.io.hub import HF_SCHEME, hf_uri_file
from pnpseg.io.outputs import write_json
from pnpseg.method.defaults import DEFAULT_ADAPTER
from pnpseg.method.params import SegmentParams

FORMAT = "pnpseg-preset"
VERSION = 1


class PresetError(PnpsegError):
    """A preset file that is missing, not JSON, or not a pnpseg preset."""


def load_preset(path: str | Path) -> dict[str, Any]:
    """Read and check a preset (a file, or ``hf://org/repo/file.json`` from the hub's cache,
    offline-aware); returns the whole dict (``params`` checked against SegmentParams)."""
    if str(path).startswith(HF_SCHEME):
        path = hf_uri_file(str(path), "preset")
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PresetError(f"preset not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise PresetError(f"cannot read preset {path}: {error}") from None
    except ValueError as error:
        raise PresetError(f"preset {path} is not valid JSON: {error}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PresetError(f'{path} is not a pnpseg preset (no "format": "{FORMAT}")')
    if data.get("version", 0) > VERSION:
        raise PresetError(f"preset {path} has version {data['version']}; this pnpseg reads up to {VERSION}")
    params = data.get("params")
    if not isinstance(params, dict):
        raise PresetError(f'preset {path} has no "params" object')
    known = {f.name for f in dataclasses.fields(SegmentParams)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise PresetError(f"preset {path} has unknown parameter(s): {', '.join(unknown)}")
    try:
        SegmentParams.build(params)
    except PnpsegError as error:
        raise PresetError(f"preset {path}: {error}") from None
    except (TypeError, ValueError) as error:
        raise PresetError(f"preset {path} has a malformed parameter: {error}") from None
    data.setdefault("adapter", None)
    data.setdefault("model", None)
    return data


def save_preset(
    path: str | Path, *, adapter: str, model: str | None, params: Mapping[str, Any], **extra: Any
) -> dict[str, Any]:
    """Write a preset atomically; ``extra`` (reward, scorer, search, log...) is stored as given."""
    data = {"format": FORMAT, "version": VERSION, "adapter": adapter, "model": model, "params": dict(params), **extra}
    write_json(Path(path), data)
    return data


def apply_preset(
    preset: Mapping[str, Any] | None,
    adapter: str | None,
    model: str | None,
    params: Mapping[str, Any],
    default_adapter: str = DEFAULT_ADAPTER,
) -> tuple[str, str | None, dict[str, Any]]:
    """Merge a preset below explicit choices: returns ``(adapter, model, params)``.

    Explicit (non-None) params win over the preset's. The preset's adapter is used unless
    one is given; its model only when its adapter is the one used and no model is given.
    """
    explicit = {key: value for key, value in params.items() if value is not None}
    if preset is None:
        return adapter or default_adapter, model, dict(params)
    chosen = adapter or preset.get("adapter") or default_adapter
    if model is None and chosen == preset.get("adapter"):
        model = preset.get("model")
    return chosen, model, {**params, **preset["params"], **explicit}
