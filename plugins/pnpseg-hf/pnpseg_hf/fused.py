"""Fused attention wherever pnpseg captures nothing.

GradCAM needs the attention *probabilities* of one text→image layer, so that layer must run
the eager path. Every other attention only has to produce its output, and PyTorch's
``scaled_dot_product_attention`` computes the same thing without materialising the
probabilities (a fused kernel on CPU and GPU alike). transformers cannot switch these
modules itself (BLIP's vision attention and ViLT's self-attention are hand-written, not on
its attention interface), so :func:`fuse` swaps the ``forward`` of chosen module instances
for an SDPA version of the same arithmetic. The result equals the eager path up to float
rounding (the summation order differs); the test suite checks outputs and label maps.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def blip_attention(self: Any, hidden_states: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """``BlipAttention.forward`` (vision tower) via SDPA; returns no probabilities."""
    bsz, length, dim = hidden_states.shape
    qkv = self.qkv(hidden_states).reshape(bsz, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
    dropout = self.dropout.p if self.training else 0.0
    context = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], dropout_p=dropout, scale=self.scale)
    return self.projection(context.transpose(1, 2).reshape(bsz, length, dim)), None


def vilt_self_attention(
    self: Any, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, output_attentions: bool = False
) -> tuple[torch.Tensor, None]:
    """``ViltSelfAttention.forward`` via SDPA (additive mask as ViLT builds it); no probabilities."""
    shape = (*hidden_states.shape[:-1], -1, self.attention_head_size)
    query, key, value = (proj(hidden_states).view(shape).transpose(1, 2) for proj in (self.query, self.key, self.value))
    if attention_mask is not None:
        attention_mask = attention_mask.to(query.dtype)
    dropout = self.dropout.p if self.training else 0.0
    context = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=1.0 / math.sqrt(self.attention_head_size)
    )
    context = context.transpose(1, 2).reshape(*hidden_states.shape[:-1], self.all_head_size)
    return context, None


def fuse(modules: Iterable[nn.Module], forward: Callable[..., Any]) -> int:
    """Bind ``forward`` (one of the functions above) to each module; returns how many."""
    count = 0
    for module in modules:
        module.forward = types.MethodType(forward, module)
        count += 1
    return count


def unfuse(modules: Iterable[nn.Module]) -> None:
    """Back to the class's own (eager) ``forward``."""
    for module in modules:
        module.__dict__.pop("forward", None)


def of_type(root: nn.Module, class_name: str) -> list[nn.Module]:
    """Every submodule of ``root`` whose class is named ``class_name`` (no import of the class,
    so the toolkit works across transformers versions that move it)."""
    return [m for m in root.modules() if type(m).__name__ == class_name]
