"""Tiny hand-checkable stand-ins used by the core unit tests."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from pnpseg import BaseAdapter, TokenizedText, VLMOutput


def word_tokenize(prompts: Sequence[str], unknown_words: frozenset[str] = frozenset()) -> TokenizedText:
    """[CLS] word ... [SEP], one token per whitespace word, padded; offsets are character spans."""
    offsets, unknown = [], []
    for prompt in prompts:
        words = [(m.start(), m.end()) for m in re.finditer(r"\S+", prompt)]
        offsets.append([(0, 0), *words, (0, 0)])
        unknown.append([False, *(prompt[a:b] in unknown_words for a, b in words), False])
    length = max(map(len, offsets))
    ids = torch.zeros(len(prompts), length, dtype=torch.long)
    mask = torch.zeros(len(prompts), length, dtype=torch.long)
    for b, offs in enumerate(offsets):
        mask[b, : len(offs)] = 1
        ids[b, : len(offs)] = torch.arange(1, len(offs) + 1)
        offsets[b] = offs + [(0, 0)] * (length - len(offs))
        unknown[b] = unknown[b] + [False] * (length - len(unknown[b]))
    return TokenizedText(ids, mask, offsets, unknown)


class LinearAdapter(BaseAdapter):
    """match = Σ A ⊙ V with A = softmax over patches of (pixel value of the patch · token id).

    ∂match/∂A = V exactly, so GradCAM is relu(V) ⊙ A, computable by hand in a test.
    Patch size 1 on a 1-channel-equivalent image: patch p's value is pixels[b, 0].flatten()[p].
    """

    num_layers, num_heads, max_text_length, patch_size = 2, 2, 16, 1
    default_params = {"layer": 1, "head": 1, "image_size": (2, 3), "postprocess": ()}
    device = torch.device("cpu")

    def __init__(self, values: torch.Tensor):
        self.values = values  # (heads, T, P)
        self.calls = 0

    def preprocess(self, images, size):
        return torch.stack([torch.as_tensor(img, dtype=torch.float32) for img in images])

    def tokenize(self, prompts):
        return word_tokenize(prompts)

    def attention(self, pixels: torch.Tensor, text: TokenizedText) -> torch.Tensor:
        patches = pixels[:, 0].flatten(1)  # (B, P)
        ids = text.input_ids.float()  # (B, T)
        logits = ids[:, None, :, None] * patches[:, None, None, :] * torch.tensor([1.0, -1.0])[None, :, None, None]
        return logits.softmax(-1)  # (B, heads, T, P)

    def forward(self, pixels, text, layers):
        self.calls += 1
        attention = self.attention(pixels, text).requires_grad_(True)
        values = self.values[None, :, : attention.shape[2]]
        match = (attention * values).sum((1, 2, 3))
        return VLMOutput(match, [attention for _ in layers], pixels.shape[-2:])
