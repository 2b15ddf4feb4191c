"""The orchestrating class: images + class names → label maps, through any adapter."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image

from pnpseg.errors import PnpsegError
from pnpseg.io.images import load_image, to_rgb
from pnpseg.method.adapter import VLMAdapter
from pnpseg.method.labels import labels_from_scores, scores_from_saliency
from pnpseg.method.params import SegmentParams, adapter_defaults
from pnpseg.method.postprocess import build_chain
from pnpseg.method.precision import autocast, check_precision
from pnpseg.method.profiling import stage
from pnpseg.method.prompts import Chunk, plan_prompts, validate_names
from pnpseg.method.saliency import Batch, RoundHook, saliency_maps

ImageLike = Union[Image.Image, np.ndarray, str, Path]


@dataclass
class SegmentationResult:
    """One image's segmentation.

    ``labels`` (H, W): 0 = background/unlabelled, i = ``class_names[i - 1]``.
    ``scores`` (C, h, w): the final per-channel scores the labels are the argmax of (channel
    0 is background when ``background``), at postprocessing resolution (the image size,
    capped by ``max_postprocess_side``). ``saliency`` (K, grid_h, grid_w): the summed GradCAM
    maps over DropOut rounds, one per class, before any normalisation.
    """

    labels: np.ndarray
    scores: torch.Tensor
    saliency: torch.Tensor
    class_names: list[str]
    background: bool


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PnpsegError("--device cuda was asked for, but no CUDA GPU is available")
    return device


class Segmenter:
    """PnP-OVSS with one adapter and one set of parameters.

    >>> seg = Segmenter.from_pretrained("blip", layer=8, head=10)   # doctest: +SKIP
    >>> result = seg("cat.jpg", ["cat", "grass", "sky"])             # doctest: +SKIP
    """

    def __init__(
        self, adapter: VLMAdapter, params: SegmentParams | None = None, *, precision: str = "fp32", **overrides: Any
    ):
        self.adapter = adapter
        self.precision = check_precision(precision, adapter.device)
        base = params.to_dict() if params is not None else adapter_defaults(adapter)
        self.params = SegmentParams.build(base, overrides)
        self._check_params()
        self.chain = build_chain(self.params.postprocess)
        self._plans: dict[tuple[str, ...], list[Chunk]] = {}

    @classmethod
    def from_pretrained(
        cls, adapter: str = "blip", model: str | None = None, device: str | torch.device = "auto", **params: Any
    ) -> Segmenter:
        """Build the named adapter (from any installed plugin) and a segmenter around it."""
        from pnpseg.plugins import lookup

        factory = lookup("adapters", adapter)
        return cls(factory(model=model, device=resolve_device(device)), **params)

    # -- validation -----------------------------------------------------------------
    def _check_params(self) -> None:
        p, a = self.params, self.adapter
        if p.layer > a.num_layers or p.head > a.num_heads:
            raise PnpsegError(
                f"layer {p.layer}, head {p.head} out of range: this model has {a.num_layers} "
                f"text→image attention layers of {a.num_heads} heads (both 1-based)"
            )
        patch = a.patch_size
        height, width = (max(patch, side // patch * patch) for side in p.image_size)
        self.input_size = (height, width)

    def plan(self, classes: Sequence[str]) -> list[Chunk]:
        """Validate class names and split them into prompts (cached per class list)."""
        names = tuple(validate_names(classes))
        if names not in self._plans:
            self._plans[names] = plan_prompts(names, self.adapter.tokenize, self.adapter.max_text_length)
        return self._plans[names]

    # -- running --------------------------------------------------------------------
    def __call__(self, image: ImageLike, classes: Sequence[str]) -> SegmentationResult:
        return self.segment_batch([image], [list(classes)])[0]

    def segment_batch(
        self, images: Sequence[ImageLike], classes: Sequence[str] | Sequence[Sequence[str]]
    ) -> list[SegmentationResult]:
        """Segment several images at once; ``classes`` is one list for all, or one per image."""
        pil = [_as_image(image) for image in images]
        per_image = _per_image(classes, len(pil))
        saliency = self.saliency(pil, per_image)
        return [self.finish(image, maps, validate_names(names)) for image, maps, names in zip(pil, saliency, per_image)]

    def saliency(
        self, images: Sequence[Image.Image], classes: Sequence[Sequence[str]], on_round: RoundHook | None = None
    ) -> list[torch.Tensor]:
        """Steps 1–3: summed GradCAM maps (K_i, grid_h, grid_w) per image (``on_round``: see
        :data:`~pnpseg.method.saliency.RoundHook`)."""
        plans = [self.plan(names) for names in classes]
        batch = Batch.build(plans, [len(names) for names in classes])
        pixels = self.adapter.preprocess(list(images), self.input_size)
        with autocast(self.adapter.device, self.precision):
            return saliency_maps(self.adapter, pixels, batch, self.params, on_round)

    def finish(
        self, image: Image.Image, saliency: torch.Tensor, names: list[str], on_stage: StageHook | None = None
    ) -> SegmentationResult:
        """Step 4: thresholding, resize, background, postprocessors and argmax."""
        return finish(image, saliency, names, self.params, self.chain, on_stage)


#: ``on_stage(name, scores)``: the (C, H, W) scores after ``"threshold"`` and after each
#: postprocessor, by its name; for explanations.
StageHook = Callable[[str, torch.Tensor], None]


def finish(
    image: Image.Image,
    saliency: torch.Tensor,
    names: list[str],
    params: SegmentParams,
    chain: Sequence[Any],
    on_stage: StageHook | None = None,
) -> SegmentationResult:
    """:meth:`Segmenter.finish` as a plain function, so worker processes can run it too."""
    p = params
    width, height = image.size
    scale = min(1.0, p.max_postprocess_side / max(width, height))
    work = (max(1, round(height * scale)), max(1, round(width * scale)))
    with stage("resize"):
        small = image if scale == 1.0 else image.resize((work[1], work[0]), Image.BILINEAR)
        rgb = np.asarray(small, dtype=np.uint8)
        scores = scores_from_saliency(saliency, work, p.threshold, p.background, p.compat)
    if on_stage is not None:
        on_stage("threshold", scores)
    for name, step in zip(p.postprocess, chain):
        with stage(name):
            scores = step(scores, rgb, p)
        if on_stage is not None:
            on_stage(name, scores)
    labels = labels_from_scores(scores, p.background).numpy().astype(np.uint8 if len(names) < 256 else np.int32)
    if scale != 1.0:
        labels = np.asarray(Image.fromarray(labels).resize((width, height), Image.NEAREST))
    return SegmentationResult(labels, scores, saliency, list(names), p.background)


def _as_image(image: ImageLike) -> Image.Image:
    if isinstance(image, (str, Path)):
        return load_image(Path(image))
    if isinstance(image, np.ndarray):
        return to_rgb(Image.fromarray(image))
    return to_rgb(image)


def _per_image(classes: Sequence[str] | Sequence[Sequence[str]], count: int) -> list[list[str]]:
    if classes and all(isinstance(c, str) for c in classes):
        return [list(classes)] * count
    if len(classes) != count:
        raise PnpsegError(f"got {len(classes)} class lists for {count} images")
    return [list(c) for c in classes]
