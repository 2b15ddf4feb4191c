"""Every tuning knob of the pipeline, with its one default, in one place.

Precedence, lowest first: these defaults → the adapter's ``default_params`` → explicit
arguments (Python keywords or CLI flags).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pnpseg.errors import PnpsegError

Size = tuple[int, int]

#: The drop rule each ``compat`` mode uses unless one is given.
COMPAT_DROP_RULES = {"paper": "median", "authors": "topk:10"}


@dataclass(frozen=True)
class SegmentParams:
    #: Text→image attention layer and head, 1-based as in the paper.
    layer: int = 8
    head: int = 10
    #: Keep normalised saliency ≥ threshold (docs/method.md §4.1).
    threshold: float = 0.15
    #: Gaussian blur σ as a fraction of max(image height, width) (docs/method.md §4.4).
    blur_sigma: float = 0.05
    #: Saliency DropOut rounds R; 1 means plain GradCAM.
    drop_rounds: int = 4
    #: ``"median"`` (paper) or ``"topk:N"`` (authors' updated code); unset, the rule of
    #: ``compat``: ``median`` under ``paper``, ``topk:10`` (their ``sort_thresh005``) under ``authors``.
    drop_rule: str | None = None
    #: Model input size (height, width); must be multiples of the adapter's patch size.
    image_size: Size = (336, 336)
    #: Add a background channel where no class survives the threshold.
    background: bool = True
    #: Postprocessor chain applied to the score maps before argmax.
    postprocess: tuple[str, ...] = ("blur", "crf")
    #: ``"paper"`` follows the paper's text; ``"authors"`` reproduces the released code.
    compat: Literal["paper", "authors"] = "paper"
    #: Longest side at which postprocessing runs; larger images are processed at this size
    #: and their label map is upsampled (nearest), so huge images stay cheap.
    max_postprocess_side: int = 1024
    #: Dense CRF iterations (CutLER settings, docs/method.md §4.5).
    crf_iterations: int = 10

    def __post_init__(self) -> None:
        if self.layer < 1 or self.head < 1:
            raise PnpsegError("layer and head are 1-based: both must be ≥ 1")
        if not 0.0 <= self.threshold < 1.0:
            raise PnpsegError(f"threshold must be in [0, 1), got {self.threshold}")
        if self.blur_sigma < 0:
            raise PnpsegError(f"blur sigma must be ≥ 0, got {self.blur_sigma}")
        if self.drop_rounds < 1:
            raise PnpsegError(f"drop rounds must be ≥ 1, got {self.drop_rounds}")
        if self.compat not in COMPAT_DROP_RULES:
            raise PnpsegError(f"compat must be 'paper' or 'authors', got {self.compat!r}")
        if self.drop_rule is None:
            object.__setattr__(self, "drop_rule", COMPAT_DROP_RULES[self.compat])
        parse_drop_rule(self.drop_rule)
        if min(self.image_size) < 1:
            raise PnpsegError(f"image size must be positive, got {self.image_size}")

    @classmethod
    def build(cls, *layers: Mapping[str, Any]) -> SegmentParams:
        """Merge parameter mappings (later wins; ``None`` values are ignored)."""
        merged: dict[str, Any] = {}
        names = {f.name for f in dataclasses.fields(cls)}
        for layer in layers:
            for key, value in layer.items():
                if key not in names:
                    raise PnpsegError(f"unknown parameter {key!r}; known: {', '.join(sorted(names))}")
                if value is not None:
                    merged[key] = value
        if "image_size" in merged:
            merged["image_size"] = parse_size(merged["image_size"])
        if "postprocess" in merged:
            merged["postprocess"] = parse_chain(merged["postprocess"])
        return cls(**merged)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
    layer, head = (int(params.get(key, getattr(SegmentParams, key))) for key in ("layer", "head"))
    if layer > layers:  # the last layer but one: in the last, only [CLS] reaches the ITM head
        layer = max(1, layers - 1)
    params["layer"], params["head"] = layer, min(head, heads)
    return params


def parse_drop_rule(rule: str) -> tuple[str, int]:
    """``"median"`` → ("median", 0); ``"topk:10"`` → ("topk", 10)."""
    match = re.fullmatch(r"median|topk:(\d+)", rule.strip())
    if not match or (match.group(1) is not None and int(match.group(1)) < 1):
        raise PnpsegError(f"drop rule must be 'median' or 'topk:N' with N ≥ 1, got {rule!r}")
    return ("topk", int(match.group(1))) if match.group(1) else ("median", 0)


def parse_size(value: int | str | Size | list[int]) -> Size:
    """``336`` or ``"336"`` → (336, 336); ``"384x256"`` or ``(384, 256)`` → (384, 256) (H×W)."""
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, str):
        parts = re.fullmatch(r"\s*(\d+)\s*(?:[xX×]\s*(\d+))?\s*", value)
        if not parts:
            raise PnpsegError(f"image size must be N or HxW, got {value!r}")
        h = int(parts.group(1))
        return (h, int(parts.group(2) or h))
    h, w = value
    return (int(h), int(w))


def parse_chain(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"blur,crf"`` → ("blur", "crf"); ``""`` or ``"none"`` → ()."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(item.strip() for item in items if item.strip())
    return () if names == ("none",) else names
