"""BLIP image-text matching (``BlipForImageTextRetrieval``) as a pnpseg VLM adapter.

The text encoder cross-attends from text tokens (queries) to ``[image CLS; patches]``
(keys) in every layer; those probabilities, and the ITM head's "match" logit, are what
PnP-OVSS needs. Written against transformers 5.x (checked on 5.23), works on 4.57.
The loading, preprocessing and checks shared with the other Hugging Face adapters live in
``pnpseg_hf``.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
from PIL import Image

import pnpseg
from pnpseg import profile_stage as stage
from pnpseg_hf import HFAdapter, broadcast_batch, capture_outputs, drop_image_cls, eager, fused

DEFAULT_MODEL = "Salesforce/blip-itm-large-flickr"
ITM_ARCHITECTURE = "BlipForImageTextRetrieval"


class BlipAdapter(HFAdapter):
    """PnP-OVSS adapter for BLIP ITM checkpoints (a hub name or a local folder).

    Config and processor load in ``__init__`` (cheap; class names can be checked against
    the tokenizer), the weights on the first :meth:`forward`.

    ``itm_token="enc"`` puts BLIP's [ENC] token at position 0, as the original BLIP/LAVIS
    code and the PnP-OVSS authors do for ITM; ``"cls"`` keeps [CLS], as Hugging Face's
    ``BlipForImageTextRetrieval.forward`` does (it never swaps the token).

    :meth:`preprocess` always resizes bicubically: BLIP's processor only produces its square
    training size; position embeddings are interpolated in :meth:`forward` instead.
    """

    default_params: dict = {}  # the paper's BLIP solution is SegmentParams' own defaults
    adapter_name = "blip"
    default_model = DEFAULT_MODEL
    model_class = ITM_ARCHITECTURE
    display_name = "BLIP"
    processor_class = "BlipProcessor"
    required_weights = ("itm_head", "text_encoder")
    checkpoint_description = "BLIP ITM checkpoint"
    require_config_json = True
    fixed_resample = Image.Resampling.BICUBIC
    fused_attention = {"BlipAttention": fused.blip_attention, "BlipTextSelfAttention": fused.blip_text_attention}

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        device: str | torch.device = "cpu",
        itm_token: Literal["enc", "cls"] = "enc",
    ) -> None:
        super().__init__(model, device)
        if itm_token not in ("enc", "cls"):
            raise ValueError(f"itm_token must be 'enc' or 'cls', got {itm_token!r}")
        self.first_token_id = (
            _enc_token_id(self.tokenizer, self.config.text_config)
            if itm_token == "enc"
            else self.tokenizer.cls_token_id
        )

    def check_config(self) -> None:
        super().check_config()
        architectures = getattr(self.config, "architectures", None) or []
        if architectures and ITM_ARCHITECTURE not in architectures:
            raise pnpseg.ModelLoadError(
                f"{self.name!r} is a BLIP {architectures[0]}, not an image-text-matching model; {self.suggestion()}"
            )

    # -- protocol --------------------------------------------------------------------------

    def vision_modules(self) -> list[torch.nn.Module]:
        """The ViT (``--precision bf16-vision`` runs it alone in bf16)."""
        return [self.model.vision_model]

    def tokenize(self, prompts: Sequence[str]) -> pnpseg.TokenizedText:
        """BERT WordPiece with character offsets; position 0 becomes the ITM token ([ENC])."""
        text = super().tokenize(prompts)
        ids = text.input_ids.clone()
        ids[:, 0] = self.first_token_id
        return pnpseg.TokenizedText(ids, text.attention_mask, text.offsets, text.unknown)

    def forward(self, pixels: torch.Tensor, text: pnpseg.TokenizedText, layers: Sequence[int]) -> pnpseg.VLMOutput:
        """ITM pass with gradients only where GradCAM needs them.

        The vision tower runs under ``no_grad``; its output is made a grad-requiring leaf so
        the text encoder builds a graph through the cross-attention probabilities (params
        are frozen, so no parameter ever gets a ``.grad``). A text batch or image batch of
        1 is broadcast against the other.
        """
        layers = self.check_forward_args(text, layers)
        model = self.model
        pixels = pixels.to(self.device, torch.float32)
        input_ids = text.input_ids.to(self.device)
        attention_mask = text.attention_mask.to(self.device)
        batch = broadcast_batch(pixels.shape[0], input_ids.shape[0])

        with torch.no_grad(), stage("vision forward"):
            vision = model.vision_model(pixel_values=pixels, interpolate_pos_encoding=True)
        image_embeds = vision.last_hidden_state
        image_embeds = image_embeds.detach().requires_grad_(True).expand(batch, -1, -1)
        input_ids = input_ids.expand(batch, -1)
        attention_mask = attention_mask.expand(batch, -1)

        with (
            torch.enable_grad(),
            stage("text forward"),
            capture_cross_attentions(model, sorted(set(layers))) as captured,
        ):
            hidden = model.text_encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                encoder_hidden_states=image_embeds,
                return_dict=True,
            ).last_hidden_state
            match_logit = model.itm_head(hidden[:, 0, :])[:, 1]
        return self.cls_and_patches_output(match_logit, captured, layers, pixels)

    def reported_maps(self, pixels: torch.Tensor, text: pnpseg.TokenizedText) -> list[torch.Tensor]:
        """Every layer's text→patch map from the cross-attentions BLIP's own text encoder
        reports (``output_attentions``), without hooks: the conformance kit checks
        :meth:`forward`'s layer numbering against it. It runs a copy of the text encoder:
        ``transformers`` leaves its output-recording hooks on the modules it ran."""
        model = self.model
        pixels = pixels.to(self.device, torch.float32)
        batch = broadcast_batch(pixels.shape[0], text.input_ids.shape[0])
        text_encoder = copy.deepcopy(model.text_encoder)
        with torch.no_grad(), eager(text_encoder.modules()):
            image = model.vision_model(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state
            out = text_encoder(
                input_ids=text.input_ids.to(self.device).expand(batch, -1),
                attention_mask=text.attention_mask.to(self.device).expand(batch, -1),
                encoder_hidden_states=image.expand(batch, -1, -1),
                output_attentions=True,
                return_dict=True,
            )
        return [drop_image_cls(a) for a in out.cross_attentions]


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
    with capture_outputs({layer: cross_attention_module(model, layer) for layer in layers}) as captured:
        yield captured


# -- helpers ---------------------------------------------------------------------------------


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
