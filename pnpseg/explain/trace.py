"""What the model sees, as numbers: the pipeline of one image and the head atlas.

Pure computations on a :class:`~pnpseg.method.segmenter.Segmenter`; the figures
(:mod:`pnpseg.explain.figures`) and ``explain.json`` are drawn from these objects alone, so
either can be rebuilt or compared without running the model again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from pnpseg.method.gradcam import capture, class_maps, gradcam
from pnpseg.method.prompts import token_weights
from pnpseg.method.saliency import Batch
from pnpseg.method.segmenter import Segmenter


@dataclass
class RoundTrace:
    """One DropOut round: the class maps (K, gh, gw) and the patches dropped before it (gh, gw)."""

    maps: torch.Tensor
    dropped_before: torch.Tensor


@dataclass
class PipelineTrace:
    """Every intermediate of one image's segmentation (docs/method.md §1–4).

    ``stages`` holds (name, scores (C, H, W)) after the threshold and after each
    postprocessor; channel layout as in :func:`~pnpseg.method.labels.scores_from_saliency`.
    """

    class_names: list[str]
    rounds: list[RoundTrace]
    summed: torch.Tensor
    stages: list[tuple[str, torch.Tensor]]
    labels: np.ndarray
    background: bool
    params: dict[str, Any]

    def channel(self, scores: torch.Tensor, k: int) -> torch.Tensor:
        """Class ``k``'s channel of a (C, H, W) score tensor."""
        return scores[k + 1 if self.background else k]

    def top_share(self, scores: torch.Tensor, k: int) -> float:
        """Share of pixels where class ``k`` has the highest score (a label if argmax stopped here)."""
        top = scores.argmax(0) == (k + 1 if self.background else k)
        return float((top & (self.channel(scores, k) > 0)).float().mean())

    def numbers(self) -> dict[str, Any]:
        """The figures' numbers, per class: per-round max, kept fraction, top share per stage,
        final pixel share."""
        total = self.labels.size
        classes = {}
        for k, name in enumerate(self.class_names):
            classes[name] = {
                "rounds": [
                    {
                        "max": float(r.maps[k].max()),
                        "kept_fraction": float(1.0 - r.dropped_before.float().mean()),
                    }
                    for r in self.rounds
                ],
                "summed_max": float(self.summed[k].max()),
                "stages": {name_: self.top_share(s, k) for name_, s in self.stages},
                "pixel_share": float((self.labels == k + 1).sum() / total),
            }
        return {"params": self.params, "classes": classes}


def trace_pipeline(segmenter: Segmenter, image: Image.Image, classes: list[str]) -> PipelineTrace:
    """Segment ``image`` once, keeping every intermediate the figures show."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    stages: list[tuple[str, torch.Tensor]] = []
    saliency = segmenter.saliency(
        [image], [classes], on_round=lambda _, maps, dropped: seen.append((maps[0].float().cpu(), dropped[0].cpu()))
    )[0]
    k, grid = len(classes), saliency.shape[-2:]
    rounds = [RoundTrace(maps[:k].reshape(k, *grid), dropped.reshape(grid)) for maps, dropped in seen]
    result = segmenter.finish(image, saliency, list(classes), on_stage=lambda n, s: stages.append((n, s.clone())))
    return PipelineTrace(
        list(classes), rounds, saliency, stages, result.labels, result.background, segmenter.params.to_dict()
    )


@dataclass
class HeadAtlas:
    """Round-1 GradCAM maps of every (layer, head): ``maps`` (L, H, K, gh, gw), and each
    cell's class contrast (L, H, K) (see :func:`class_contrast`)."""

    class_names: list[str]
    maps: torch.Tensor
    contrast: torch.Tensor
    chosen: tuple[int, int]  # 1-based (layer, head) of the segmenter's parameters
    rewards: dict[tuple[int, int], float] = field(default_factory=dict)

    def best(self, k: int) -> tuple[int, int]:
        """1-based (layer, head) of the highest-contrast cell for class ``k``."""
        flat = int(self.contrast[..., k].argmax())
        return flat // self.contrast.shape[1] + 1, flat % self.contrast.shape[1] + 1

    def numbers(self) -> dict[str, Any]:
        return {
            "chosen": list(self.chosen),
            "contrast": {name: self.contrast[..., k].tolist() for k, name in enumerate(self.class_names)},
            "best": {name: list(self.best(k)) for k, name in enumerate(self.class_names)},
            "rewards": [[layer, head, reward] for (layer, head), reward in sorted(self.rewards.items())],
        }


def class_contrast(maps: torch.Tensor) -> torch.Tensor:
    """How well a map tells its class apart from the others: (..., K, P) → (..., K) in [0, 1].

    Half the L1 distance between the class's map and the other classes' summed map, each
    scaled to sum 1: 0 when they are the same picture (or empty), 1 when they share no
    patch. A head that gives every class the same map scores 0, however peaked it is.
    Needs two or more classes; with one the contrast is 0.
    """
    maps = maps.clamp_min(0)
    others = maps.sum(-2, keepdim=True) - maps
    own = maps / maps.sum(-1, keepdim=True).clamp_min(1e-12)
    rest = others / others.sum(-1, keepdim=True).clamp_min(1e-12)
    empty = (maps.sum(-1) <= 0) | (others.sum(-1) <= 0)
    return (0.5 * (own - rest).abs().sum(-1)).masked_fill(empty, 0.0)


def head_atlas(
    segmenter: Segmenter, image: Image.Image, classes: list[str], rewards: dict[tuple[int, int], float] | None = None
) -> HeadAtlas:
    """Round-1 GradCAM of every layer and head from one forward and one gradient."""
    adapter = segmenter.adapter
    plan = segmenter.plan(classes)
    batch = Batch.build([plan], [len(classes)])
    text = adapter.tokenize(batch.prompts)
    pixels = adapter.preprocess([image], segmenter.input_size)
    weights = token_weights(batch.chunks, text.input_ids.shape[1], len(classes), segmenter.params.compat)
    weights = weights.to(pixels.device)
    attentions, gradients, grid = capture(adapter, pixels[batch.image], text, list(range(adapter.num_layers)))
    per_layer = []
    for attention, gradient in zip(attentions, gradients):
        cam = gradcam(attention, gradient).float()  # (S, heads, T, P)
        s, heads, t, p = cam.shape
        maps = class_maps(cam.reshape(s * heads, t, p), weights.repeat_interleave(heads, 0))  # (S·heads, K, P)
        per_layer.append(maps.reshape(s, heads, -1, p).sum(0))  # chunks hold disjoint classes
    maps = torch.stack(per_layer).cpu()  # (L, H, K, P)
    contrast = class_contrast(maps)
    params = segmenter.params
    return HeadAtlas(
        list(classes), maps.reshape(*maps.shape[:3], *grid), contrast, (params.layer, params.head), dict(rewards or {})
    )


def rewards_from_preset(preset: dict[str, Any]) -> dict[tuple[int, int], float]:
    """Best stage-1 reward of each (layer, head) that ``pnpseg tune`` tried (1-based)."""
    best: dict[tuple[int, int], float] = {}
    for trial in (preset.get("log") or {}).get("stage1") or []:
        key = (int(trial["layer"]), int(trial["head"]))
        best[key] = max(best.get(key, float("-inf")), float(trial["total"]))
    return best
