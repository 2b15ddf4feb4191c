"""ViLT image-text matching (``ViltForImageAndTextRetrieval``) as a pnpseg adapter.

ViLT is single-stream: one transformer runs self-attention over ``[text (T); image CLS;
patches (N)]``. Its text→image attention is the block ``probs[..., :T, T+1:]`` of
``vilt.encoder.layer[i].attention.attention`` (text rows, patch columns, image CLS
excluded), produced only with ``output_attentions=True``. The retrieval head
``rank_output`` gives one score per pair, used as the match logit.

Trap: ``ViltEmbeddings.visual_embed`` picks the patches with ``torch.multinomial``, so even
when it keeps them all they come in a *random order*, and ``ViltModel.forward`` drops the
patch index. The adapter therefore calls ``visual_embed`` itself, keeps the index, passes
``image_embeds`` (and the patch-level mask) to the model, and puts the patch columns back
in row-major order in :func:`VLMOutput.to_text_image`. Written against transformers 5.x
(checked on 5.23); the same code paths exist in 4.57. The loading, preprocessing and
checks shared with the other Hugging Face adapters live in ``pnpseg_hf``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

import pnpseg
from pnpseg import profile_stage as stage
from pnpseg_hf import HFAdapter, broadcast_batch, eager, fused, start_graph_at

DEFAULT_MODEL = "dandelin/vilt-b32-finetuned-coco"
ADAPTER = "vilt"


class ViltAdapter(HFAdapter):
    """PnP-OVSS adapter for ViLT retrieval checkpoints (hub name or local folder).

    Config and processor load in ``__init__`` (cheap; class names can be checked against
    the tokenizer), the weights on the first :meth:`forward`. ViLT's text encoder holds only
    40 tokens, so longer class lists are split into several prompts by the core.

    The default layer/head are **untuned** (the paper does not cover ViLT): ViLT-B/32 has
    the same 12-layer × 12-head BERT-base shape as BLIP's text encoder, so the paper's BLIP
    solution (layer 8, head 10; two thirds up the stack, where text and patch tokens are
    already mixed but the top layers have not yet specialised to the pooled [CLS] that the
    ranking head reads) is the starting point. Tune with the CLIP reward before trusting it.

    :meth:`preprocess` resizes plainly: ViLT's processor resizes the short side and pads
    (with a pixel mask); a plain resize keeps every patch valid, and ViLT interpolates its
    position table to any grid.
    """

    default_params = {"image_size": (384, 384)}  # only what differs from SegmentParams' defaults
    # ViLT's config is flat (no text/vision parts): the inherited size hooks read its
    # num_hidden_layers, num_attention_heads, max_position_embeddings (40 in the public
    # checkpoints) and patch_size.
    adapter_name = ADAPTER
    default_model = DEFAULT_MODEL
    model_class = "ViltForImageAndTextRetrieval"
    display_name = "ViLT"
    processor_class = "ViltProcessor"
    required_weights = ("rank_output", "vilt.pooler")
    head_description = "image-text retrieval head"
    model_description = "ViLT image-text retrieval model"
    checkpoint_description = "ViLT retrieval checkpoint"
    fused_attention = {"ViltSelfAttention": fused.bert_self_attention}

    # -- protocol --------------------------------------------------------------------------

    def forward(self, pixels: torch.Tensor, text: pnpseg.TokenizedText, layers: Sequence[int]) -> pnpseg.VLMOutput:
        """Retrieval pass with gradients only where GradCAM needs them.

        The patch embedding (``visual_embed``) runs under ``no_grad`` with every patch kept
        (``max_image_length=-1``); its patch index says where each shuffled patch came from.
        Parameters are frozen, so nothing builds an autograd graph until a pre-hook makes the
        input of the first requested attention a grad-requiring leaf: the probabilities and
        everything from them to the score are in the graph, no parameter gets a ``.grad``.
        A text batch or image batch of 1 is broadcast against the other (one patch
        embedding per image); ``layers=[]`` gives the score alone.
        """
        layers = self.check_forward_args(text, layers)
        text_length = text.input_ids.shape[1]
        model = self.model
        pixels = pixels.to(self.device, torch.float32)
        b, _, h, w = pixels.shape
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"image size {h}x{w} is not a multiple of ViLT's patch size {self.patch_size}")
        batch = broadcast_batch(b, text.input_ids.shape[0])

        pixel_mask = torch.ones((b, h, w), dtype=torch.long, device=self.device)
        # fork_rng: visual_embed's multinomial would otherwise advance the caller's global RNG.
        with torch.no_grad(), torch.random.fork_rng(devices=[]), stage("vision forward"):
            image_embeds, image_mask, (patch_index, grid) = model.vilt.embeddings.visual_embed(
                pixels, pixel_mask, max_image_length=-1
            )
        grid = (int(grid[0]), int(grid[1]))
        order = row_major_order(patch_index, grid).expand(batch, -1)
        image_embeds = image_embeds.expand(batch, -1, -1)
        image_mask = image_mask.expand(batch, -1)
        input_ids = text.input_ids.to(self.device).expand(batch, -1)
        attention_mask = text.attention_mask.to(self.device).expand(batch, -1)

        with (
            torch.enable_grad(),
            stage("multimodal forward"),
            start_graph_at(self_attention_module(model, min(layers)) if layers else None),
            eager(self_attention_module(model, i) for i in layers),
        ):
            out = model.vilt(
                input_ids=input_ids,
                attention_mask=attention_mask,
                image_embeds=image_embeds,
                pixel_mask=image_mask,  # with image_embeds, the *patch-level* mask [CLS; patches]
                output_attentions=bool(layers),
                return_dict=True,
            )
            match_logit = model.rank_output(out.pooler_output)[:, 0]
        attentions = [out.attentions[i] for i in layers] if layers else []
        if any(a is None for a in attentions):
            raise RuntimeError("ViLT returned no attention probabilities; it must run with eager attention")

        def to_text_image(attention: torch.Tensor) -> torch.Tensor:
            """(B, heads, T+1+N, T+1+N) → (B, heads, T, N): text rows, patch columns, row-major."""
            block = attention[..., :text_length, text_length + 1 :]
            index = order.to(block.device)[:, None, None, :].expand(*block.shape[:-1], -1)
            return block.gather(-1, index)

        return pnpseg.VLMOutput(match_logit=match_logit, attentions=attentions, grid=grid, to_text_image=to_text_image)


# -- patch order -----------------------------------------------------------------------------


def row_major_order(patch_index: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Column permutation that puts ``visual_embed``'s shuffled patches in row-major order.

    ``patch_index`` (B, N, 2) holds each embedded patch's (row, column). The result (B, N)
    lists, for row-major patch ``p``, the position among the embedded patches where it sits,
    so ``columns.gather(-1, order)`` is row-major.
    """
    grid_h, grid_w = grid
    flat = patch_index[..., 0] * grid_w + patch_index[..., 1]
    if flat.shape[1] != grid_h * grid_w:
        raise RuntimeError(f"ViLT embedded {flat.shape[1]} patches for a {grid_h}x{grid_w} grid")
    return flat.argsort(dim=1)


def self_attention_module(model: Any, layer: int) -> torch.nn.Module:
    """The module whose output is ``(context, probs)`` over ``[text; image CLS; patches]``."""
    return model.vilt.encoder.layer[layer].attention.attention
