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
from .loading import load_pretrained, quiet_loading, resolve_source


class HFAdapter(pnpseg.BaseAdapter):
    """Base for adapters around a ``transformers`` model with an image-text matching head.

    A subclass describes the checkpoint with class attributes and writes ``forward``; that
    is the whole contract (docs/adapters.md, "Hugging Face models"):

    * required: :attr:`adapter_name`, :attr:`default_model`, :attr:`model_class`; a subclass
      that lacks one (or ``forward``) is a :class:`TypeError` when it is defined;
    * optional, derived when absent: :attr:`display_name`, :attr:`model_type`,
      :attr:`processor_class`, the message wordings, :attr:`required_weights`, ...;
    * sizes come from the config through the hooks :meth:`read_num_layers`,
      :meth:`read_num_heads`, :meth:`read_max_text_length` and :meth:`read_patch_size`,
      which read the usual config fields and are overridden where a family differs;
    * in ``forward``: :attr:`model` (the weights, loaded on first use: eval mode, eager
      attention, float32, every parameter frozen), :meth:`check_forward_args`, and
      :meth:`cls_and_patches_output` for cross-attention over ``[image CLS; patches]``.

    ``__init__`` resolves the source (hub id or folder), loads and checks the config
    (:meth:`check_config`) and the processor, and keeps the tokenizer, the normalisation
    ``mean`` / ``std`` (1, 3, 1, 1) and the resampling filter. Every failure to load is a
    one-line :class:`pnpseg.ModelLoadError` naming the adapter. A subclass meant only as a
    further base is declared ``class Base(HFAdapter, abstract=True)``.
    """

    #: Registry name, used in messages such as :func:`pnpseg.model_unavailable` (``"blip"``).
    adapter_name: ClassVar[str]
    #: Hub id (or folder) used when no model is given.
    default_model: ClassVar[str]
    #: ``transformers`` class name of the model with its image-text-matching head.
    model_class: ClassVar[str]
    #: The model's name in messages; default: :attr:`adapter_name`.
    display_name: ClassVar[str | None] = None
    #: ``config.model_type`` the checkpoint must have; default: that of :attr:`model_class`.
    model_type: ClassVar[str | None] = None
    #: ``transformers`` class name of the processor (tokenizer + image processor).
    processor_class: ClassVar[str] = "AutoProcessor"
    #: Weight-name prefixes that must not be missing from the checkpoint.
    required_weights: ClassVar[tuple[str, ...]] = ()
    #: What those weights are, in "NAME has no <head_description> (missing ...)".
    head_description: ClassVar[str] = "image-text-matching weights"
    #: In "folder NAME is not a <model_description> (...)"; default: "<display_name>
    #: image-text-matching model".
    model_description: ClassVar[str | None] = None
    #: In "use a <checkpoint_description> such as DEFAULT"; default: "<display_name> checkpoint".
    checkpoint_description: ClassVar[str | None] = None
    #: Refuse a folder without ``config.json`` before asking ``transformers``.
    require_config_json: ClassVar[bool] = False
    #: Resampling filter for :meth:`preprocess`; None takes the image processor's.
    fixed_resample: ClassVar[Image.Resampling | None] = None
    #: The config attribute that holds the layers with text→image attention (the "fusion"
    #: layers) the size hooks read: ``"text_config"`` (BLIP), ``"qformer_config"`` (BLIP-2,
    #: whose ``text_config`` is the language model's), ``""`` for the config itself.
    fusion_config: ClassVar[str] = "text_config"
    #: Attention classes run fused (SDPA) wherever nothing is captured: class name → fused
    #: forward or :data:`pnpseg_hf.fused.INTERFACE` (see :mod:`pnpseg_hf.fused`).
    fused_attention: ClassVar[Mapping[str, Any]] = {}

    #: Class attributes every concrete subclass must set.
    REQUIRED: ClassVar[tuple[str, ...]] = ("adapter_name", "default_model", "model_class")

    num_layers: int
    num_heads: int
    max_text_length: int

    def __init_subclass__(cls, abstract: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if abstract:
            return
        missing = [name for name in cls.REQUIRED if not isinstance(getattr(cls, name, None), str)]
        if cls.forward is HFAdapter.forward:
            missing.append("forward()")
        if missing:
            raise TypeError(
                f"{cls.__name__} must define {', '.join(missing)} (HFAdapter contract: docs/adapters.md); "
                "declare a base that is not an adapter with abstract=True"
            )
        if cls.display_name is None:
            cls.display_name = cls.adapter_name
        if cls.model_description is None:
            cls.model_description = f"{cls.display_name} image-text-matching model"
        if cls.checkpoint_description is None:
            cls.checkpoint_description = f"{cls.display_name} checkpoint"

    def __init__(self, model: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu") -> None:
        from transformers import AutoConfig

        self.name = str(model) if model is not None else self.default_model
        self.device = torch.device(device)
        self._source = resolve_source(self.name)
        self.config = self._load(AutoConfig.from_pretrained)
        self.check_config()
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
        self.num_layers = self.read_num_layers(self.config)
        self.num_heads = self.read_num_heads(self.config)
        self.max_text_length = self.read_max_text_length(self.config, self.tokenizer)
        self.patch_size = self.read_patch_size(self.config)
        self._model: Any = None

    # -- sizes from the config (override where a family differs) ------------------------

    def fusion(self, config: Any) -> Any:
        """The config of the fusion layers: :attr:`fusion_config` of ``config`` (the config
        itself when that is ``""`` or absent, as in a flat config)."""
        return (getattr(config, self.fusion_config, None) if self.fusion_config else None) or config

    def read_num_layers(self, config: Any) -> int:
        """Layers with text→image attention: the fusion config's ``num_hidden_layers``."""
        return int(self.fusion(config).num_hidden_layers)

    def read_num_heads(self, config: Any) -> int:
        """Heads per such layer: the fusion config's ``num_attention_heads``."""
        return int(self.fusion(config).num_attention_heads)

    def read_max_text_length(self, config: Any, tokenizer: Any) -> int:
        """Longest prompt: the fusion config's ``max_position_embeddings``, or the tokenizer's
        ``model_max_length`` if smaller."""
        return capped_by_tokenizer(int(self.fusion(config).max_position_embeddings), tokenizer)

    def read_patch_size(self, config: Any) -> int:
        """Side of a patch: the vision config's ``patch_size``."""
        return side(vision_config(config).patch_size)

    # -- loading ---------------------------------------------------------------------------

    def _load(self, loader: Any, **kwargs: Any) -> Any:
        """:func:`load_pretrained` for this adapter's model source and messages."""
        return load_pretrained(
            loader,
            self.name,
            self._source,
            self.adapter_name,
            model_description=str(self.model_description),
            require_config=self.require_config_json,
            **kwargs,
        )

    def suggestion(self) -> str:
        """The end of every "wrong model" message: which checkpoint to use instead."""
        return f"use a {self.checkpoint_description} such as {self.default_model!r}"

    def check_config(self) -> None:
        """Refuse a config of another model type (override, calling super, to check more)."""
        expected = self.model_type or _transformers_class(self.model_class).config_class.model_type
        found = getattr(self.config, "model_type", None)
        if found != expected:
            raise pnpseg.ModelLoadError(
                f"{self.name!r} is a {found or 'unknown'!r} model, not {self.display_name}; {self.suggestion()}"
            )

    @property
    def weights_loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> Any:
        """The ``model_class`` weights, loaded once on first use: eval mode, eager attention,
        float32, every parameter frozen, fused (SDPA) attention for the
        :attr:`fused_attention` classes unless ``PNPSEG_EAGER=1``; missing :attr:`required_weights` are refused."""
        if self._model is None:
            with quiet_loading():
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
                    f"{self.name!r} has no {self.head_description} (missing {missing[0]}, ...); {self.suggestion()}"
                ) from None
            self._model = model.eval().requires_grad_(False).to(self.device)
            fuse_model(self._model, self.fused_attention)
        return self._model

    def forward(self, pixels: torch.Tensor, text: pnpseg.TokenizedText, layers: Sequence[int]) -> pnpseg.VLMOutput:
        """The image-text-matching pass (every subclass writes it; docs/adapters.md)."""
        raise NotImplementedError

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
        """The processor's tokenizer with character offsets, padded to the longest prompt
        (:meth:`pnpseg.TokenizedText.from_tokenizer`)."""
        return pnpseg.TokenizedText.from_tokenizer(self.tokenizer, prompts)

    def check_forward_args(self, text: pnpseg.TokenizedText, layers: Sequence[int]) -> list[int]:
        """:func:`pnpseg.check_forward_args` for this adapter."""
        return pnpseg.check_forward_args(self, text, layers)

    def cls_and_patches_output(
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


def text_config(config: Any) -> Any:
    """The text part of a composite config (``text_config``), or the config itself."""
    return getattr(config, "text_config", None) or config


def vision_config(config: Any) -> Any:
    """The image part of a composite config (``vision_config`` or ``image_config``), or the config."""
    return getattr(config, "vision_config", None) or getattr(config, "image_config", None) or config


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
