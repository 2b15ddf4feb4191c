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

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, WithJsonSchema, field_validator

from pnpseg.errors import PnpsegError
from pnpseg.io.hub import HF_SCHEME, hf_uri_file
from pnpseg.io.jsontext import parse_json
from pnpseg.io.outputs import write_json
from pnpseg.method.defaults import DEFAULT_ADAPTER
from pnpseg.method.params import ParamsError, SegmentParams, short

FORMAT = "pnpseg-preset"
VERSION = 1


class PresetError(PnpsegError):
    """A preset file that is missing, not JSON, or not a valid pnpseg preset."""


def _check_params(value: dict[str, Any]) -> dict[str, Any]:
    SegmentParams.build(value)  # ParamsError is a ValueError: pydantic reports it as this field's
    return value


#: Any subset of :class:`SegmentParams` fields; kept as given so adapter defaults still apply.
PresetParams = Annotated[dict[str, Any], WithJsonSchema({**SegmentParams.model_json_schema(), "title": "PresetParams"})]


class Preset(BaseModel):
    """A preset file (published as docs/preset.schema.json)."""

    model_config = ConfigDict(extra="forbid", title="pnpseg preset")

    format: Literal["pnpseg-preset"] = Field(description="always 'pnpseg-preset'")
    version: StrictInt = Field(VERSION, ge=1, le=VERSION, description="format version this file follows")
    adapter: Optional[str] = Field(None, description="adapter the parameters were tuned for")
    model: Optional[str] = Field(None, description="checkpoint the parameters were tuned for")
    params: PresetParams = Field(description="any SegmentParams fields; others come from the adapter's defaults")
    image_size: Optional[tuple[int, int]] = Field(None, description="input size used while tuning (H, W)")
    reward: Optional[dict[str, Any]] = Field(None, description="the tuning reward of the chosen parameters")
    scorer: Optional[dict[str, Any]] = Field(None, description="the reward's image-text scorer")
    search: Optional[dict[str, Any]] = Field(None, description="how the search ran (space, seed, trials, ...)")
    log: Optional[dict[str, Any]] = Field(None, description="every trial of each stage")

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_params(value)


def preset_schema() -> dict[str, Any]:
    """The JSON Schema of preset files (docs/preset.schema.json is this, kept in sync by a test)."""
    return Preset.model_json_schema()


def load_preset(path: str | Path) -> dict[str, Any]:
    """Read and check a preset (a file, or ``hf://org/repo/file.json`` from the hub's cache,
    offline-aware); returns the whole dict (``params`` checked against SegmentParams)."""
    if str(path).startswith(HF_SCHEME):
        path = hf_uri_file(str(path), "preset")
    path = Path(path)
    try:
        data = parse_json(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise PresetError(f"preset not found: {path}") from None
    except IsADirectoryError:
        raise PresetError(f"preset {path} is a folder, not a file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise PresetError(f"cannot read preset {path}: {error}") from None
    except ValueError as error:
        raise PresetError(f"preset {path} is not valid JSON: {error}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PresetError(f'{path} is not a pnpseg preset (no "format": "{FORMAT}")')
    try:
        Preset(**data)
    except ValidationError as error:
        raise PresetError(f"preset {path}: {_describe(error)}") from None
    return {"adapter": None, "model": None, **data}


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        name = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            parts.append(f"unknown key {short(name)}")
        elif item["type"] == "missing":
            parts.append(f"{name} is missing")
        elif item["type"] == "value_error":  # a ParamsError from params: already one line
            parts.append(item["msg"].removeprefix("Value error, "))
        elif name == "version" and isinstance(item.get("input"), int):
            parts.append(f"version {item['input']} is not supported; this pnpseg reads up to {VERSION}")
        else:
            parts.append(f"{name}: {item['msg'][:1].lower()}{item['msg'][1:]} (got {short(item.get('input'))})")
    return "; ".join(parts)


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


@dataclass(frozen=True)
class MethodChoice:
    """Adapter, model and parameter overrides after a preset and explicit choices are merged."""

    adapter: str
    model: str | None
    params: dict[str, Any]
    preset: str | None = None  # a file or hf://ORG/REPO/FILE.json, as given
    #: The loaded preset (its reward, search log...), when one was given.
    preset_data: dict[str, Any] | None = None


def choose_method(
    preset: str | Path | None, adapter: str | None, model: str | None, params: Mapping[str, Any]
) -> MethodChoice:
    """Load ``preset`` (if any), merge it below explicit choices and validate the result.

    The one place commands (and notebooks) turn "preset + flags" into what a Segmenter needs;
    bad values fail here, before any model loads.
    """
    loaded = load_preset(preset) if preset is not None else None
    chosen, model, merged = apply_preset(loaded, adapter, model, params)
    overrides = {key: value for key, value in merged.items() if value is not None}
    SegmentParams.build(overrides)
    return MethodChoice(chosen, model, overrides, str(preset) if preset is not None else None, loaded)


__all__ = [
    "FORMAT",
    "VERSION",
    "MethodChoice",
    "ParamsError",
    "Preset",
    "PresetError",
    "apply_preset",
    "choose_method",
    "load_preset",
    "preset_schema",
    "save_preset",
]
