"""LAVIS's BLIP ITM and ALBEF retrieval models as pnpseg VLM adapters.

Both are LAVIS's own classes (``BlipITM``, ``AlbefRetrieval``) with LAVIS's image
processor (``blip_image_eval``) and BERT tokenizer set-up. Their text encoder (LAVIS's
``med.py`` BERT) cross-attends from text tokens to ``[image CLS; patches]``: in every layer
for BLIP, in the fusion layers (the upper half) for ALBEF. Forward hooks on those
cross-attention modules record the probabilities; the ITM head's "match" logit is the score.

The checkpoint and the tokenizer are found in ``__init__`` (tokenizing works at once);
the LAVIS model is built and filled on the first :meth:`forward`.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import torch
from PIL import Image

import pnpseg
from pnpseg import MissingDependencyError

from . import architecture, checkpoints
from .checkpoints import BLIP_RELEASE, NamedModel

#: The modules an ITM forward runs through.
ITM_PARTS = ("visual_encoder.", "text_encoder.", "itm_head.")


class LavisAdapter(pnpseg.BaseAdapter):
    """Shared skeleton of the LAVIS adapters; subclasses set the class attributes.

    ``__init__`` finds the checkpoint (LAVIS's cache, a download, or a local file), reads its
    state dict memory-mapped for the sizes, and loads the tokenizer; LAVIS is imported and
    the model built on the first :meth:`forward`. ``num_layers`` counts the layers that
    cross-attend to the image (0-based layer ``i`` is text layer ``fusion_layer + i``).
    """

    adapter_name: ClassVar[str]
    display_name: ClassVar[str]
    #: Model names → checkpoints, and the one used when no model is given.
    names: ClassVar[Mapping[str, NamedModel]]
    default_model: ClassVar[str]
    #: The LAVIS model class (``module:Class``) and the LAVIS med config of its text encoder.
    model_class: ClassVar[str]
    med_config: ClassVar[str]

    required_weights = (
        "visual_encoder.pos_embed",
        "visual_encoder.cls_token",
        "text_encoder.embeddings.word_embeddings.weight",
        "vision_proj.weight",
        "itm_head.weight",
    )

    def __init__(self, model: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu") -> None:
        _require_lavis(self.adapter_name)
        self.name = str(model) if model is not None else self.default_model
        self.device = torch.device(device)
        source = checkpoints.resolve(self.name, self.names, self.adapter_name)
        path = checkpoints.checkpoint_file(source, self.names, self.adapter_name)
        self._state = self._rename(pnpseg.load_state_dict(path, suggestion=self._suggestion()))
        checkpoints.check_keys(self._state, self.required_weights, self.name, self._suggestion())
        self.tokenizer = self._init_tokenizer(checkpoints.load_tokenizer(source, self.adapter_name))
        rows = self._state[architecture.TEXT + "embeddings.word_embeddings.weight"].shape[0]
        needed = max(self.tokenizer.get_vocab().values()) + 1  # ids, not len(): a vocab.txt may repeat a line
        if needed > rows:
            raise pnpseg.ModelLoadError(
                f"the tokenizer has token ids up to {needed - 1} but {self.name!r} embeds {rows}; "
                "use the BERT tokenizer the checkpoint was trained with"
            )
        self.first_token_id = self.tokenizer.cls_token_id
        sizes = architecture.sizes(self._state)
        self._fusion_layer = sizes.fusion_layer
        self.num_layers = sizes.text_layers - sizes.fusion_layer
        self.num_heads = sizes.text_heads
        self.max_text_length = sizes.text_positions
        self.patch_size = sizes.patch_size
        self._model: Any = None
        self._native_pos_embed: torch.Tensor | None = None
        self._normalize: Any = None

    # -- set-up hooks for subclasses ---------------------------------------------------------

    def _init_tokenizer(self, tokenizer: Any) -> Any:
        """The tokenizer as LAVIS's ``init_tokenizer`` of this family prepares it."""
        return tokenizer

    def _suggestion(self) -> str:
        return f"use a LAVIS {self.display_name} retrieval/ITM checkpoint such as {self.default_model!r}"

    # -- loading -----------------------------------------------------------------------------

    @property
    def weights_loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> Any:
        """The LAVIS model itself (``BlipITM`` / ``AlbefRetrieval``), built on first use."""
        return self._ensure_model()

    def _ensure_model(self) -> Any:
        """Build the LAVIS model for the checkpoint's shapes and load it (eval, frozen, fp32)."""
        if self._model is None:
            model = self._build(_with_tokenizer(_import(self.model_class), self.tokenizer), self._state)
            try:
                result = model.load_state_dict(self._state, strict=False)
            except RuntimeError as exc:  # size mismatches, one per line after a heading: show the first
                lines = str(exc).strip().splitlines()
                detail = lines[1].strip() if len(lines) > 1 else pnpseg.first_line(exc)
                raise pnpseg.ModelLoadError(f"{self.name!r} does not fit {self.display_name} ({detail})") from None
            # what the ITM uses; momentum encoders and queues (retrieval training) may be absent
            missing = [k for k in result.missing_keys if k.startswith(ITM_PARTS) and not k.endswith("position_ids")]
            if missing:
                raise pnpseg.ModelLoadError(f"{self.name!r} does not fit {self.display_name} (missing {missing[0]})")
            self._model = model.float().eval().requires_grad_(False).to(self.device)
            self._native_pos_embed = model.visual_encoder.pos_embed.detach().clone()
            self._state = {}  # the model holds the weights now
        return self._model

    def _rename(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Keys as the LAVIS class names them (the checkpoints of LAVIS itself need nothing)."""
        return state

    def _build(self, model_class: Any, state: Mapping[str, torch.Tensor]) -> Any:
        raise NotImplementedError

    # -- protocol ----------------------------------------------------------------------------

    def preprocess(self, images: Sequence[Image.Image], size: tuple[int, int]) -> torch.Tensor:
        """LAVIS's ``blip_image_eval`` processing at ``size`` (H, W): bicubic resize, normalise.

        The processor itself only makes squares; its resize and normalisation are applied at
        any multiple of the patch size (the ViT's position table follows in :meth:`forward`).
        """
        from torchvision import transforms

        h, w = int(size[0]), int(size[1])
        if h % self.patch_size or w % self.patch_size or h <= 0 or w <= 0:
            raise pnpseg.PnpsegError(
                f"image size {h}x{w} is not a positive multiple of {self.display_name}'s patch size {self.patch_size}"
            )
        if self._normalize is None:
            self._normalize = _import("lavis.processors.blip_processors:BlipImageEvalProcessor")().normalize
        transform = transforms.Compose(
            [
                transforms.Resize((h, w), interpolation=transforms.InterpolationMode.BICUBIC),
                transforms.ToTensor(),
                self._normalize,
            ]
        )
        return torch.stack([transform(img.convert("RGB")) for img in images]).to(self.device)

    def tokenize(self, prompts: Sequence[str]) -> pnpseg.TokenizedText:
        """BERT WordPiece with character offsets, padded to the longest prompt, never truncated.

        Position 0 becomes the family's ITM token (BLIP: [ENC]; ALBEF keeps [CLS]). Special
        and padding tokens get ``(0, 0)``; ``unknown`` flags [UNK].
        """
        text = pnpseg.TokenizedText.from_tokenizer(self.tokenizer, prompts)
        ids = text.input_ids.clone()
        ids[:, 0] = self.first_token_id
        return pnpseg.TokenizedText(ids, text.attention_mask, text.offsets, text.unknown)

    def vision_modules(self) -> list[torch.nn.Module]:
        """The ViT's patch embedding and blocks (``--precision bf16-vision``): the adapter
        calls ``forward_features``, never the ViT's own ``forward``, so the parts are listed."""
        vit = self._ensure_model().visual_encoder
        return [vit.patch_embed, *vit.blocks]

    def forward(self, pixels: torch.Tensor, text: pnpseg.TokenizedText, layers: Sequence[int]) -> pnpseg.VLMOutput:
        """ITM pass; gradients flow only from the text encoder on.

        The ViT runs under ``no_grad`` at the pixels' grid; its output becomes a
        grad-requiring leaf so the text encoder records a graph through the cross-attention
        probabilities (the parameters are frozen). A batch of 1 is broadcast against the other.
        """
        model = self._ensure_model()
        layers = pnpseg.check_forward_args(self, text, layers)
        pixels = pixels.to(self.device, torch.float32)
        input_ids = text.input_ids.to(self.device)
        attention_mask = text.attention_mask.to(self.device)
        batch = max(pixels.shape[0], input_ids.shape[0])
        if pixels.shape[0] not in (1, batch) or input_ids.shape[0] not in (1, batch):
            raise ValueError(
                f"{pixels.shape[0]} images and {input_ids.shape[0]} prompts: batch sizes must match or be 1"
            )
        grid = self.grid_for((pixels.shape[2], pixels.shape[3]))
        architecture.set_grid(model.visual_encoder, self._native_pos_embed, grid)
        with torch.no_grad():
            image_embeds = model.visual_encoder.forward_features(pixels)
        image_embeds = image_embeds.detach().requires_grad_(True).expand(batch, -1, -1)
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
        modules = {i: self.cross_attention(i) for i in sorted(set(layers))}
        with torch.enable_grad(), capture_probabilities(modules) as captured:
            hidden = model.text_encoder(
                input_ids.expand(batch, -1),
                attention_mask=attention_mask.expand(batch, -1),
                encoder_hidden_states=image_embeds,
                encoder_attention_mask=image_atts,
                output_attentions=True,
                return_dict=True,
            ).last_hidden_state
            match_logit = model.itm_head(hidden[:, 0, :])[:, 1]
        return pnpseg.VLMOutput(
            match_logit=match_logit,
            attentions=[captured[i] for i in layers],
            grid=grid,
            to_text_image=drop_image_cls,
        )

    def cross_attention(self, layer: int) -> torch.nn.Module:
        """The module whose output is ``(context, probs, ...)`` for text→image layer ``layer`` (0-based)."""
        return self._ensure_model().text_encoder.encoder.layer[self._fusion_layer + layer].crossattention.self


class LavisBlipAdapter(LavisAdapter):
    """LAVIS ``BlipITM`` (``blip_image_text_matching``): BLIP ITM base/large, COCO or Flickr.

    Position 0 of every prompt is [ENC], as in LAVIS's ITM (and the PnP-OVSS code).
    """

    default_params = {
        "layer": 8,
        "head": 10,
        "threshold": 0.15,
        "blur_sigma": 0.05,
        "drop_rounds": 4,
        "image_size": (336, 336),
    }
    adapter_name = "lavis-blip"
    display_name = "LAVIS BLIP"
    names = {
        "base-coco": NamedModel("blip_image_text_matching", "base"),
        "large-coco": NamedModel("blip_image_text_matching", "large"),
        "base-flickr": NamedModel(url=f"{BLIP_RELEASE}/model_base_retrieval_flickr.pth"),
        "large-flickr": NamedModel(url=f"{BLIP_RELEASE}/model_large_retrieval_flickr.pth"),
    }
    default_model = "large-flickr"
    model_class = "lavis.models.blip_models.blip_image_text_matching:BlipITM"
    med_config = "med_config.json"

    def _init_tokenizer(self, tokenizer: Any) -> Any:
        # LAVIS's BlipBase.init_tokenizer: [DEC] as BOS, then [ENC] (ids 30522, 30523).
        tokenizer.add_special_tokens({"bos_token": "[DEC]"})
        tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
        tokenizer.enc_token_id = tokenizer.additional_special_tokens_ids[0]
        return tokenizer

    def __init__(self, model: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu") -> None:
        super().__init__(model, device)
        self.first_token_id = self.tokenizer.enc_token_id

    def _build(self, model_class: Any, state: Mapping[str, torch.Tensor]) -> Any:
        return model_class(
            image_encoder=architecture.vision_encoder(state),
            text_encoder=architecture.text_encoder(state, self.med_config),
            embed_dim=state["vision_proj.weight"].shape[0],
        )


class AlbefAdapter(LavisAdapter):
    """LAVIS ``AlbefRetrieval``: ALBEF fine-tuned for COCO or Flickr30k retrieval.

    Its text encoder is 6 text-only layers then 6 fusion layers with cross-attention; the
    protocol's layers are the fusion layers. The ITM reads [CLS] (ALBEF has no [ENC]).
    The default layer and head are a starting point, not a tuned choice (``pnpseg tune``).
    """

    default_params = {
        "layer": 4,
        "head": 10,
        "threshold": 0.15,
        "blur_sigma": 0.05,
        "drop_rounds": 4,
        "image_size": (336, 336),
    }
    adapter_name = "albef"
    display_name = "ALBEF"
    names = {
        "coco": NamedModel("albef_retrieval", "coco"),
        "flickr": NamedModel("albef_retrieval", "flickr"),
    }
    default_model = "flickr"
    model_class = "lavis.models.albef_models.albef_retrieval:AlbefRetrieval"
    med_config = "med_config_albef.json"

    def _rename(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # ALBEF's own checkpoints nest the text encoder as ``text_encoder.bert.*``; LAVIS's
        # AlbefBase.load_from_pretrained drops the ``bert.`` the same way.
        return {key.replace("bert.", "") if "bert." in key else key: value for key, value in state.items()}

    def _build(self, model_class: Any, state: Mapping[str, torch.Tensor]) -> Any:
        return model_class(
            image_encoder=architecture.vision_encoder(state),
            text_encoder=architecture.text_encoder(state, self.med_config),
            queue_size=state["image_queue"].shape[1] if "image_queue" in state else 0,
            embed_dim=state["vision_proj.weight"].shape[0],
        )


# -- hooks -----------------------------------------------------------------------------------


@contextlib.contextmanager
def capture_probabilities(modules: Mapping[int, torch.nn.Module]) -> Iterator[dict[int, torch.Tensor]]:
    """Record ``output[1]`` (the attention probabilities) of each module during the forward.

    LAVIS's ``BertSelfAttention`` returns ``(context, probs, past_key_value)`` when asked for
    attentions; ``probs`` is the softmax before its dropout, which in eval mode returns that
    very tensor, so gradients with respect to it are exact. Hooks are removed even if the
    forward fails.
    """
    captured: dict[int, torch.Tensor] = {}

    def make_hook(key: int) -> Any:
        def hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
            captured[key] = output[1]

        return hook

    handles = [module.register_forward_hook(make_hook(key)) for key, module in modules.items()]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def drop_image_cls(attention: torch.Tensor) -> torch.Tensor:
    """(B, heads, T, 1+N) → (B, heads, T, N): keys are ``[image CLS; patches]``."""
    return attention[..., 1:]


# -- helpers ---------------------------------------------------------------------------------


def _require_lavis(adapter: str) -> None:
    """LAVIS installed, or one line saying how to get it (checked without importing it)."""
    if importlib.util.find_spec("lavis") is None:
        raise MissingDependencyError(
            f"adapter {adapter!r} needs salesforce-lavis 1.0.2, which is not installed here; it lives in "
            "its own environment: pip install -r requirements-lavis.txt (docs/lavis.md)"
        )


def _import(spec: str) -> Any:
    """``module:Name`` from LAVIS; a LAVIS whose own imports fail is one line too."""
    module, name = spec.split(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise MissingDependencyError(
            f"LAVIS cannot be imported ({pnpseg.first_line(exc)}); install requirements-lavis.txt (docs/lavis.md)"
        ) from None


def _with_tokenizer(model_class: Any, tokenizer: Any) -> Any:
    """``model_class`` whose ``init_tokenizer`` returns ``tokenizer``.

    LAVIS's ``init_tokenizer`` always fetches ``bert-base-uncased`` by name, which fails
    offline; the subclass changes nothing else.
    """
    return type(model_class.__name__, (model_class,), {"init_tokenizer": classmethod(lambda cls: tokenizer)})
