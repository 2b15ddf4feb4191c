"""BridgeTower image-text matching (``BridgeTowerForImageAndTextRetrieval``) as a pnpseg adapter.

BridgeTower has a cross-modal encoder of ``config.num_hidden_layers`` (6 in the large model)
layer pairs on top of a CLIP vision tower and a RoBERTa text tower, linked by bridge layers.
In each pair, ``cross_modal_text_layers[i].crossattention`` attends from text tokens
(queries) to ``[image CLS; patches]`` (keys): that is the text→image attention PnP-OVSS
needs. ``cross_modal_image_layers`` is the reverse direction and ``outputs.attentions``
holds the cross-modal *self*-attentions, so the probabilities are taken with forward hooks.
The ITM head ``itm_score`` (column 1 = "match") reads the concatenated text and image CLS
poolers. Written against transformers 5.x (checked on 5.23); the attribute paths and the
``(context, probs)`` output of the attention module also hold on 4.57. The loading,
preprocessing and checks shared with the other Hugging Face adapters live in ``pnpseg_hf``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

import pnpseg
from pnpseg import profile_stage as stage
from pnpseg_hf import HFAdapter, broadcast_batch, capped_by_tokenizer, capture_outputs, fused, start_graph_at

DEFAULT_MODEL = "BridgeTower/bridgetower-large-itm-mlm-itc"
ADAPTER = "bridgetower"


class BridgeTowerAdapter(HFAdapter):
    """PnP-OVSS adapter for BridgeTower checkpoints with an ITM head (hub name or local folder).

    Config and processor load in ``__init__`` (cheap; class names can be checked against
    the tokenizer), the weights on the first :meth:`forward`. Defaults are the paper's tuned
    solution for BridgeTower (layer 2, head 8, T 0.15; Table 2) at the authors' 336 px.

    :meth:`preprocess` normalises with the processor's (CLIP) statistics. The processor
    resizes the short side, floors to multiples of 32 and centre-crops; a plain resize
    keeps the whole image and works at any resolution, the position embeddings being
    interpolated in :meth:`forward`. BridgeTower checkpoints name various head classes (the
    ITM one names the contrastive class), so only the model type is checked at load;
    missing ITM weights are caught when the weights load.
    """

    default_params = {"layer": 2, "head": 8}  # only what differs from SegmentParams' defaults
    adapter_name = ADAPTER
    default_model = DEFAULT_MODEL
    model_class = "BridgeTowerForImageAndTextRetrieval"
    display_name = "BridgeTower"
    processor_class = "BridgeTowerProcessor"
    required_weights = ("itm_score", "bridgetower.cross_modal")
    checkpoint_description = "BridgeTower ITM checkpoint"
    # The vision tower already uses nn.MultiheadAttention without weights (PyTorch's fused path).
    fused_attention = {"BridgeTowerSelfAttention": fused.INTERFACE, "BridgeTowerCrossAttention": fused.INTERFACE}

    # The cross-modal layers are built from the *text* config, so the inherited
    # read_num_heads (the text config's heads) is right; it equals the top-level
    # ``num_attention_heads`` in the real models.

    def read_num_layers(self, config: Any) -> int:
        """One text→image cross-attention per cross-modal layer pair (top-level config)."""
        return int(config.num_hidden_layers)

    def read_max_text_length(self, config: Any, tokenizer: Any) -> int:
        """RoBERTa numbers positions from ``pad_token_id + 1`` (= 2), so 514 position
        embeddings hold 512 tokens. A tokenizer that declares a smaller ``model_max_length`` wins."""
        text_cfg = config.text_config
        pad = getattr(text_cfg, "pad_token_id", None)
        first = (pad if isinstance(pad, int) else 1) + 1
        return capped_by_tokenizer(int(text_cfg.max_position_embeddings) - first, tokenizer)

    # -- protocol --------------------------------------------------------------------------

    def vision_modules(self) -> list[torch.nn.Module]:
        """The CLIP tower's patch embedding and residual blocks (``--precision bf16-vision``).

        ``BridgeTowerModel`` calls them one by one, interleaved with the cross-modal layers
        (never the tower's own ``forward``), so the blocks are listed, not the tower.
        """
        visual = self.model.bridgetower.vision_model.visual
        return [visual.embeddings, *visual.transformer.resblocks]

    def forward(self, pixels: torch.Tensor, text: pnpseg.TokenizedText, layers: Sequence[int]) -> pnpseg.VLMOutput:
        """ITM pass with gradients only where GradCAM needs them.

        Every parameter is frozen and the input pixels do not require grad, so the vision
        and text towers (and everything below the first requested layer) build no autograd
        graph — as if run under ``no_grad``. The graph starts at the query input of the
        first requested cross-attention, which a pre-hook turns into a grad-requiring leaf:
        the captured probabilities, and everything computed from them up to the match
        logit, are in the graph; no parameter ever gets a ``.grad``. A text batch or image
        batch of 1 is broadcast against the other — by repetition: BridgeTower interleaves
        its vision layers with the cross-modal ones, so the vision tower runs once per
        prompt. ``layers=[]`` gives the match logit alone.
        """
        layers = self.check_forward_args(text, layers)
        model = self.model
        pixels = pixels.to(self.device, torch.float32)
        batch = broadcast_batch(pixels.shape[0], text.input_ids.shape[0])
        pixels = pixels.expand(batch, -1, -1, -1)
        input_ids = text.input_ids.to(self.device).expand(batch, -1)
        attention_mask = text.attention_mask.to(self.device).expand(batch, -1)

        with (
            torch.enable_grad(),
            stage("multimodal forward"),
            capture_cross_attentions(model, sorted(set(layers))) as captured,
        ):
            out = model.bridgetower(
                input_ids=input_ids,
                attention_mask=attention_mask,
                pixel_values=pixels,
                interpolate_pos_encoding=True,
                # ignored by 5.x (its attention always returns the probabilities); older
                # versions only return them, and so only let the hooks see them, when asked
                output_attentions=bool(layers),
                return_dict=True,
            )
            match_logit = model.itm_score(out.pooler_output)[:, 1]
        return self.cls_and_patches_output(match_logit, captured, layers, pixels)


# -- hooks -----------------------------------------------------------------------------------


def cross_attention_module(model: Any, layer: int) -> torch.nn.Module:
    """The module whose output is ``(context, probs)`` for text→image attention of ``layer``."""
    return model.bridgetower.cross_modal_text_layers[layer].crossattention.self


@contextlib.contextmanager
def capture_cross_attentions(model: Any, layers: Sequence[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Record the text→image attention probabilities of ``layers`` (0-based) during a forward.

    A forward pre-hook on the first requested layer makes its query input a grad-requiring
    leaf (when nothing upstream requires grad), so autograd records from there on and
    nothing below; later layers are downstream of it and need no help. The eager attention
    returns its post-dropout probabilities — in eval mode the very tensor its matmul uses —
    so gradients with respect to them are exact. Hooks are removed even if the forward
    fails; a layer whose probabilities were not seen is a RuntimeError.
    """
    modules = {layer: cross_attention_module(model, layer) for layer in layers}
    first = modules[min(layers)] if layers else None
    with start_graph_at(first), capture_outputs(modules, strict=True) as captured:
        yield captured
