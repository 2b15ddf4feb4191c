"""Every tuning knob of the pipeline, with its one default, type and range, in one place.

:class:`SegmentParams` is a pydantic model: Python keywords, CLI flags, presets and engine
configs all validate here, and every problem becomes one :class:`ParamsError` line naming
the parameter. Precedence, lowest first: these defaults → the adapter's ``default_params``
(only what differs) → a preset → explicit arguments (Python keywords or CLI flags).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from pnpseg.errors import PnpsegError, shorten
from pnpseg.specs import parse_counted, respell, split_specs

#: The drop rule each ``compat`` mode uses unless one is given.
COMPAT_DROP_RULES = {"paper": "median", "authors": "topk:10"}

PositiveInt = Annotated[int, Field(ge=1)]
#: The largest model input side: beyond it no VLM's attention fits in memory, and every
#: image would fail alone with an empty ``MemoryError``.
MAX_IMAGE_SIDE = 4096
ImageSide = Annotated[int, Field(ge=1, le=MAX_IMAGE_SIDE)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
#: ``"if-fewer-prompted:N"`` (``"if-fewer:N"``, its deprecated spelling, is respelled);
#: checked by :func:`parse_background` (for its one-line message), and published with its
#: pattern in the preset schema.
BackgroundRule = Annotated[str, WithJsonSchema({"type": "string", "pattern": "^if-fewer(-prompted)?:[1-9][0-9]*$"})]
#: Old names of the background rule → new ones: the new name says what it counts.
RENAMED_BACKGROUND = {"if-fewer": "if-fewer-prompted"}


class ParamsError(PnpsegError, ValueError):
    """A parameter of the wrong type or out of range (from a flag, a preset or Python)."""


class SegmentParams(BaseModel):
    """The method's parameters; immutable, validated on construction (§ = docs/method.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    layer: PositiveInt = Field(8, description="text→image attention layer, 1-based as in the paper")
    head: PositiveInt = Field(10, description="attention head, 1-based")
    threshold: FiniteFloat = Field(0.15, ge=0.0, lt=1.0, description="keep normalised saliency ≥ threshold (§4.1)")
    blur_sigma: FiniteFloat = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="Gaussian blur σ as a fraction of max(H, W) (§4.4); at most 1, wider blurs every map flat",
    )
    drop_rounds: PositiveInt = Field(4, description="Saliency DropOut rounds R; 1 means plain GradCAM")
    drop_rule: Optional[str] = Field(
        None,
        strict=True,
        description="'median' (paper) or 'topk:N' (authors' code); unset: median under compat paper, "
        "topk:10 (the released code's sort_thresh005) under authors",
    )
    image_size: tuple[ImageSide, ImageSide] = Field(
        (336, 336),
        description=f"model input (height, width), rounded down to the patch size; at least one patch, "
        f"at most {MAX_IMAGE_SIDE}",
    )
    background: Union[StrictBool, BackgroundRule] = Field(
        True,
        description="add a background channel where no class survives: true, false, or "
        "'if-fewer-prompted:N' (only to images prompted with fewer than N classes; the released code's "
        "rule is if-fewer-prompted:3 on Pascal Context, ADE20K and COCO-Stuff; 'if-fewer:N' is its "
        "deprecated spelling)",
    )
    postprocess: tuple[str, ...] = Field(("blur", "crf"), description="postprocessor chain before argmax")
    compat: Literal["paper", "authors"] = Field(
        "paper", description="'paper' follows the paper's text; 'authors' the released code"
    )
    max_postprocess_side: PositiveInt = Field(
        1024, description="longest side postprocessing runs at; label maps are upsampled"
    )
    crf_iterations: PositiveInt = Field(10, description="dense CRF iterations (CutLER settings, §4.5)")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as error:
            raise ParamsError(describe(error)) from None

    @model_validator(mode="before")
    @classmethod
    def _compat_drop_rule(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("drop_rule") is None:
            compat = values.get("compat", "paper")
            return {**values, "drop_rule": COMPAT_DROP_RULES.get(compat, "median") if isinstance(compat, str) else None}
        return values

    @field_validator("drop_rule")
    @classmethod
    def _drop_rule(cls, value: str | None) -> str | None:
        if value is not None:
            parse_drop_rule(value)
        return value

    @field_validator("background")
    @classmethod
    def _background(cls, value: bool | str) -> bool | str:
        if isinstance(value, str):
            value = respell(value, RENAMED_BACKGROUND, "background")
            parse_background(value)
        return value

    def background_for(self, num_classes: int) -> bool:
        """Whether an image prompted with ``num_classes`` classes gets the background channel."""
        if isinstance(self.background, bool):
            return self.background
        return num_classes < parse_background(self.background)

    @field_validator("image_size", mode="before")
    @classmethod
    def _image_size(cls, value: Any) -> Any:
        return parse_size(value)

    @field_validator("postprocess", mode="before")
    @classmethod
    def _postprocess(cls, value: Any) -> Any:
        return parse_chain(value) if isinstance(value, (str, tuple, list)) else value

    @classmethod
    def build(cls, *layers: Mapping[str, Any]) -> SegmentParams:
        """Merge parameter mappings (later wins; ``None`` values are ignored)."""
        merged: dict[str, Any] = {}
        for layer in layers:
            merged.update({key: value for key, value in layer.items() if value is not None})
        return cls(**merged)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


def describe(error: ValidationError) -> str:
    """One line for every problem pydantic found: ``name: what is wrong (got value)``."""
    items = error.errors()
    unknown = [str(item["loc"][0]) for item in items if item["type"] == "extra_forbidden"]
    if unknown:
        names = ", ".join(short(name) for name in unknown)
        return f"unknown parameter {names}; known: {', '.join(SegmentParams.model_fields)}"
    parts = []
    for item in items:
        name = str(item["loc"][0]) if item["loc"] else "parameters"
        field = SegmentParams.model_fields.get(name)
        if field is not None and field.description:
            name = f"{name} ({field.description})"
        if item["type"] == "value_error":  # our own validators' messages name the value
            parts.append(f"{name}: {item['msg'].removeprefix('Value error, ')}")
        else:
            parts.append(f"{name}: {item['msg'][:1].lower()}{item['msg'][1:]} (got {short(item.get('input'))})")
    return "invalid parameter " + "; ".join(dict.fromkeys(parts))  # height and width: said once


def short(value: Any, limit: int = 60) -> str:
    """``repr`` cut to ``limit`` characters, so a huge value never floods the message."""
    return shorten(repr(value), limit)


def adapter_defaults(adapter: Any) -> dict[str, Any]:
    """The adapter's ``default_params`` (layer and head: those of :class:`SegmentParams`
    when it gives none), with layer and head clamped to its model.

    Defaults are written for a model family's usual checkpoint; a smaller checkpoint of the
    family (fewer layers or heads) gets its last layer but one (the last carries no class
    signal) and its last head instead of an out-of-range error. Explicit values are never
    clamped: out of range, they are an error.
    """
    params = dict(getattr(adapter, "default_params", {}))
    layers, heads = int(adapter.num_layers), int(adapter.num_heads)
    layer, head = (int(params.get(key, SegmentParams.model_fields[key].default)) for key in ("layer", "head"))
    if layer > layers:  # the last layer but one: in the last, only [CLS] reaches the ITM head
        layer = max(1, layers - 1)
    params["layer"], params["head"] = layer, min(head, heads)
    return params


def parse_drop_rule(rule: str) -> tuple[str, int]:
    """``"median"`` → ("median", 0); ``"topk:10"`` → ("topk", 10)."""
    if isinstance(rule, str) and rule.strip() == "median":
        return "median", 0
    counted = parse_counted(rule, {"topk"}) if isinstance(rule, str) else None
    if counted is None:
        raise ParamsError(f"drop rule must be 'median' or 'topk:N' with N ≥ 1, got {short(rule)}")
    return counted


def parse_background(rule: str) -> int:
    """``"if-fewer-prompted:3"`` → 3: the prompted-class count below which an image gets the
    background channel."""
    counted = parse_counted(rule, {"if-fewer-prompted"})
    if counted is None:
        raise ParamsError(f"background must be a boolean or 'if-fewer-prompted:N' with N ≥ 1, got {short(rule)}")
    return counted[1]


def parse_size(value: Any) -> Any:
    """``336`` or ``"336"`` → (336, 336); ``"384x256"`` or ``(384, 256)`` → (384, 256) (H×W).

    Anything else is returned unchanged, for the model to reject with its own message.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, str):
        parts = re.fullmatch(r"\s*(\d+)\s*(?:[xX×]\s*(\d+))?\s*", value)
        if not parts:
            raise ParamsError(f"image size must be N or HxW, got {short(value)}")
        h = int(parts.group(1))
        return (h, int(parts.group(2) or h))
    if isinstance(value, list):
        return tuple(value)
    return value


def parse_chain(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"blur,crf"`` → ("blur", "crf"); ``"blur,islands:min_area=64"`` → ("blur",
    "islands:min_area=64") (options as in :mod:`pnpseg.specs`); ``""`` or ``"none"`` → ()."""
    items = split_specs(value) if isinstance(value, str) else list(value)
    if not all(isinstance(item, str) for item in items):
        raise ParamsError(f"postprocess must be names, got {short(value)}")
    names = tuple(item.strip() for item in items if item.strip())
    return () if names == ("none",) else names
