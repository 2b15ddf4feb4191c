"""``HFAdapter``: the skeleton every Hugging Face image-text-matching adapter shares."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

import pnpseg

from .fused import fuse_model
from .loading import load_pretrained, quiet_progress, resolve_source


class HFAdapter(pnpseg.BaseAdapter):
    """Base for adapters around a ``transformers`` model with an image-text matching head.

    ``__init__`` resolves the source (hub id or folder), loads the config (checked by
    :meth:`_check_config`) and the processor, and keeps the tokenizer, the normalisation
    ``mean`` / ``std`` (1, 3, 1, 1) and the resampling filter; the weights load on the first
    :meth:`_ensure_model` (eval mode, eager attention, float32, every parameter frozen).
    A subclass sets the class attributes below, then in its own ``__init__`` (after
    ``super().__init__``) ``num_layers``, ``num_heads``, ``max_text_length`` and
    ``patch_size``, and implements ``forward``. Every failure to load is a one-line
    :class:`pnpseg.ModelLoadError` naming the adapter.
    """

    #: Registry name, used in :func:`pnpseg.model_unavailable` (``"blip"``).
    adapter_name: ClassVar[str]
    #: The model's name in messages (``"BLIP"``).
    display_name: ClassVar[str]
    #: Hub id used when no model is given.
    default_model: ClassVar[str]
    #: ``config.model_type`` the checkpoint must have.
    model_type: ClassVar[str]
    #: ``transformers`` class names of the processor and of the model with its head.
    processor_class: ClassVar[str]
    model_class: ClassVar[str]
    #: Weight-name prefixes that must not be missing from the checkpoint.
    required_weights: ClassVar[tuple[str, ...]] = ()
    #: What those weights are, in "NAME has no <head_description> (missing ...)".
    head_description: ClassVar[str] = "image-text-matching weights"
    #: In "folder NAME is not a <model_description> (...)".
    model_description: ClassVar[str]
    #: In "use a <checkpoint_description> such as DEFAULT".
    checkpoint_description: ClassVar[str]
    #: Refuse a folder without ``config.json`` before asking ``transformers``.
    require_config_json: ClassVar[bool] = False
    #: Resampling filter for :meth:`preprocess`; None takes the image processor's.
    fixed_resample: ClassVar[Image.Resampling | None] = None
    #: Attention classes run fused (SDPA) wherever nothing is captured: class name → fused
    #: forward or :data:`pnpseg_hf.fused.INTERFACE` (see :mod:`pnpseg_hf.fused`).
    fused_attention: ClassVar[Mapping[str, Any]] = {}

    num_layers: int
    num_heads: int
    max_text_length: int

    def __init__(self, model: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu") -> None:
        from transformers import AutoConfig

        self.name = str(model) if model is not None else self.default_model
        self.device = torch.device(device)
        self._source = resolve_source(self.name)
        self.config = self._load(AutoConfig.from_pretrained)
        self._check_config()
        processor = self._load(_transformers_class(self.processor_class).from_pretrained)
        self.tokenizer = processor.tokenizer
        image_processor = processor.image_processor
        self.mean = torch.tensor(image_processor.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(image_processor.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        self.resample = (
            self.fixed_resample
            if self.fixed_resample is not None
            else pil_resample(getattr(image_processor, "resample", None))
        )
        self._model: Any = None

    # -- loading ---------------------------------------------------------------------------

    def _load(self, loader: Any, **kwargs: Any) -> Any:
        """:func:`load_pretrained` for this adapter's model source and messages."""
        return load_pretrained(
            loader,
            self.name,
            self._source,
            self.adapter_name,
            model_description=self.model_description,
            require_config=self.require_config_json,
            **kwargs,
        )

    def _suggestion(self) -> str:
        return f"use a {self.checkpoint_description} such as {self.default_model!r}"

    def _check_config(self) -> None:
        """Refuse a config of another model type (override to check more)."""
        if getattr(self.config, "model_type", None) != self.model_type:
            raise pnpseg.ModelLoadError(
                f"{self.name!r} is a {getattr(self.config, 'model_type', 'unknown')!r} model, "
                f"not {self.display_name}; {self._suggestion()}"
            )

    @property
    def weights_loaded(self) -> bool:
        return self._model is not None

    def _ensure_model(self) -> Any:
        """Load the weights once: eval mode, every parameter frozen, eager attention except the
        :attr:`fused_attention` classes (fused unless ``PNPSEG_EAGER=1``)."""
        if self._model is None:
            with quiet_progress():
                model, info = self._load(
                    _transformers_class(self.model_class).from_pretrained,
                    config=self.config,
                    attn_implementation="eager",
                    dtype=torch.float32,
                    output_loading_info=True,
                )
            missing = [k for k in info.get("missing_keys", ()) if k.startswith(self.required_weights)]
            if missing:
                raise pnpseg.ModelLoadError(
                    f"{self.name!r} has no {self.head_description} (missing {missing[0]}, ...); {self._suggestion()}"
                ) from None
            self._model = model.eval().requires_grad_(False).to(self.device)
            fuse_model(self._model, self.fused_attention)
        return self._model

    # -- protocol pieces -------------------------------------------------------------------

    def preprocess(self, images: Sequence[Image.Image], size: tuple[int, int]) -> torch.Tensor:
        """Resize to ``size`` (H, W) — any positive multiple of the patch size — and normalise.

        A plain resize keeps the whole image (processors often crop or pad); the model is
        expected to interpolate its position embeddings to the grid.
        """
        h, w = int(size[0]), int(size[1])
        if h % self.patch_size or w % self.patch_size or h <= 0 or w <= 0:
            raise pnpseg.PnpsegError(
                f"image size {h}x{w} is not a positive multiple of {self.display_name}'s patch size {self.patch_size}"
            )
        arrays = [np.asarray(img.convert("RGB").resize((w, h), self.resample), dtype=np.float32) for img in images]
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 255.0
        return ((pixels - self.mean) / self.std).to(self.device)

    def tokenize(self, prompts: Sequence[str]) -> pnpseg.TokenizedText:
        """The processor's tokenizer with character offsets, padded to the longest prompt.

        Special and padding tokens get ``(0, 0)``; ``unknown`` flags the tokenizer's unknown
        token. Prompts are never truncated: the core tokenizes over-long prompts on purpose
        when it plans chunks.
        """
        enc = self.tokenizer(
            list(prompts),
            padding="longest",
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            return_token_type_ids=False,
            return_tensors="pt",
            verbose=False,
        )
        ids = enc["input_ids"]
        unknown = (ids == self.tokenizer.unk_token_id).tolist()
        special = enc["special_tokens_mask"].bool() | (enc["attention_mask"] == 0)
        offsets = [
            [(0, 0) if sp else (int(s), int(e)) for (s, e), sp in zip(row, sp_row)]
            for row, sp_row in zip(enc["offset_mapping"].tolist(), special.tolist())
        ]
        return pnpseg.TokenizedText(ids, enc["attention_mask"], offsets, unknown)

    def _check_forward_args(self, text: pnpseg.TokenizedText, layers: Sequence[int]) -> list[int]:
        """``layers`` as ints, each in ``0..num_layers-1`` (IndexError), and the prompt length
        within ``max_text_length`` (ValueError)."""
        layers = [int(i) for i in layers]
        for i in layers:
            if not 0 <= i < self.num_layers:
                raise IndexError(f"{self.display_name} layer index {i} out of range 0..{self.num_layers - 1} (0-based)")
        length = text.input_ids.shape[1]
        if length > self.max_text_length:
            raise ValueError(f"prompt has {length} tokens; {self.display_name} allows {self.max_text_length}")
        return layers

    def _cls_and_patches_output(
        self,
        match_logit: torch.Tensor,
        captured: dict[int, torch.Tensor],
        layers: Sequence[int],
        pixels: torch.Tensor,
    ) -> pnpseg.VLMOutput:
        """The output of a model whose text→image attention keys are ``[image CLS; patches]``.

        ``captured`` maps each layer to its probabilities (as from :func:`capture_outputs`);
        the grid is the patch grid of ``pixels``.
        """
        return pnpseg.VLMOutput(
            match_logit=match_logit,
            attentions=[captured[i] for i in layers],
            grid=self.grid_for((pixels.shape[2], pixels.shape[3])),
            to_text_image=drop_image_cls,
        )


# -- helpers ---------------------------------------------------------------------------------


def broadcast_batch(n_images: int, n_texts: int) -> int:
    """The pair batch size: equal sizes, or a batch of 1 broadcast against the other."""
    batch = max(n_images, n_texts)
    if n_images not in (1, batch) or n_texts not in (1, batch):
        raise ValueError(f"{n_images} images and {n_texts} prompts: batch sizes must match or be 1")
    return batch


def side(value: int | Sequence[int]) -> int:
    """Config sizes may be an int or an (h, w) pair; patches are assumed square."""
    return int(value) if isinstance(value, int) else int(value[0])


def pil_resample(value: Any) -> Image.Resampling:
    """The processor's resampling filter as a PIL enum (bicubic when unset or exotic)."""
    try:
        return Image.Resampling(int(value))
    except (TypeError, ValueError):
        return Image.Resampling.BICUBIC


def capped_by_tokenizer(limit: int, tokenizer: Any) -> int:
    """``limit`` tokens, or the tokenizer's declared ``model_max_length`` if smaller."""
    declared = getattr(tokenizer, "model_max_length", None)
    if isinstance(declared, int) and 0 < declared < limit:
        limit = declared
    return limit


def drop_image_cls(attention: torch.Tensor) -> torch.Tensor:
    """(B, heads, T, 1+N) → (B, heads, T, N): keys are ``[image CLS; patches]``."""
    return attention[..., 1:]


def _transformers_class(name: str) -> Any:
    import transformers

    return getattr(transformers, name)
