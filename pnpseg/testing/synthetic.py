"""A tiny, weight-free "VLM" whose right answer is known, for testing the whole pipeline.

The model sees only each patch's mean colour. Its text tokens are words; the colour words of
:data:`~pnpseg.testing.images.COLOURS` are the classes. It has 4 layers × 4 heads of
text→image attention:

* the planted head (layer 3, head 2, 1-based) attends from a colour token to the patches of
  that colour: ``A = softmax_p(BETA · a(c, p))`` with affinity
  ``a(c, p) = exp(-‖mean_p − rgb_c‖² / TAU)``, and carries value ``a(c, p)``;
* every other head is noise: a softmax over a fixed random function of patch colour and
  position, *the same for every token*, with a fixed random positive value field, so its
  maps (and GradCAM) say nothing about which class is where.

The match logit is ``s = LOGIT_BIAS + Σ_{l,h,t,p} A[l,h,t,p] · V[l,h,t,p]``, computed from the very
attention tensors that :meth:`SyntheticAdapter.forward` returns, so ``∂s/∂A`` exists and
GradCAM ``relu(∂s/∂A) ⊙ A`` is informative exactly in the planted head. Pixels are
normalised with mean 0.5 and std 0.5, so a dropped (zeroed) patch is mid grey, which is
equally far (‖·‖² = 0.75) from every colour, white included: dropping reads as "no class".
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from pnpseg.method.adapter import BaseAdapter, TokenizedText, VLMOutput
from pnpseg.testing.images import COLOURS

#: Colour-distance temperature: a grey or dark patch (‖·‖² ≥ ~0.7) gets affinity ≤ 1e-3,
#: a half-covered border patch (‖·‖² ≈ 0.19) still about 0.15, so borders are graded.
TAU = 0.1
#: Sharpness of the planted head: a pure-colour patch outweighs a background one e^5 ≈ 150×,
#: so a class of a dozen patches takes > 80 % of the attention but borders stay visible.
BETA = 5.0
#: The planted head, 0-based (layer 3, head 2 in the 1-based parameters).
TRUE_LAYER, TRUE_HEAD = 2, 1
#: Scale of the noise heads' value field: small, so the logit is dominated by the classes.
NOISE_VALUE = 0.005
SEED = 20240611
#: Constant added to the match logit (no effect on GradCAM): it puts an absent class's
#: ``sigmoid(logit)`` below 0.5 (≈ 0.41) and a present one's above (≳ 0.55), as a real ITM
#: head's match probability would be, so the ``itm`` class source works at its defaults.
LOGIT_BIAS = -0.8

MEAN = STD = 0.5
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
PAD_ID, UNK_ID, CLS_ID, SEP_ID = range(4)
PROMPT_WORDS = [
    "a",
    "an",
    "the",
    "picture",
    "photo",
    "image",
    "of",
    "and",
    "with",
    "in",
    "on",
    "this",
    "is",
    "there",
    ".",
    ",",
]
VOCAB: dict[str, int] = {w: i for i, w in enumerate(SPECIAL + list(COLOURS) + PROMPT_WORDS)}
_WORD = re.compile(r"\w+|[^\w\s]")


class SyntheticAdapter(BaseAdapter):
    """The synthetic VLM: colour words attend to patches of their colour (see module doc)."""

    num_layers = 4
    num_heads = 4
    patch_size = 16
    #: Only what differs from SegmentParams' defaults.
    default_params: Mapping[str, Any] = {
        "layer": TRUE_LAYER + 1,
        "head": TRUE_HEAD + 1,
        "blur_sigma": 0.02,
        "image_size": (224, 224),
    }

    #: ``model_type`` of a ``config.json`` that ``Segmenter.from_pretrained(folder)`` maps to this adapter.
    model_type = "pnpseg-synthetic"

    def __init__(self, model: str | None = None, device: str | torch.device = "cpu", max_text_length: int = 64) -> None:
        # ``model`` is accepted (and ignored) so every adapter factory has one signature.
        if max_text_length < 3:
            raise ValueError("max_text_length must leave room for [CLS], a word and [SEP]")
        self.device = torch.device(device)
        self.max_text_length = max_text_length
        self._protos = torch.tensor(list(COLOURS.values()), dtype=torch.float32) / 255.0
        # Like a real model's weights, a leaf that requires grad: the attentions are then in
        # an autograd graph even when the pixels do not require grad.
        self._gain = torch.ones((), device=self.device, requires_grad=True)
        token_colour = torch.full((len(VOCAB),), -1, dtype=torch.long)
        token_colour[[VOCAB[c] for c in COLOURS]] = torch.arange(len(COLOURS))
        self._token_colour = token_colour
        # Noise heads: fixed random fields, from a private generator (global RNG untouched).
        g = torch.Generator().manual_seed(SEED)
        shape = (self.num_layers, self.num_heads)
        self._noise_colour = torch.randn(*shape, 3, generator=g)  # attention logit per unit of colour
        self._attn_field = _random_field(shape, g, amplitude=2.0)
        self._value_field = _random_field(shape, g, amplitude=1.0)
        self._protos, self._token_colour, self._noise_colour = (
            t.to(self.device) for t in (self._protos, self._token_colour, self._noise_colour)
        )

    # -- protocol -------------------------------------------------------------------------
    def preprocess(self, images: Sequence[Image.Image], size: tuple[int, int]) -> torch.Tensor:
        """Resize to ``size`` = (height, width), scale to [0, 1], normalise to [-1, 1]."""
        self._check_size(size)
        h, w = size
        arrays = [np.asarray(im.convert("RGB").resize((w, h), Image.Resampling.BILINEAR), np.float32) for im in images]
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 255.0
        return ((pixels - MEAN) / STD).to(self.device)

    def tokenize(self, prompts: Sequence[str]) -> TokenizedText:
        """Lower-cased regex words; unknown words map to [UNK]. Never truncates: a prompt
        longer than ``max_text_length`` is refused by :meth:`forward`, so chunking bugs in
        the caller surface instead of silently losing classes."""
        ids, offsets, unknown = [], [], []
        for prompt in prompts:
            row_ids, row_off, row_unk = [CLS_ID], [(0, 0)], [False]
            for m in _WORD.finditer(prompt):
                token_id = VOCAB.get(m.group().lower(), UNK_ID)
                row_ids.append(token_id)
                row_off.append((m.start(), m.end()))
                row_unk.append(token_id == UNK_ID)
            row_ids.append(SEP_ID)
            row_off.append((0, 0))
            row_unk.append(False)
            ids.append(row_ids)
            offsets.append(row_off)
            unknown.append(row_unk)
        length = max((len(r) for r in ids), default=0)
        input_ids = torch.full((len(ids), length), PAD_ID, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), length), dtype=torch.long)
        for b, row in enumerate(ids):
            input_ids[b, : len(row)] = torch.tensor(row)
            attention_mask[b, : len(row)] = 1
            pad = length - len(row)
            offsets[b] += [(0, 0)] * pad
            unknown[b] += [False] * pad
        return TokenizedText(input_ids, attention_mask, offsets, unknown)

    def forward(self, pixels: torch.Tensor, text: TokenizedText, layers: Sequence[int]) -> VLMOutput:
        """Match logit (B,) and attentions (B, 4, T, grid_h·grid_w) of the requested layers."""
        bad = [l for l in layers if not 0 <= l < self.num_layers]
        if bad:
            raise IndexError(f"layers {bad} out of range 0..{self.num_layers - 1}")
        logit, attentions, grid = self._run(pixels, text)
        return VLMOutput(match_logit=logit, attentions=[attentions[l] for l in layers], grid=grid)

    def reported_maps(self, pixels: torch.Tensor, text: TokenizedText) -> list[torch.Tensor]:
        """The maps of every layer as the model itself computes them (the conformance kit's
        "layer numbering" reference): keys are patches only, so a map is the attention."""
        return [a.detach() for a in self._run(pixels, text)[1]]

    # -- the model --------------------------------------------------------------------------
    def _run(
        self, pixels: torch.Tensor, text: TokenizedText
    ) -> tuple[torch.Tensor, list[torch.Tensor], tuple[int, int]]:
        """Match logit (B,), the attention of every layer, and the grid."""
        b, _, h, w = pixels.shape
        self._check_size((h, w))
        ids = text.input_ids.to(self.device)
        if b == 1 and ids.shape[0] > 1:  # one image against K prompts, as real adapters allow
            b = ids.shape[0]
            pixels = pixels.expand(b, -1, -1, -1)
        if ids.shape[0] != b:
            raise ValueError(f"{b} images but {ids.shape[0]} prompts")
        if ids.shape[1] > self.max_text_length:
            raise ValueError(f"prompt of {ids.shape[1]} tokens exceeds max_text_length {self.max_text_length}")
        grid = self.grid_for((h, w))
        t = ids.shape[1]
        mask = text.attention_mask.to(self.device, pixels.dtype)[:, :, None]  # (B, T, 1)

        # Per-patch mean colour in [0, 1], patches row-major: (B, P, 3).
        rgb = (pixels * STD + MEAN) * self._gain
        means = torch.nn.functional.avg_pool2d(rgb, self.patch_size).flatten(2).transpose(1, 2)

        # Planted head: affinity of each colour token to each patch; other tokens get 0
        # (uniform attention, zero value).
        d2 = ((means[:, None] - self._protos[None, :, None]) ** 2).sum(-1)  # (B, C, P)
        affinity = torch.exp(-d2 / TAU)
        colour = self._token_colour[ids]  # (B, T), -1 = not a colour word
        index = colour.clamp(min=0)[:, :, None].expand(-1, -1, affinity.shape[-1])
        token_aff = affinity.gather(1, index) * (colour >= 0)[:, :, None]  # (B, T, P)
        true_value = token_aff * mask

        # Noise heads: same map for every token, a function of patch colour and position.
        attn_field = _eval_field(self._attn_field, grid).to(self.device, pixels.dtype)  # (L,H,P)
        value_field = _eval_field(self._value_field, grid).to(self.device, pixels.dtype)
        noise_logits = torch.einsum("bpc,lhc->blhp", means - 0.5, self._noise_colour) + attn_field
        noise_value = NOISE_VALUE * (1.0 + 0.9 * torch.tanh(value_field))  # positive, (L, H, P)

        attentions, logit = [], pixels.new_full((b,), LOGIT_BIAS)
        for layer in range(self.num_layers):
            scores, values = [], []
            for head in range(self.num_heads):
                if (layer, head) == (TRUE_LAYER, TRUE_HEAD):
                    scores.append(BETA * token_aff)
                    values.append(true_value)
                else:
                    scores.append(noise_logits[:, layer, head, None, :].expand(-1, t, -1))
                    values.append(noise_value[layer, head].expand(b, t, -1) * mask)
            used, returned = self._attend(torch.stack(scores, dim=1))  # (B, heads, T, P)
            logit = logit + (used * torch.stack(values, dim=1)).sum(dim=(1, 2, 3))
            attentions.append(returned)
        return logit, attentions, grid

    def _attend(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the probabilities the logit uses, the tensor ``forward`` returns): the softmax of
        ``scores`` over the patches, both times. The conformance tests' deliberately broken
        adapters override it (scores returned, softmax over the tokens)."""
        probs = torch.softmax(scores, dim=-1)
        return probs, probs

    # -- helpers --------------------------------------------------------------------------
    def _check_size(self, size: tuple[int, int]) -> None:
        if size[0] % self.patch_size or size[1] % self.patch_size or min(size) < self.patch_size:
            raise ValueError(f"image size {size} must be positive multiples of {self.patch_size}")


def _random_field(shape: tuple[int, int], g: torch.Generator, amplitude: float, components: int = 3) -> torch.Tensor:
    """Parameters of a smooth random field per (layer, head): rows (fy, fx, phase, amp)."""
    freq = (torch.rand(*shape, components, 2, generator=g) * 2 - 1) * 2.0  # cycles per image
    phase = torch.rand(*shape, components, 1, generator=g) * 2 * math.pi
    amp = torch.rand(*shape, components, 1, generator=g) * amplitude
    return torch.cat([freq, phase, amp], dim=-1)  # (L, H, K, 4)


def _eval_field(params: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Evaluate the field at patch centres in image-relative coordinates: (L, H, P)."""
    gh, gw = grid
    y = ((torch.arange(gh) + 0.5) / gh)[:, None].expand(gh, gw).reshape(-1)
    x = ((torch.arange(gw) + 0.5) / gw)[None, :].expand(gh, gw).reshape(-1)
    fy, fx, phase, amp = (params[..., i, None] for i in range(4))  # (L, H, K, 1)
    waves = amp * torch.sin(2 * math.pi * (fy * y + fx * x) + phase)  # (L, H, K, P)
    return waves.sum(dim=2)
