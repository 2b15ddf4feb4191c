"""A toy VLM and its pnpseg adapter: everything a real adapter does, in one page.

The model is a patch embedding, a word embedding, one text→image cross-attention layer and
an image-text-matching (ITM) head, randomly initialised. A real adapter loads a checkpoint
in ``__init__`` (``from_pretrained(model)``) instead; the rest has the same shape.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torch import nn

from pnpseg import BaseAdapter, TokenizedText, VLMOutput


class ToyVLM(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 4, patch: int = 16, vocab: int = 1000):
        super().__init__()
        self.heads = heads
        self.patches = nn.Conv2d(3, dim, patch, stride=patch)
        self.words = nn.Embedding(vocab, dim)
        self.query, self.key, self.value = (nn.Linear(dim, dim) for _ in range(3))
        self.itm = nn.Linear(dim, 2)

    def attention(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Text tokens (queries) attend to image patches (keys): (B, heads, T, P) probabilities."""
        b, t, d = text.shape
        q = self.query(text).view(b, t, self.heads, -1).transpose(1, 2)
        k = self.key(image).view(b, image.shape[1], self.heads, -1).transpose(1, 2)
        return (q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5).softmax(-1)


class ToyAdapter(BaseAdapter):
    # What the pipeline needs to know about the model (see docs/adapters.md).
    num_layers, num_heads, max_text_length, patch_size = 1, 4, 32, 16
    default_params = {"layer": 1, "head": 1, "image_size": (224, 224)}

    def __init__(self, model: str | None = None, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        torch.manual_seed(0)
        # Frozen weights: GradCAM needs the gradient w.r.t. attention only, never parameters.
        self.model = ToyVLM().to(self.device).eval().requires_grad_(False)

    def preprocess(self, images, size):
        """RGB PIL images → normalised (B, 3, H, W) at exactly size = (H, W)."""
        arrays = [np.asarray(im.resize(size[::-1]), dtype=np.float32) for im in images]
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        return ((pixels / 255 - 0.5) / 0.5).to(self.device)

    def tokenize(self, prompts):
        """[CLS] word ... [SEP] with each token's character span: the core maps classes by it."""
        words = [[(m.start(), m.end()) for m in re.finditer(r"\w+", p)] for p in prompts]
        length = 2 + max(map(len, words))
        ids = torch.zeros(len(prompts), length, dtype=torch.long)
        mask = torch.zeros_like(ids)
        offsets = []
        for b, (prompt, spans) in enumerate(zip(prompts, words)):
            ids[b, 1 : 1 + len(spans)] = torch.tensor([sum(map(ord, prompt[s:e])) % 997 + 2 for s, e in spans])
            mask[b, : 2 + len(spans)] = 1
            offsets.append([(0, 0), *spans] + [(0, 0)] * (length - 1 - len(spans)))  # specials: (0, 0)
        unknown = [[False] * length for _ in prompts]  # this tokenizer has no [UNK]
        return TokenizedText(ids.to(self.device), mask.to(self.device), offsets, unknown)

    def forward(self, pixels, text, layers):
        """ITM pass returning the match logit and the attention tensors GradCAM differentiates."""
        with torch.no_grad():  # no backward through the vision encoder
            image = self.model.patches(pixels)  # (B, dim, gh, gw)
        grid = tuple(image.shape[-2:])
        image = image.flatten(2).transpose(1, 2).requires_grad_(True)  # the graph starts here
        if image.shape[0] == 1 < text.input_ids.shape[0]:  # one image against K prompts
            image = image.expand(text.input_ids.shape[0], -1, -1)
        words = self.model.words(text.input_ids)
        probs = self.model.attention(words, image)  # used below as is: in the graph
        b, h, t, _ = probs.shape
        values = self.model.value(image).view(b, -1, h, words.shape[-1] // h).transpose(1, 2)
        context = (probs @ values).transpose(1, 2).reshape(b, t, -1)
        real = text.attention_mask.to(context)[:, :, None]  # mean over the real tokens: each class
        pooled = (context * real).sum(1) / real.sum(1)  # token then reaches the match (and has a map)
        match = self.model.itm(pooled)[:, 1]  # column 1 of a 2-way ITM head = "match"
        return VLMOutput(match, [probs for _ in layers], grid)  # keys are patches only
