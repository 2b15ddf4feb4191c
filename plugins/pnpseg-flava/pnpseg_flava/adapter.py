"""FLAVA image-text matching (``FlavaForPreTraining``) as a pnpseg adapter.

FLAVA encodes the image (a ViT with an image CLS) and the text (a BERT) separately, projects
both into the multimodal width and runs a multimodal encoder over the joint sequence
``[mm CLS; image CLS; patches (N); text (T)]``; the ITM head reads the mm CLS. The
text→image attention of multimodal layer ``i`` is the block ``probs[..., 2+N:, 2:2+N]``
(text rows, patch columns) of ``flava.multimodal_model.encoder.layer[i].attention.attention``,
returned with ``output_attentions=True`` (FLAVA's attention is eager only).

``FlavaModel.forward`` does not interpolate the image position embeddings, so the forward
is composed here: image model with ``interpolate_pos_encoding`` → ``image_to_mm_projection``
of its last hidden state; text model → ``text_to_mm_projection``; concatenate; multimodal
model; ``itm_head``. Written against transformers 5.x (checked on 5.24). Everything else
(loading, preprocessing, tokenizing, checks) is :class:`pnpseg_hf.HFAdapter`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

import pnpseg
from pnpseg import profile_stage as stage
from pnpseg_hf import HFAdapter, broadcast_batch, eager, fused, start_graph_at

DEFAULT_MODEL = "facebook/flava-full"


class FlavaAdapter(HFAdapter):
    """PnP-OVSS adapter for FLAVA pre-training checkpoints (they carry the ITM head).

    The default layer/head are **untuned** (the paper does not cover FLAVA): layer 4 of
    the 6 multimodal layers, two thirds up the stack as for BLIP; tune with the CLIP reward
    before trusting them. On a checkpoint with fewer layers or heads the core clamps them.
    """

    adapter_name = "flava"
    default_model = DEFAULT_MODEL
    model_class = "FlavaForPreTraining"
    display_name = "FLAVA"
    required_weights = ("itm_head", "flava.multimodal_model")
    fused_attention = {"FlavaSelfAttention": fused.bert_self_attention}
    default_params = {"layer": 4, "head": 6}  # only what differs from SegmentParams' defaults

    def read_num_layers(self, config: Any) -> int:
        """Text→image attention lives in the multimodal encoder."""
        return int(config.multimodal_config.num_hidden_layers)

    def read_num_heads(self, config: Any) -> int:
        return int(config.multimodal_config.num_attention_heads)

    def vision_modules(self) -> list[torch.nn.Module]:
        """The image encoder (``--precision bf16-vision``); its projection stays fp32."""
        return [self.model.flava.image_model]

    def forward(self, pixels: torch.Tensor, text: pnpseg.TokenizedText, layers: Sequence[int]) -> pnpseg.VLMOutput:
        """ITM pass; the autograd graph starts at the first requested multimodal layer.

        The unimodal encoders and projections run under ``no_grad`` (one image pass per
        image, broadcast against the prompts); a pre-hook makes the input of the first
        requested multimodal layer a grad-requiring leaf, so the returned probabilities
        and the match logit are in one graph and no parameter gets a ``.grad``.
        """
        layers = self.check_forward_args(text, layers)
        flava = self.model.flava
        pixels = pixels.to(self.device, torch.float32)
        input_ids = text.input_ids.to(self.device)
        attention_mask = text.attention_mask.to(self.device)
        batch = broadcast_batch(pixels.shape[0], input_ids.shape[0])

        with torch.no_grad(), stage("vision forward"):
            image = flava.image_model(pixel_values=pixels, interpolate_pos_encoding=True, output_hidden_states=True)
            image = flava.image_to_mm_projection(image.hidden_states[-1])  # before the final layernorm, as FLAVA
        with torch.no_grad(), stage("text forward"):
            words = flava.text_model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
            words = flava.text_to_mm_projection(words.hidden_states[-1])
        image, words = image.expand(batch, -1, -1), words.expand(batch, -1, -1)
        attention_mask = attention_mask.expand(batch, -1)
        mm_cls = 1 if flava.multimodal_model.use_cls_token else 0
        image_tokens = image.shape[1]  # image CLS + N patches
        joint_mask = torch.cat([attention_mask.new_ones(batch, mm_cls + image_tokens), attention_mask], dim=1)

        first = flava.multimodal_model.encoder.layer[min(layers)] if layers else None
        captured = (flava.multimodal_model.encoder.layer[i].attention.attention for i in layers)
        with torch.enable_grad(), stage("multimodal forward"), start_graph_at(first), eager(captured):
            out = flava.multimodal_model(
                torch.cat([image, words], dim=1),
                attention_mask=joint_mask,
                output_attentions=bool(layers),
                return_dict=True,
            )
            match_logit = self.model.itm_head(out.last_hidden_state)[:, 1]
        attentions = [out.attentions[i] for i in layers] if layers else []
        patches = slice(mm_cls + 1, mm_cls + image_tokens)
        text_rows = slice(mm_cls + image_tokens, mm_cls + image_tokens + input_ids.shape[1])

        def to_text_image(attention: torch.Tensor) -> torch.Tensor:
            """(B, heads, S, S) over ``[mm CLS; image CLS; patches; text]`` → (B, heads, T, N)."""
            return attention[..., text_rows, patches]

        grid = self.grid_for((pixels.shape[2], pixels.shape[3]))
        return pnpseg.VLMOutput(match_logit=match_logit, attentions=attentions, grid=grid, to_text_image=to_text_image)
