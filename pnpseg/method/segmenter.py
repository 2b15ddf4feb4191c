"""The orchestrating class: images + class names → label maps, through any adapter."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, overload

import numpy as np
import torch
from PIL import Image

from pnpseg.errors import PnpsegError
from pnpseg.io.images import load_image, to_rgb
from pnpseg.method.adapter import VLMAdapter
from pnpseg.method.defaults import DEFAULT_ADAPTER
from pnpseg.method.labels import labels_from_scores, scores_from_saliency
from pnpseg.method.params import SegmentParams, adapter_defaults
from pnpseg.method.postprocess import build_chain, run_chain
from pnpseg.method.precision import autocast, check_precision
from pnpseg.method.profiling import stage
from pnpseg.method.prompts import Chunk, plan_prompts, validate_names
from pnpseg.method.resize import fit_longest_side
from pnpseg.method.saliency import Batch, RoundHook, saliency_maps

ImageLike = Union[Image.Image, np.ndarray, str, Path]


@dataclass(repr=False)
class SegmentationResult:
    """One image's segmentation.

    ``labels`` (H, W): 0 = background/unlabelled, i = ``class_names[i - 1]``.
    ``scores`` (C, h, w): the final per-channel scores the labels are the argmax of (channel
    0 is background when ``background``), at postprocessing resolution (the image size,
    capped by ``max_postprocess_side``). ``saliency`` (K, grid_h, grid_w): the summed GradCAM
    maps over DropOut rounds, one per class, before any normalisation. ``image``: the RGB
    image segmented, for :meth:`overlay` (a notebook shows a result as its overlay).
    """

    labels: np.ndarray
    scores: torch.Tensor
    saliency: torch.Tensor
    class_names: list[str]
    background: bool
    image: Image.Image | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        """One line: size, class count and the classes present with their pixel shares
        (the arrays would print kilobytes)."""
        height, width = self.labels.shape
        shares = [(self.class_names[i], float((self.labels == i + 1).mean())) for i in self.present()]
        shares.sort(key=lambda pair: -pair[1])
        shown = ", ".join(f"{name[:30]} {share:.0%}" for name, share in shares[:6])
        more = f", +{len(shares) - 6} more" if len(shares) > 6 else ""
        return (
            f"SegmentationResult({width}×{height}, {len(self.class_names)} classes; "
            f"present: {shown + more if shares else 'none'})"
        )

    def overlay(self, image: ImageLike | None = None) -> Image.Image:
        """The ``--viz`` overlay as a PIL image: the image tinted, outlined and named per
        class, with the same colours and legend. ``image``: the picture segmented (default:
        the one this result was made from)."""
        from pnpseg.drawing import render_overlay

        source = image if image is not None else self.image
        if source is None:
            raise PnpsegError("this result does not hold its image: pass the image, overlay(image)")
        return render_overlay(_as_image(source), self.labels, self.class_names)

    def _repr_png_(self) -> bytes | None:
        """Jupyter/IPython's inline display: the overlay as PNG (None without the image: the text repr shows)."""
        from pnpseg.drawing import encode_overlay

        if self.image is None:
            return None
        return encode_overlay(self.image, self.labels, self.class_names)

    def masks(self) -> dict[str, np.ndarray]:
        """One boolean (H, W) mask per class name (all of them, empty where absent)."""
        return {name: self.labels == i + 1 for i, name in enumerate(self.class_names)}

    def present(self) -> list[int]:
        """Indices (into ``class_names``) of the classes that label at least one pixel."""
        values = np.unique(self.labels)
        return [int(v) - 1 for v in values if 0 < v <= len(self.class_names)]

    def class_scores(self) -> dict[str, float]:
        """Per present class: the mean of its final score over the pixels it labels."""
        channels = self.scores.detach().float().cpu()
        height, width = channels.shape[-2:]
        small = np.asarray(
            Image.fromarray(self.labels.astype(np.int32)).resize((width, height), Image.Resampling.NEAREST)
        )
        offset = 1 if self.background else 0  # channel of label value v is v - 1 + offset
        result = {}
        for i in self.present():
            pixels = torch.from_numpy(small == i + 1)
            channel = channels[i + offset]
            result[self.class_names[i]] = float(channel[pixels].mean()) if pixels.any() else float(channel.max())
        return result

    def to_hf(self) -> list[dict[str, Any]]:
        """The Hugging Face ``image-segmentation`` pipeline's output: one
        ``{"score": float, "label": str, "mask": PIL.Image "L" (255 = the class)}`` per class
        present (background/unlabelled pixels get no entry)."""
        scores = self.class_scores()
        return [
            {
                "score": scores[self.class_names[i]],
                "label": self.class_names[i],
                "mask": Image.fromarray(((self.labels == i + 1) * 255).astype(np.uint8), mode="L"),
            }
            for i in self.present()
        ]

    def to_coco_rle(self) -> dict[str, dict[str, Any]]:
        """COCO run-length encodings (pycocotools, ``pip install 'pnpseg[coco]'``) per class
        present: ``{name: {"size": [H, W], "counts": str}}``, JSON-ready."""
        from pnpseg.method.rle import encode_rle

        return {self.class_names[i]: encode_rle(self.labels == i + 1) for i in self.present()}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise PnpsegError(f"unknown device {str(device)!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PnpsegError("--device cuda was asked for, but no CUDA GPU is available")
    return device


class Segmenter:
    """PnP-OVSS with one adapter and one set of parameters.

    >>> seg = Segmenter.from_pretrained("Salesforce/blip-itm-large-flickr")  # doctest: +SKIP
    >>> result = seg("cat.jpg", ["cat", "grass", "sky"])                     # doctest: +SKIP
    >>> result.masks()["cat"]                                                # doctest: +SKIP
    """

    #: The registered name of the adapter (set by :meth:`from_pretrained`; None when built directly).
    adapter_name: str | None = None

    def __init__(
        self, adapter: VLMAdapter, params: SegmentParams | None = None, *, precision: str = "fp32", **overrides: Any
    ):
        self.adapter = adapter
        self.precision = check_precision(precision, adapter)
        base = params.to_dict() if params is not None else adapter_defaults(adapter)
        self.params = SegmentParams.build(base, overrides)
        self._check_params()
        self.chain = build_chain(self.params.postprocess)
        self._plans: dict[tuple[str, ...], list[Chunk]] = {}

    @classmethod
    def from_pretrained(
        cls,
        model: str | None = None,
        *,
        adapter: str | None = None,
        device: str | torch.device = "auto",
        **params: Any,
    ) -> Segmenter:
        """A segmenter for a checkpoint (hub id or folder), the way ``AutoModel`` picks a class.

        Without ``adapter``, the adapter is the one that claims the checkpoint's
        ``config.json`` (``architectures``, then ``model_type``; hook ``register_model_types``);
        without ``model`` either, the default adapter (``blip``) with its default checkpoint.
        ``adapter=NAME`` names an adapter of any installed plugin directly. ``params`` are
        :class:`SegmentParams` fields and ``precision``.
        """
        from pnpseg.plugins import adapter_for, lookup

        if adapter is None:
            adapter = DEFAULT_ADAPTER if model is None else adapter_for(model)
        factory = lookup("adapters", adapter)
        segmenter = cls(factory(model=model, device=resolve_device(device)), **params)
        segmenter.adapter_name = adapter
        return segmenter

    # -- validation -----------------------------------------------------------------
    def _check_params(self) -> None:
        p, a = self.params, self.adapter
        if p.layer > a.num_layers or p.head > a.num_heads:
            raise PnpsegError(
                f"layer {p.layer}, head {p.head} out of range: this model has {a.num_layers} "
                f"text→image attention layers of {a.num_heads} heads (both 1-based)"
            )
        patch = a.patch_size
        if min(p.image_size) < patch:
            raise PnpsegError(
                f"image size {p.image_size[0]}x{p.image_size[1]} is smaller than one {patch}-pixel patch of this model"
            )
        height, width = (side // patch * patch for side in p.image_size)
        self.input_size = (height, width)
        if self.input_size != p.image_size:  # record the size used, not the size asked for
            self.params = self.params.model_copy(update={"image_size": self.input_size})

    def plan(self, classes: Sequence[str]) -> list[Chunk]:
        """Validate class names and split them into prompts (cached per class list)."""
        names = tuple(validate_names(classes))
        if names not in self._plans:
            self._plans[names] = plan_prompts(names, self.adapter.tokenize, self.adapter.max_text_length)
        return self._plans[names]

    # -- running --------------------------------------------------------------------
    @overload
    def __call__(self, images: ImageLike, classes: Sequence[str]) -> SegmentationResult: ...
    @overload
    def __call__(
        self, images: list[ImageLike] | tuple[ImageLike, ...], classes: Sequence[str]
    ) -> list[SegmentationResult]: ...

    def __call__(self, images, classes):
        """One image (path, PIL or ``ndarray[H, W, 3]``) → one result; a list or tuple → a list."""
        if isinstance(images, (list, tuple)):
            return self.segment_batch(images, list(classes))
        return self.segment_batch([images], [list(classes)])[0]

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
        with autocast(self.adapter, self.precision):
            return saliency_maps(self.adapter, pixels, batch, self.params, on_round)

    def finish(
        self, image: Image.Image, saliency: torch.Tensor, names: list[str], on_stage: StageHook | None = None
    ) -> SegmentationResult:
        """Step 4: thresholding, resize, background, postprocessors and argmax."""
        return finish_image(image, saliency, names, self.params, self.chain, on_stage)


#: ``on_stage(name, scores)``: the (C, H, W) scores after ``"threshold"`` and after each
#: postprocessor, by its name; for explanations.
StageHook = Callable[[str, torch.Tensor], None]


def finish_image(
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
    with stage("resize"):
        small = fit_longest_side(image, p.max_postprocess_side)
        work = (small.height, small.width)
        rgb = np.asarray(small, dtype=np.uint8)
        background = p.background_for(len(names))
        scores = scores_from_saliency(saliency, work, p.threshold, background, p.compat)
    if on_stage is not None:
        on_stage("threshold", scores)
    scores = run_chain(scores, rgb, p, chain, on_stage)
    labels = labels_from_scores(scores, background).numpy().astype(np.uint8 if len(names) < 256 else np.int32)
    if small is not image:
        labels = np.asarray(Image.fromarray(labels).resize((width, height), Image.Resampling.NEAREST))
    return SegmentationResult(labels, scores, saliency, list(names), background, image)


def _as_image(image: ImageLike) -> Image.Image:
    if isinstance(image, (str, Path)):
        return load_image(Path(image))
    if isinstance(image, np.ndarray):
        return to_rgb(Image.fromarray(image))
    return to_rgb(image)


def _per_image(classes: Sequence[str] | Sequence[Sequence[str]], count: int) -> list[list[str]]:
    if classes and all(isinstance(c, str) for c in classes):
        return [[str(c) for c in classes]] * count
    if len(classes) != count:
        raise PnpsegError(f"got {len(classes)} class lists for {count} images")
    return [list(c) for c in classes]
