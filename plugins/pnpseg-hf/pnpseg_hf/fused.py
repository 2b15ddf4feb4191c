"""Fused attention wherever pnpseg captures nothing.

GradCAM needs the attention *probabilities* of one text→image layer, so that layer must run
the eager path. Every other attention only has to produce its output, and PyTorch's
``scaled_dot_product_attention`` computes the same thing without materialising the
probabilities (a fused kernel on CPU and GPU alike). transformers cannot switch these
modules itself (BLIP's attentions, ViLT's and FLAVA's self-attention are hand-written, not on
its attention interface), so :func:`fuse` swaps the ``forward`` of chosen module instances
for an SDPA version of the same arithmetic. Modules that do follow the interface (they read
``self.config._attn_implementation``, as BridgeTower's do) get a private copy of their config
set to ``"sdpa"`` instead (:data:`INTERFACE`): the model-wide setting cannot be used, because
the captured layer shares that config. The result equals the eager path up to float
rounding (the summation order differs); the test suite checks outputs and label maps.

An adapter lists the classes to fuse (:attr:`pnpseg_hf.HFAdapter.fused_attention`); they are
fused once, after loading (:func:`fuse_model`), unless ``PNPSEG_EAGER=1``. Every module whose
probabilities are recorded runs eager for the duration of the recording
(:func:`pnpseg_hf.capture_outputs` and :func:`eager` see to it).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import types
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
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


def bert_self_attention(
    self: Any, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, output_attentions: bool = False
) -> tuple[torch.Tensor, None]:
    """A BERT-style self-attention ``forward(hidden_states, attention_mask, output_attentions)``
    (``ViltSelfAttention``, ``FlavaSelfAttention``) via SDPA, with the additive mask the model
    builds; no probabilities."""
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


def blip_text_attention(
    self: Any,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    encoder_hidden_states: torch.Tensor | None = None,
    encoder_attention_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """``BlipTextSelfAttention.forward`` (self- and cross-attention of BLIP's text encoder)
    via SDPA; no probabilities. No key/value cache: pnpseg never generates text."""
    if kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None:
        raise RuntimeError("the fused BLIP text attention has no key/value cache; run it eager")
    cross = encoder_hidden_states is not None
    mask = encoder_attention_mask if cross else attention_mask
    source = encoder_hidden_states if cross else hidden_states
    head = self.attention_head_size
    query = self.query(hidden_states).view(*hidden_states.shape[:-1], -1, head).transpose(1, 2)
    key = self.key(source).view(*source.shape[:-1], -1, head).transpose(1, 2)
    value = self.value(source).view(*source.shape[:-1], -1, head).transpose(1, 2)
    dropout = self.dropout.p if self.training else 0.0
    context = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=None if mask is None else mask.to(query.dtype),
        dropout_p=dropout,
        scale=1.0 / math.sqrt(head),
    )
    return context.transpose(1, 2).reshape(*hidden_states.shape[:-1], self.all_head_size), None


#: Marker for :func:`fuse`: the module follows transformers' attention interface; give it a
#: private config copy set to ``"sdpa"`` instead of a new ``forward``.
INTERFACE = "interface"

#: The eager attributes of each module fused by config copy (restored by :func:`unfuse`).
_eager_attributes: weakref.WeakKeyDictionary[nn.Module, dict[str, Any]] = weakref.WeakKeyDictionary()


def fuse(modules: Iterable[nn.Module], forward: Callable[..., Any] | str) -> int:
    """Bind ``forward`` (one of the functions above) to each module, or with :data:`INTERFACE`
    switch each module's own config copy to SDPA; returns how many.

    An interface module also gets ``is_causal = False``: the eager path applies the mask it
    is given and nothing else, while SDPA adds a causal mask when given none and the flag is
    set (BridgeTower's image-stream self-attention declares itself causal and gets no mask).
    """
    count = 0
    for module in modules:
        if forward == INTERFACE:
            if module not in _eager_attributes:
                _eager_attributes[module] = {"config": module.config, "is_causal": getattr(module, "is_causal", False)}
            config = copy.copy(_eager_attributes[module]["config"])
            config._attn_implementation = "sdpa"
            module.config, module.is_causal = config, False
        else:
            module.forward = types.MethodType(forward, module)
        count += 1
    return count


def unfuse(modules: Iterable[nn.Module]) -> None:
    """Back to the class's own (eager) ``forward`` and the model's config."""
    for module in modules:
        module.__dict__.pop("forward", None)
        for name, value in _eager_attributes.pop(module, {}).items():
            setattr(module, name, value)


def is_fused(module: nn.Module) -> bool:
    """Whether :func:`fuse` switched ``module`` (and :func:`unfuse` has not switched it back)."""
    return "forward" in module.__dict__ or module in _eager_attributes


def fuse_model(root: nn.Module, classes: Mapping[str, Callable[..., Any] | str]) -> dict[str, int]:
    """Fuse every submodule of ``root`` whose class is named in ``classes`` (name → fused
    forward or :data:`INTERFACE`); returns how many of each. Nothing with ``PNPSEG_EAGER=1``."""
    if eager_requested():
        return {}
    return {name: fuse(of_type(root, name), forward) for name, forward in classes.items()}


def eager_requested() -> bool:
    """``PNPSEG_EAGER=1`` in the environment: load models with eager attention everywhere."""
    return os.environ.get("PNPSEG_EAGER", "").strip().lower() in ("1", "true", "yes")


@contextlib.contextmanager
def eager(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Run ``modules`` eager inside the block (those that were fused are fused again after).

    It switches the modules themselves, so two threads must not run forwards of one model
    object at once (no pnpseg engine does: each worker loads its own model).
    """
    fused = [(m, INTERFACE if m in _eager_attributes else m.forward.__func__) for m in modules if is_fused(m)]
    unfuse(m for m, _ in fused)
    try:
        yield
    finally:
        for module, forward in fused:
            fuse([module], forward)


def of_type(root: nn.Module, class_name: str) -> list[nn.Module]:
    """Every submodule of ``root`` whose class is named ``class_name`` (no import of the class,
    so the toolkit works across transformers versions that move it)."""
    return [m for m in root.modules() if type(m).__name__ == class_name]
