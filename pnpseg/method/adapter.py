"""The VLM adapter protocol: everything the pipeline needs from a vision-language model.

An adapter wraps one model family (BLIP, BridgeTower, a synthetic test model, ...). The
core never looks inside the model: it asks the adapter to turn images into pixels, prompts
into tokens with character offsets, and (pixels, tokens) into an ITM "match" logit plus the
text→image attention probabilities of the requested layers. docs/adapters.md explains the
contract with a complete example.

Conventions
-----------
* ``layers`` passed to :meth:`VLMAdapter.forward` are **0-based** indices into the model's
  layers that carry text→image attention. Users (CLI, :class:`~pnpseg.SegmentParams`) speak
  1-based, as the paper does; the pipeline converts once.
* Image patches are flattened row-major: patch ``p`` sits at row ``p // grid_w``, column
  ``p % grid_w`` of the patch grid. No image CLS token, no padding columns.
* Returned attention tensors must be *the very tensors the model used* (inside the autograd
  graph), because GradCAM differentiates the match logit with respect to them.
* ``VLMOutput.to_text_image`` may take the layer as a second argument and compose a map
  from several attentions of that layer (BLIP-2's text → query → image).
* Optionally, ``reported_maps(pixels, text)`` gives the text→image map of *every* layer as
  the model's own forward reports its attentions (Hugging Face ``output_attentions``);
  ``pnpseg.testing.check_adapter`` compares ``forward`` with it, layer by layer.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from PIL import Image


@dataclass
class TokenizedText:
    """A batch of tokenized prompts.

    ``offsets[b][t]`` is the ``(start, end)`` character span of token ``t`` in prompt ``b``;
    special and padding tokens have ``(0, 0)``. ``unknown[b][t]`` is True for tokens the
    tokenizer could not represent (e.g. ``[UNK]``), so the core can reject class names made
    only of unknown tokens.
    """

    input_ids: torch.Tensor  # (B, T) long
    attention_mask: torch.Tensor  # (B, T) long, 1 = real token
    offsets: list[list[tuple[int, int]]]
    unknown: list[list[bool]]

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, prompts: Sequence[str]) -> TokenizedText:
        """Prompts through a Hugging Face *fast* tokenizer (any version; duck-typed, so the
        core imports nothing of ``transformers``), padded to the longest, never truncated:
        the core tokenizes over-long prompts on purpose when it plans chunks. Special and
        padding tokens get ``(0, 0)``; ``unknown`` flags the tokenizer's unknown token."""
        enc = tokenizer(
            list(prompts),
            padding="longest",
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            return_token_type_ids=False,
            return_tensors="pt",
            verbose=False,
        )
        ids = enc["input_ids"]
        special = enc["special_tokens_mask"].bool() | (enc["attention_mask"] == 0)
        offsets = [
            [(0, 0) if sp else (int(s), int(e)) for (s, e), sp in zip(row, sp_row)]
            for row, sp_row in zip(enc["offset_mapping"].tolist(), special.tolist())
        ]
        return cls(ids, enc["attention_mask"], offsets, (ids == tokenizer.unk_token_id).tolist())


def _identity(attention: torch.Tensor) -> torch.Tensor:
    return attention


#: ``to_text_image(tensor)`` (a slice, the same for every layer) or
#: ``to_text_image(tensor, layer)`` (``layer`` 0-based: a map that depends on the layer).
TextImageMap = Callable[[torch.Tensor], torch.Tensor] | Callable[[torch.Tensor, int], torch.Tensor]


@dataclass
class VLMOutput:
    """What one forward pass returns.

    ``match_logit`` is the ITM "match" logit per sample (before any softmax), shape (B,).
    ``attentions`` holds one attention-probability tensor per requested layer, in request
    order, exactly as the model used it (B, heads, queries, keys), so that the gradient of
    the match logit with respect to it exists. ``to_text_image`` maps such a tensor (or its
    gradient) to the text→image block (B, heads, text tokens, grid_h * grid_w): rows aligned
    with the ``TokenizedText`` tokens, columns the image patches in row-major order. For a
    cross-attention whose keys are ``[image CLS; patches]`` it drops column 0; for a
    single-stream model it picks the text rows and patch columns of the joint sequence.

    A ``to_text_image`` with a second parameter is called with the 0-based layer the
    tensor belongs to. It may then *compose* (docs/adapters.md, "Composed maps"): a linear
    map of the tensor, the same for an attention and its gradient, whose coefficients are
    other attention probabilities of the same forward and layer, detached (BLIP-2: text →
    query self-attention times query → image cross-attention). Call :meth:`text_image`.
    """

    match_logit: torch.Tensor
    attentions: list[torch.Tensor]
    grid: tuple[int, int]
    to_text_image: TextImageMap = field(default=_identity)

    def text_image(self, tensor: torch.Tensor, layer: int) -> torch.Tensor:
        """The text→image block of ``tensor``, an attention of 0-based ``layer`` or its gradient."""
        if _takes_layer(self.to_text_image):
            return self.to_text_image(tensor, layer)  # type: ignore[call-arg]
        return self.to_text_image(tensor)  # type: ignore[call-arg]


def _takes_layer(function: Callable[..., Any]) -> bool:
    """Whether ``function`` accepts a second positional argument (the layer)."""
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: a slice
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in parameters)


@runtime_checkable
class VLMAdapter(Protocol):
    """Structural type every adapter satisfies (inherit :class:`BaseAdapter` for defaults)."""

    #: Number of layers that carry text→image attention, and heads per such layer.
    num_layers: int
    num_heads: int
    #: Longest tokenized prompt (special tokens included) the text encoder accepts.
    max_text_length: int
    #: Side of one square image patch in input pixels; input sizes are multiples of it.
    patch_size: int
    #: Parameters that work for this model (1-based layer/head, threshold, image size...),
    #: overriding :class:`~pnpseg.SegmentParams` defaults.
    default_params: Mapping[str, Any]
    device: torch.device

    def preprocess(self, images: Sequence[Image.Image], size: tuple[int, int]) -> torch.Tensor:
        """RGB PIL images → normalised model input (B, 3, size[0], size[1]) on ``device``."""
        ...

    def tokenize(self, prompts: Sequence[str]) -> TokenizedText:
        """Tokenize and pad prompts; must work before model weights are loaded."""
        ...

    def forward(self, pixels: torch.Tensor, text: TokenizedText, layers: Sequence[int]) -> VLMOutput:
        """Run the ITM forward pass and return the match logit and requested attentions."""
        ...

    def mask_patches(self, pixels: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        """Return pixels with the patches where ``drop`` (B, grid_h*grid_w bool) is True hidden."""
        ...


class BaseAdapter:
    """Convenience base: the default patch masking of the paper, and ``grid_for``."""

    patch_size: int
    default_params: Mapping[str, Any] = {}

    def grid_for(self, size: tuple[int, int]) -> tuple[int, int]:
        return size[0] // self.patch_size, size[1] // self.patch_size

    def mask_patches(self, pixels: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        return zero_patches(pixels, drop, self.patch_size)


def zero_patches(pixels: torch.Tensor, drop: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Set dropped patches to 0 in *normalised* input, i.e. to the dataset mean colour.

    This is the paper's (and the reference code's) Saliency DropOut masking, done as one
    tensor operation instead of a Python loop over patches.
    """
    b, _, h, w = pixels.shape
    grid_h, grid_w = h // patch_size, w // patch_size
    keep = (~drop).to(pixels.dtype).view(b, 1, grid_h, grid_w)
    keep = keep.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)
    return pixels * keep
