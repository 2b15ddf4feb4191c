"""LAVIS models built to fit a checkpoint's shapes, and their ViT at any patch grid.

LAVIS's ``from_config`` knows only ViT-B/16 and ViT-L/16 at one image size; reading the
sizes off the state dict instead builds the very same LAVIS classes for any checkpoint
(the released ones and the tiny ones of the tests). Heads are ``width // 64``, as in every
BLIP/ALBEF ViT and BERT; the text config starts from LAVIS's own med config of the family.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

import pnpseg

HEAD_DIM = 64
VISION = "visual_encoder."
TEXT = "text_encoder."


def _count(state: Mapping[str, torch.Tensor], pattern: str) -> int:
    found = {int(m.group(1)) for key in state if (m := re.match(pattern, key))}
    return max(found) + 1 if found else 0


def _heads(width: int, what: str) -> int:
    if width % HEAD_DIM:
        raise pnpseg.ModelLoadError(f"{what} width {width} is not a multiple of the head size {HEAD_DIM}")
    return width // HEAD_DIM


@dataclass(frozen=True)
class Sizes:
    """What the adapter needs to know before the model is built."""

    text_layers: int
    fusion_layer: int
    text_heads: int
    text_positions: int
    patch_size: int


def sizes(state: Mapping[str, torch.Tensor]) -> Sizes:
    """The checkpoint's text encoder and patch sizes, read off the tensor shapes."""
    return Sizes(
        text_layers=_count(state, re.escape(TEXT) + r"encoder\.layer\.(\d+)\."),
        fusion_layer=first_fusion_layer(state),
        text_heads=_heads(state[TEXT + "embeddings.word_embeddings.weight"].shape[1], "text"),
        text_positions=state[TEXT + "embeddings.position_embeddings.weight"].shape[0],
        patch_size=state[VISION + "patch_embed.proj.weight"].shape[-1],
    )


def native_grid(state: Mapping[str, torch.Tensor]) -> int:
    """The side of the square patch grid the checkpoint's position embeddings were trained on."""
    positions = state[VISION + "pos_embed"].shape[1] - 1
    side = math.isqrt(positions)
    if side * side != positions:
        raise pnpseg.ModelLoadError(f"the checkpoint's {positions} position embeddings are not a square grid")
    return side


def vision_encoder(state: Mapping[str, torch.Tensor]) -> Any:
    """LAVIS's ``VisionTransformerEncoder`` with the checkpoint's sizes (LayerNorm eps 1e-6)."""
    from lavis.models.vit import VisionTransformerEncoder

    width = state[VISION + "cls_token"].shape[-1]
    patch = state[VISION + "patch_embed.proj.weight"].shape[-1]
    encoder = VisionTransformerEncoder(
        img_size=native_grid(state) * patch,
        patch_size=patch,
        embed_dim=width,
        depth=_count(state, re.escape(VISION) + r"blocks\.(\d+)\."),
        num_heads=_heads(width, "vision"),
        mlp_ratio=state[VISION + "blocks.0.mlp.fc1.weight"].shape[0] / width,
    )
    encoder.vision_width = width
    return encoder


def text_encoder(state: Mapping[str, torch.Tensor], med_config: str) -> Any:
    """LAVIS's ``XBertEncoder`` with the checkpoint's sizes on top of the med config ``med_config``.

    Layers from the first one with cross-attention on are fusion layers (ALBEF: the upper
    half; BLIP: all, and its config has no ``fusion_layer``).
    """
    from lavis.common.utils import get_abs_path
    from lavis.models.med import XBertEncoder
    from transformers import BertConfig

    config = BertConfig.from_json_file(get_abs_path(f"configs/models/{med_config}"))
    words = state[TEXT + "embeddings.word_embeddings.weight"]
    layers = _count(state, re.escape(TEXT) + r"encoder\.layer\.(\d+)\.")
    config.vocab_size, config.hidden_size = words.shape
    config.num_hidden_layers = layers
    config.num_attention_heads = _heads(config.hidden_size, "text")
    config.intermediate_size = state[TEXT + "encoder.layer.0.intermediate.dense.weight"].shape[0]
    config.max_position_embeddings = state[TEXT + "embeddings.position_embeddings.weight"].shape[0]
    config.encoder_width = state[VISION + "cls_token"].shape[-1]
    if hasattr(config, "fusion_layer"):
        config.fusion_layer = first_fusion_layer(state)
    return XBertEncoder(config=config, add_pooling_layer=False)


def first_fusion_layer(state: Mapping[str, torch.Tensor]) -> int:
    """Index of the first text layer that cross-attends to the image."""
    pattern = re.escape(TEXT) + r"encoder\.layer\.(\d+)\.crossattention\."
    found = [int(m.group(1)) for key in state if (m := re.match(pattern, key))]
    if not found:
        raise pnpseg.ModelLoadError("the checkpoint's text encoder has no cross-attention layers")
    return min(found)


def resized_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``[CLS; patches]`` position embeddings bicubically resized to ``grid`` (h, w).

    The arithmetic of LAVIS's ``interpolate_pos_embed`` (bicubic, ``align_corners=False``,
    the CLS row kept), for any grid rather than only a square one; the native grid is
    returned unchanged.
    """
    side = math.isqrt(pos_embed.shape[1] - 1)
    if tuple(grid) == (side, side):
        return pos_embed
    cls_row, patches = pos_embed[:, :1], pos_embed[:, 1:]
    dim = patches.shape[-1]
    patches = patches.reshape(1, side, side, dim).permute(0, 3, 1, 2)
    patches = torch.nn.functional.interpolate(patches, size=tuple(grid), mode="bicubic", align_corners=False)
    return torch.cat((cls_row, patches.permute(0, 2, 3, 1).reshape(1, -1, dim)), dim=1)


def set_grid(encoder: Any, native_pos_embed: torch.Tensor, grid: tuple[int, int]) -> None:
    """Make LAVIS's ViT take images of ``grid`` patches.

    Its ``PatchEmbed`` only accepts the size it was built for and its forward slices the
    position table, so both are set for the grid (no-op when it already has it).
    """
    embed = encoder.patch_embed
    if tuple(embed.grid_size) == tuple(grid):
        return
    ph, pw = embed.patch_size
    embed.img_size = (grid[0] * ph, grid[1] * pw)
    embed.grid_size = tuple(grid)
    embed.num_patches = grid[0] * grid[1]
    table = resized_pos_embed(native_pos_embed, grid)
    encoder.pos_embed = torch.nn.Parameter(table.to(encoder.pos_embed.device), requires_grad=False)
