"""BLIP image-text matching (``BlipForImageTextRetrieval``) as a pnpseg VLM adapter.

The text encoder cross-attends from text tokens (queries) to ``[image CLS; patches]``
(keys) in every layer; those probabilities, and the ITM head's "match" logit, are what
PnP-OVSS needs. Written against transformers 5.x (checked on 5.23), works on 4.57.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np
import pnpseg
import torch
from PIL import Image

DEFAULT_MODEL = "Salesforce/blip-itm-large-flickr"
ITM_ARCHITECTURE = "BlipForImageTextRetrieval"


class BlipAdapter(pnpseg.BaseAdapter):
    """PnP-OVSS adapter for BLIP ITM checkpoints (a hub name or a local folder).

    Config and processor load in ``__init__`` (cheap; class names can be checked against
    the tokenizer), the weights on the first :meth:`forward`.

    ``itm_token="enc"`` puts BLIP's [ENC] token at position 0, as the original BLIP/LAVIS
    code and the PnP-OVSS authors do for ITM; ``"cls"`` keeps [CLS], as Hugging Face's
    ``BlipForImageTextRetrieval.forward`` does (it never swaps the token).
    """

    default_params = {
        "layer": 8,
        "head": 10,
        "threshold": 0.15,
        "blur_sigma": 0.05,
        "drop_rounds": 4,
        "image_size": (336, 336),
    }

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        device: str | torch.device = "cpu",
        itm_token: Literal["enc", "cls"] = "enc",
    ) -> None:
        from transformers import AutoConfig, BlipProcessor

        self.name = str(model) if model is not None else DEFAULT_MODEL
        self.device = torch.device(device)
        self._source = _resolve_source(self.name)
        self.config = _load(AutoConfig.from_pretrained, self.name, self._source)
        _check_is_blip_itm(self.config, self.name)
        processor = _load(BlipProcessor.from_pretrained, self.name, self._source)
        self.tokenizer = processor.tokenizer
        image_processor = processor.image_processor

        text_cfg, vision_cfg = self.config.text_config, self.config.vision_config
        self.num_layers: int = text_cfg.num_hidden_layers
        self.num_heads: int = text_cfg.num_attention_heads
        self.max_text_length: int = text_cfg.max_position_embeddings
        self.patch_size: int = _side(vision_cfg.patch_size)
        self.mean = torch.tensor(image_processor.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(image_processor.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        if itm_token not in ("enc", "cls"):
            raise ValueError(f"itm_token must be 'enc' or 'cls', got {itm_token!r}")
        self.first_token_id = (
            _enc_token_id(self.tokenizer, text_cfg) if itm_token == "enc" else self.tokenizer.cls_token_id
        )
        self._model: Any = None

    # -- loading ---------------------------------------------------------------------------

    @property
    def weights_loaded(self) -> bool:
        return self._model is not None

    def _ensure_model(self) -> Any:
        """Load the weights once: eval mode, eager attention, every parameter frozen."""
        if self._model is None:
            from transformers import BlipForImageTextRetrieval

            with _quiet_progress():
                model, info = _load(
                    BlipForImageTextRetrieval.from_pretrained, self.name, self._source,
                    config=self.config, attn_implementation="eager", dtype=torch.float32,
                    output_loading_info=True,
                )
            missing = [k for k in info.get("missing_keys", ()) if k.startswith(("itm_head", "text_encoder"))]
            if missing:
                raise pnpseg.ModelLoadError(
                    f"{self.name!r} has no image-text-matching weights (missing {missing[0]}, ...); "
                    f"use a BLIP ITM checkpoint such as {DEFAULT_MODEL!r}"
                ) from None
            self._model = model.eval().requires_grad_(False).to(self.device)
        return self._model

    # -- protocol --------------------------------------------------------------------------

    def preprocess(self, images: Sequence[Image.Image], size: tuple[int, int]) -> torch.Tensor:
        """Bicubic resize to ``size`` (H, W) — any multiple of the patch size — and normalise.

        BLIP's processor only produces its square training size; position embeddings are
        interpolated in :meth:`forward` instead.
        """
        h, w = int(size[0]), int(size[1])
        if h % self.patch_size or w % self.patch_size or h <= 0 or w <= 0:
            raise pnpseg.PnpsegError(
                f"image size {h}x{w} is not a positive multiple of BLIP's patch size {self.patch_size}"
            )
        arrays = [
            np.asarray(img.convert("RGB").resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
            for img in images
        ]
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 255.0
        return ((pixels - self.mean) / self.std).to(self.device)

    def tokenize(self, prompts: Sequence[str]) -> pnpseg.TokenizedText:
        """BERT WordPiece with character offsets; position 0 becomes the ITM token ([ENC])."""
        enc = self.tokenizer(
            list(prompts), padding="longest", return_offsets_mapping=True,
            return_special_tokens_mask=True, return_token_type_ids=False, return_tensors="pt",
            verbose=False,  # the core tokenizes over-long prompts on purpose, to chunk classes
        )
        ids = enc["input_ids"]
        unknown = (ids == self.tokenizer.unk_token_id).tolist()
        special = enc["special_tokens_mask"].bool() | (enc["attention_mask"] == 0)
        offsets = [
            [(0, 0) if sp else (int(s), int(e)) for (s, e), sp in zip(row, sp_row)]
            for row, sp_row in zip(enc["offset_mapping"].tolist(), special.tolist())
        ]
        ids = ids.clone()
        ids[:, 0] = self.first_token_id
        return pnpseg.TokenizedText(ids, enc["attention_mask"], offsets, unknown)

    def forward(
        self, pixels: torch.Tensor, text: pnpseg.TokenizedText, layers: Sequence[int]
    ) -> pnpseg.VLMOutput:
        """ITM pass with gradients only where GradCAM needs them.

        The vision tower runs under ``no_grad``; its output is made a grad-requiring leaf so
        the text encoder builds a graph through the cross-attention probabilities (params
        are frozen, so no parameter ever gets a ``.grad``). A text batch or image batch of
        1 is broadcast against the other.
        """
        layers = [int(i) for i in layers]
        for i in layers:
            if not 0 <= i < self.num_layers:
                raise IndexError(f"BLIP layer index {i} out of range 0..{self.num_layers - 1} (0-based)")
        length = text.input_ids.shape[1]
        if length > self.max_text_length:
            raise ValueError(f"prompt has {length} tokens; BLIP allows {self.max_text_length}")
        model = self._ensure_model()
        pixels = pixels.to(self.device, torch.float32)
        input_ids = text.input_ids.to(self.device)
        attention_mask = text.attention_mask.to(self.device)
        batch = _broadcast_batch(pixels.shape[0], input_ids.shape[0])

        with torch.no_grad():
            vision = model.vision_model(pixel_values=pixels, interpolate_pos_encoding=True)
        image_embeds = vision.last_hidden_state
        image_embeds = image_embeds.detach().requires_grad_(True).expand(batch, -1, -1)
        input_ids = input_ids.expand(batch, -1)
        attention_mask = attention_mask.expand(batch, -1)

        with torch.enable_grad(), capture_cross_attentions(model, sorted(set(layers))) as captured:
            hidden = model.text_encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                encoder_hidden_states=image_embeds,
                return_dict=True,
            ).last_hidden_state
            match_logit = model.itm_head(hidden[:, 0, :])[:, 1]
        grid = (pixels.shape[2] // self.patch_size, pixels.shape[3] // self.patch_size)
        return pnpseg.VLMOutput(
            match_logit=match_logit,
            attentions=[captured[i] for i in layers],
            grid=grid,
            to_text_image=_drop_image_cls,
        )


# -- hooks -----------------------------------------------------------------------------------


def cross_attention_module(model: Any, layer: int) -> torch.nn.Module:
    """The module whose output is ``(context, probs)`` for text→image attention of ``layer``."""
    return model.text_encoder.encoder.layer[layer].crossattention.self


@contextlib.contextmanager
def capture_cross_attentions(model: Any, layers: Sequence[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Record the cross-attention probabilities of ``layers`` (0-based) during a forward.

    ``BlipTextSelfAttention`` returns the softmax output *before* its dropout; in eval mode
    ``Dropout`` returns that very tensor, so the recorded probs are the matmul's input and
    gradients with respect to them are exact. Hooks are removed even if the forward fails.
    """
    captured: dict[int, torch.Tensor] = {}
    handles = []

    def make_hook(layer: int) -> Callable[..., None]:
        def hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
            captured[layer] = output[1]

        return hook

    try:
        for layer in layers:
            handles.append(cross_attention_module(model, layer).register_forward_hook(make_hook(layer)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def _drop_image_cls(attention: torch.Tensor) -> torch.Tensor:
    """(B, heads, T, 1+N) → (B, heads, T, N): keys are ``[image CLS; patches]``."""
    return attention[..., 1:]


# -- helpers ---------------------------------------------------------------------------------


def _broadcast_batch(n_images: int, n_texts: int) -> int:
    batch = max(n_images, n_texts)
    if n_images not in (1, batch) or n_texts not in (1, batch):
        raise ValueError(f"{n_images} images and {n_texts} prompts: batch sizes must match or be 1")
    return batch


def _side(value: int | Sequence[int]) -> int:
    """Config sizes may be an int or an (h, w) pair; BLIP's patches are square."""
    return int(value) if isinstance(value, int) else int(value[0])


def _enc_token_id(tokenizer: Any, text_config: Any) -> int:
    """The id of [ENC], which BLIP's ITM puts at position 0.

    The original BLIP tokenizer appends [DEC] (``bos_token_id``, 30522) then [ENC] (30523)
    to bert-base-uncased, and the checkpoints' text embeddings (vocab 30524) keep both rows,
    but the Hugging Face tokenizers do not list [ENC]: fall back to ``bos_token_id + 1``.
    """
    token_id = tokenizer.convert_tokens_to_ids("[ENC]")
    if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
        return token_id
    bos = getattr(text_config, "bos_token_id", None)
    if isinstance(bos, int) and bos + 1 < text_config.vocab_size:
        return bos + 1
    return tokenizer.cls_token_id


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """Hide transformers' "Loading weights" bar (the CLI has its own output)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


# -- loading errors ------------------------------------------------------------------------


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything path-shaped is meant as a folder."""
    return (
        name.startswith((".", "/", "~"))
        or (os.altsep is not None and os.altsep in name)
        or "\\" in name
        or name.count("/") > 1
    )


def _resolve_source(name: str) -> Path | None:
    """The local folder ``name`` refers to, or None for a hub id; errors for bad paths."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise pnpseg.ModelLoadError(f"{name!r} is a file, not a model folder")
    if _looks_like_path(name):
        raise pnpseg.ModelLoadError(f"no model folder at {name!r}")
    return None


def _load(loader: Callable[..., Any], name: str, source: Path | None, **kwargs: Any) -> Any:
    """Call a ``from_pretrained`` turning failures into one-line :class:`ModelLoadError`.

    Hub ids try the local cache first: offline without ``HF_HUB_OFFLINE=1``,
    huggingface_hub retries every file for tens of seconds, and a cached model needs no
    network at all.
    """
    if source is not None:
        if not (source / "config.json").is_file():
            raise pnpseg.ModelLoadError(
                f"folder {name!r} has no config.json: not a Hugging Face model folder"
            )
        try:
            return loader(str(source), **kwargs)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise pnpseg.ModelLoadError(
                f"folder {name!r} is not a BLIP image-text-matching model ({_first_line(exc)})"
            ) from None
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return loader(name, local_files_only=True, **kwargs)
    except OSError:  # not (completely) in the cache
        pass
    try:
        return loader(name, **kwargs)
    except (OSError, HfHubHTTPError):
        raise pnpseg.model_unavailable(name, "blip") from None


def _check_is_blip_itm(config: Any, name: str) -> None:
    if getattr(config, "model_type", None) != "blip":
        raise pnpseg.ModelLoadError(
            f"{name!r} is a {getattr(config, 'model_type', 'unknown')!r} model, not BLIP; "
            f"use a BLIP ITM checkpoint such as {DEFAULT_MODEL!r}"
        )
    architectures = getattr(config, "architectures", None) or []
    if architectures and ITM_ARCHITECTURE not in architectures:
        raise pnpseg.ModelLoadError(
            f"{name!r} is a BLIP {architectures[0]}, not an image-text-matching model; "
            f"use a BLIP ITM checkpoint such as {DEFAULT_MODEL!r}"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 160 else line[:157] + "..."
