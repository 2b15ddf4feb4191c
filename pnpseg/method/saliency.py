"""Steps 1–3 together: per-class GradCAM maps over Saliency DropOut rounds.

A batch of B images, each with its own class list, becomes S ≥ B samples (one per image and
prompt chunk). Each round runs one forward+gradient over all samples, folds the chunks back
into per-image class maps, and drops the most salient patches of each image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from pnpseg.method.adapter import VLMAdapter
from pnpseg.method.compat import arithmetic
from pnpseg.method.dropout import drop_patches
from pnpseg.method.gradcam import capture, class_maps, gradcam
from pnpseg.method.params import SegmentParams
from pnpseg.method.profiling import stage
from pnpseg.method.prompts import Chunk, token_weights


@dataclass
class Batch:
    """The sample layout of one batch: sample s is image ``image[s]`` with ``prompts[s]``."""

    prompts: list[str]
    image: torch.Tensor  # (S,) long
    chunks: list[Chunk]
    num_classes: list[int]  # per image

    @classmethod
    def build(cls, plans: Sequence[Sequence[Chunk]], class_counts: Sequence[int]) -> Batch:
        chunks = [chunk for plan in plans for chunk in plan]
        image = torch.tensor([i for i, plan in enumerate(plans) for _ in plan], dtype=torch.long)
        return cls([c.prompt for c in chunks], image, chunks, list(class_counts))


#: ``on_round(round, maps, dropped_before)``: the round's per-image class maps (N, K, P), with
#: the patches dropped before it zeroed, and that dropped mask (N, P); for explanations.
RoundHook = Callable[[int, torch.Tensor, torch.Tensor], None]


def saliency_maps(
    adapter: VLMAdapter,
    pixels: torch.Tensor,
    batch: Batch,
    params: SegmentParams,
    on_round: RoundHook | None = None,
) -> list[torch.Tensor]:
    """Summed GradCAM maps M̂ per image: a list of (K_i, grid_h, grid_w) CPU tensors."""
    rules = arithmetic(params.compat)
    text = adapter.tokenize(batch.prompts)
    num_images, k_max = pixels.shape[0], max(batch.num_classes)
    weights = token_weights(batch.chunks, text.input_ids.shape[1], k_max, params.compat).to(pixels.device)
    pieces = (weights > 0).to(weights.dtype)  # every class token counted once: the authors' drop score
    image = batch.image.to(pixels.device)
    drop_rule = params.drop_rule or "median"  # a SegmentParams built here has it resolved
    dropped: torch.Tensor | None = None
    total = torch.zeros(())
    grid = (0, 0)
    for round_ in range(params.drop_rounds):
        with stage("dropout bookkeeping"):
            masked = pixels if dropped is None else adapter.mask_patches(pixels, dropped)
        attentions, gradients, grid = capture(adapter, masked[image], text, [params.layer - 1])
        with stage("dropout bookkeeping"):
            head = params.head - 1
            cam = gradcam(attentions[0][:, head], gradients[0][:, head]).float()  # (S, T, P)
            per_sample = class_maps(cam, weights).float()  # (S, K, P); fp32 even under autocast
            maps = torch.zeros(num_images, k_max, cam.shape[-1], dtype=cam.dtype, device=cam.device)
            maps.index_add_(0, image, per_sample)
            if dropped is None:
                dropped = torch.zeros(num_images, cam.shape[-1], dtype=torch.bool, device=cam.device)
                total = rules.first_total(maps)
            maps.masked_fill_(dropped[:, None, :], 0.0)
            total += maps
            if on_round is not None:
                on_round(round_, maps, dropped.clone())
            if round_ + 1 < params.drop_rounds:
                score = rules.drop_score(maps, cam, pieces, image, num_images)
                dropped |= drop_patches(drop_rule, score, dropped, params.compat)
    gh, gw = grid
    return [total[i, : batch.num_classes[i]].reshape(-1, gh, gw).float().cpu() for i in range(num_images)]
