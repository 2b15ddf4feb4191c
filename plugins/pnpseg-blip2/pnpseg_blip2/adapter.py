"""BLIP-2 image-text matching (``Blip2ForImageTextRetrieval``) as a pnpseg adapter.

BLIP-2 has no text→image attention. Its Q-Former runs a set of learned query tokens and the
text tokens through a shared self-attention, and in every ``cross_attention_frequency``-th
layer the *queries alone* cross-attend to the image (``[image CLS; patches]``); the ITM head
reads the queries' outputs (mean of their two-way logits). A text token reaches the match
only through the queries that read it, so its map is **composed** in each cross-attention
layer ``k``: ``M[t, p] = Σ_q S_k[q, t] · C_k[q, p]``, where ``S_k[q, t]`` is query ``q``'s
self-attention to token ``t`` (mean over the heads) and ``C_k`` the cross-attention of the
chosen head (docs/adapters.md, "Composed maps").

The protocol's layers are the cross-attention layers (0-based ``i`` is Q-Former layer
``i · cross_attention_frequency``); ``forward`` returns their cross-attention (the tensor
GradCAM differentiates), and its ``to_text_image(tensor, layer)`` applies the composition
with that layer's detached self-attention. Sizes come from ``qformer_config``:
``Blip2Config.text_config`` is the language model's. Written against transformers 5.x
(checked on 5.25).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

import pnpseg
from pnpseg import profile_stage as stage
from pnpseg_hf import HFAdapter, broadcast_batch, capture_outputs, eager

DEFAULT_MODEL = "Salesforce/blip2-itm-vit-g"
ITM_ARCHITECTURE = "Blip2ForImageTextRetrieval"


class Blip2Adapter(HFAdapter):
    """PnP-OVSS adapter for BLIP-2 ITM checkpoints (``Salesforce/blip2-itm-vit-g``, ``...-coco``).

    The default layer is **untuned** (the paper does not cover BLIP-2): cross-attention
    layer 4 of the 6 in the public checkpoints, two thirds up the stack as for BLIP, with
    the core's default head; tune with the CLIP reward (``pnpseg tune``) before trusting it.
    """

    adapter_name = "blip2"
    default_model = DEFAULT_MODEL
    model_class = ITM_ARCHITECTURE
    display_name = "BLIP-2"
    processor_class = "Blip2Processor"
    required_weights = ("itm_head", "qformer", "query_tokens", "embeddings")
    checkpoint_description = "BLIP-2 ITM checkpoint"
    require_config_json = True
    fixed_resample = Image.Resampling.BICUBIC
    fusion_config = "qformer_config"  # text_config is the language model's
    default_params = {"layer": 4}  # untuned: only what differs from SegmentParams' defaults

    def check_config(self) -> None:
        super().check_config()
        architectures = getattr(self.config, "architectures", None) or []
        if architectures and ITM_ARCHITECTURE not in architectures:
            raise pnpseg.ModelLoadError(
                f"{self.name!r} is a BLIP-2 {architectures[0]}, not an image-text-matching model; {self.suggestion()}"
            )
        if not getattr(self.config.qformer_config, "use_qformer_text_input", False):
            raise pnpseg.ModelLoadError(
                f"{self.name!r} has a Q-Former without text input (use_qformer_text_input is false), so no "
                f"image-text matching; {self.suggestion()}"
            )

    def read_num_layers(self, config: Any) -> int:
        """The Q-Former layers with cross-attention: every ``cross_attention_frequency``-th."""
        return len(cross_layers(config.qformer_config))

    def vision_modules(self) -> list[torch.nn.Module]:
        """The ViT (``--precision bf16-vision`` runs it alone in bf16)."""
        return [self.model.vision_model]

    def forward(self, pixels: torch.Tensor, text: pnpseg.TokenizedText, layers: Sequence[int]) -> pnpseg.VLMOutput:
        """ITM pass; the graph starts at the image features (the ViT runs under ``no_grad``).

        Hooks record, for each requested layer, the queries' cross-attention (returned, in
        the graph) and the joint self-attention (detached: the composition's coefficients).
        """
        layers = self.check_forward_args(text, layers)
        pixels = pixels.to(self.device, torch.float32)
        inputs = self._inputs(pixels, text, graph=True)
        queries = inputs["query_length"]
        qformer = self.model.qformer
        index = cross_layers(qformer.config)
        modules = {}
        for i in sorted(set(layers)):
            block = qformer.encoder.layer[index[i]]
            modules[("self", i)] = block.attention.attention
            modules[("cross", i)] = block.crossattention.attention
        with torch.enable_grad(), stage("q-former forward"), capture_outputs(modules, strict=True) as captured:
            hidden = qformer(**inputs, return_dict=True).last_hidden_state
            match_logit = self.model.itm_head(hidden[:, :queries]).mean(dim=1)[:, 1]
        routes = {i: query_routes(captured[("self", i)].detach(), queries) for i in set(layers)}

        def to_text_image(tensor: torch.Tensor, layer: int) -> torch.Tensor:
            """(B, heads, Q, 1+N) cross-attention or its gradient → (B, heads, T, N), composed."""
            return compose(routes[layer], tensor)

        grid = self.grid_for((pixels.shape[2], pixels.shape[3]))
        attentions = [captured[("cross", i)] for i in layers]
        return pnpseg.VLMOutput(match_logit=match_logit, attentions=attentions, grid=grid, to_text_image=to_text_image)

    def reported_maps(self, pixels: torch.Tensor, text: pnpseg.TokenizedText) -> list[torch.Tensor]:
        """Every layer's composed map from the attentions the Q-Former's own forward reports
        (``output_attentions``: ``attentions`` per layer, ``cross_attentions`` per
        cross-attention layer), without hooks, on a copy of the Q-Former (``transformers``
        leaves its recording hooks on the modules it ran)."""
        pixels = pixels.to(self.device, torch.float32)
        qformer = copy.deepcopy(self.model.qformer)
        with torch.no_grad(), eager(qformer.modules()):
            inputs = self._inputs(pixels, text, graph=False)
            out = qformer(**inputs, output_attentions=True, return_dict=True)
        queries = inputs["query_length"]
        # transformers' ".attention" recorder also matches ".crossattention.attention": keep the
        # joint self-attentions (Q+T rows; the cross-attentions have Q)
        joint = [a for a in out.attentions if a.shape[-2] == inputs["query_embeds"].shape[1]]
        index = cross_layers(qformer.config)
        return [compose(query_routes(joint[k], queries), c) for k, c in zip(index, out.cross_attentions)]

    def _inputs(self, pixels: torch.Tensor, text: pnpseg.TokenizedText, graph: bool) -> dict[str, Any]:
        """The Q-Former's keyword arguments: the joint ``[queries; text]`` embeddings and mask,
        the number of queries, the image features (with ``graph``, a grad-requiring leaf: the
        autograd graph starts there) and their mask, broadcast to the pair batch."""
        model = self.model
        input_ids = text.input_ids.to(self.device)
        attention_mask = text.attention_mask.to(self.device)
        batch = broadcast_batch(pixels.shape[0], input_ids.shape[0])
        with torch.no_grad(), stage("vision forward"):
            image = model.vision_model(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state
            queries = model.query_tokens.expand(batch, -1, -1)
            embeds = model.embeddings(input_ids=input_ids.expand(batch, -1), query_embeds=queries)
        joint_mask = torch.cat([attention_mask.new_ones(batch, queries.shape[1]), attention_mask.expand(batch, -1)], 1)
        if graph:
            image = image.detach().requires_grad_(True)
        return {
            "query_embeds": embeds,
            "query_length": queries.shape[1],
            "attention_mask": joint_mask,
            "encoder_hidden_states": image.expand(batch, -1, -1),
            "encoder_attention_mask": joint_mask.new_ones(batch, image.shape[1]),
        }


def cross_layers(qformer_config: Any) -> list[int]:
    """The Q-Former layers that have cross-attention, in order (as ``Blip2QFormerLayer`` decides)."""
    return list(range(0, int(qformer_config.num_hidden_layers), int(qformer_config.cross_attention_frequency)))


def query_routes(self_attention: torch.Tensor, queries: int) -> torch.Tensor:
    """(B, heads, Q+T, Q+T) joint self-attention → (B, 1, T, Q): how much each query reads
    each text token, averaged over the heads, as text rows × query columns."""
    return self_attention[..., :queries, queries:].mean(dim=1, keepdim=True).transpose(-1, -2)


def compose(routes: torch.Tensor, cross: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, Q) routes × (B, heads, Q, 1+N) cross-attention (or its gradient) → (B, heads, T, N)."""
    return routes.to(cross.dtype) @ cross[..., 1:]
