"""Image-text scorers for the tuning reward, and the built-in ``clip`` scorer (open_clip).

A scorer is any callable ``scorer(images, class_names) -> Tensor (N_images, N_classes)`` of
image-text similarity logits, where ``images`` is a sequence of RGB images: PIL images,
``(H, W, 3)`` uint8 arrays, or ``(3, H, W)`` tensors (float in [0, 1] or uint8). Scorers are
registered with the ``register_scorers`` hook: ``factory(model: str | None = None,
device: str | torch.device = "cpu") -> Scorer``. ``pnpseg.testing`` registers a
weight-free ``synthetic`` scorer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, Union

import numpy as np
import torch
from PIL import Image

from pnpseg.errors import MissingDependencyError, ModelLoadError
from pnpseg.io import hub

ImageInput = Union[Image.Image, np.ndarray, torch.Tensor]

#: The paper's reward model and the logit scale of the authors' code.
DEFAULT_CLIP = "ViT-L-14-336:openai"
LOGIT_SCALE = 100.0
#: Prompt ensemble: each class's text embedding is the mean over these (CLIP's usual practice).
CLIP_TEMPLATES = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "a close-up photo of a {}.",
    "a bad photo of a {}.",
    "there is a {} in the scene.",
    "a photo of something {}.",
)


class Scorer(Protocol):
    def __call__(self, images: Sequence[ImageInput], class_names: Sequence[str]) -> torch.Tensor: ...


def to_pil(image: ImageInput) -> Image.Image:
    """Any accepted image form → RGB PIL image."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        if tensor.dtype != torch.uint8:
            tensor = (tensor.float().clamp(0, 1) * 255).round().to(torch.uint8)
        image = tensor.permute(1, 2, 0).numpy()
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {array.shape}")
    return Image.fromarray(array.astype(np.uint8), "RGB")


def parse_clip_spec(spec: str | None) -> tuple[str, str | None]:
    """``--scorer-model`` → (open_clip architecture, pretrained tag or checkpoint path).

    ``ARCH:TAG`` (``ViT-L-14-336:openai``), ``ARCH:PATH`` (a local checkpoint for ARCH), a
    bare ``PATH`` (a checkpoint for the paper's ``ViT-L-14-336``), a bare ``ARCH`` (its
    ``openai`` weights, else its first known tag), or ``hf-hub:``/``local-dir:`` names,
    which open_clip resolves itself.
    """
    spec = (spec or DEFAULT_CLIP).strip()
    if spec.startswith(("hf-hub:", "local-dir:")):
        return spec, None
    if Path(spec).is_file():
        return DEFAULT_CLIP.split(":")[0], spec
    arch, sep, pretrained = spec.partition(":")
    if sep:
        return arch, pretrained or None
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(arch)
    if not tags:
        raise ModelLoadError(
            f"no pretrained weights known for CLIP architecture {arch!r}; pass --scorer-model ARCH:PATH"
        )
    return arch, "openai" if "openai" in tags else tags[0]


class ClipScorer:
    """CLIP image-text logits, ``100 · cos(image, text)``; text = mean over :data:`CLIP_TEMPLATES`."""

    def __init__(self, model: str | None = None, device: str | torch.device = "cpu") -> None:
        try:
            import open_clip
        except ImportError:
            raise MissingDependencyError("the clip scorer needs open_clip_torch: pip install 'pnpseg[clip]'") from None
        arch, pretrained = parse_clip_spec(model)
        if arch not in open_clip.list_models() and not arch.startswith(("hf-hub:", "local-dir:")):
            raise ModelLoadError(f"unknown CLIP architecture {arch!r} (see open_clip.list_models())")
        if (
            pretrained
            and not Path(pretrained).exists()
            and pretrained not in open_clip.list_pretrained_tags_by_model(arch)
        ):
            raise ModelLoadError(f"CLIP weights {pretrained!r} are neither a file nor a known tag of {arch!r}")
        self.name = f"{arch}:{pretrained}" if pretrained else arch
        self.device = torch.device(device)
        try:
            downloadable = not pretrained or Path(pretrained).exists() or hub.reachable()
            with hub.quiet(), hub.cache_only(not downloadable):
                clip, _, preprocess = open_clip.create_model_and_transforms(
                    arch, pretrained=pretrained, device=self.device
                )
        except Exception as error:  # download failures come as RuntimeError, OSError, hub errors...
            where = "file" if pretrained and Path(pretrained).exists() else "weights"
            detail = " ".join(str(error).split())
            detail = detail if len(detail) <= 140 else detail[:140].rsplit(" ", 1)[0] + " …"
            raise ModelLoadError(
                f"CLIP scorer {self.name!r}: {where} could not be loaded (offline and not cached?): {detail}; "
                "download them where there is network access and pass --scorer-model ARCH:PATH"
            ) from None
        self.model = clip.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(arch)
        self._text: dict[tuple[str, ...], torch.Tensor] = {}

    @torch.no_grad()
    def text_features(self, class_names: Sequence[str]) -> torch.Tensor:
        key = tuple(class_names)
        if key not in self._text:
            per_template = []
            for template in CLIP_TEMPLATES:
                tokens = self.tokenizer([template.format(name) for name in key]).to(self.device)
                per_template.append(_unit(self.model.encode_text(tokens).float()))
            self._text[key] = _unit(torch.stack(per_template).mean(0))
        return self._text[key]

    @torch.no_grad()
    def __call__(self, images: Sequence[ImageInput], class_names: Sequence[str]) -> torch.Tensor:
        text = self.text_features(class_names)
        if not images:
            return torch.zeros(0, len(class_names))
        batch = torch.stack([self.preprocess(to_pil(image)) for image in images]).to(self.device)
        return (LOGIT_SCALE * _unit(self.model.encode_image(batch).float()) @ text.T).cpu()


def _unit(features: torch.Tensor) -> torch.Tensor:
    return features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def build_scorer(name: str, model: str | None = None, device: str | torch.device = "cpu") -> Scorer:
    from pnpseg.plugins import lookup

    return lookup("scorers", name)(model=model, device=device)
