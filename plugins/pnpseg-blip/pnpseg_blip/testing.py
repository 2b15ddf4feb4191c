"""A tiny real BLIP whose one cross-attention head is planted to find colours.

Random weights give near-uniform attention, so their GradCAM maps are near-ties and say
nothing about whether a change (bf16, a fused kernel) changes the answer.
:func:`build_planted_blip` saves a tiny ``BlipForImageTextRetrieval`` (real classes, real
processor, loaded by path like any checkpoint) in which one head of text layer 1 attends
from each colour word of :data:`pnpseg.testing.COLOURS` to the patches of that colour in
:func:`pnpseg.testing.make_scene` scenes, so the pipeline's labels can be scored against
the scenes' true labels::

    folder, layer, head = build_planted_blip(tmp_path / "planted")
    seg = Segmenter.from_pretrained(str(folder), adapter="blip", layer=layer, head=head)

How the head is planted (ridge least squares on the real fp32 model, in seconds):

- the vision tower's residual branches and position embeddings are scaled down, so every
  patch's final feature still says what colour the patch is;
- keys: a linear read-out of each patch's mean colour (and of "this is the image [CLS]") from
  its feature; the query of colour c then scores a patch by ``±r ± g ± b`` (the signs of c's
  corner of the RGB cube, a linear function that is largest at that corner), and scores the
  image [CLS] halfway between c's own patches and the best other colour, so once c's patches
  are dropped its attention goes to [CLS], not to another colour's blob;
- queries: the hidden states entering the cross-attention at the colour tokens, over many
  prompts, are mapped to those query vectors;
- values: weights 0 and bias ``u``, so ``∂s/∂A[t, p] = g_t·u`` is the same for every patch;
  ``u`` is the mean direction of ``g_t = ∂s/∂context`` over the colour tokens, and the
  build fails unless ``g_t·u > 0`` at every one of them (GradCAM keeps positive parts).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pnpseg import build_prompt
from pnpseg.testing import COLOURS, make_scene
from pnpseg_hf.testing import BERT_SPECIALS, WORDS, save_tiny, wordpiece_vocab

#: Special tokens of BLIP's BERT tokenizer: the BERT five, then [DEC] (the captioning BOS,
#: ``text_config.bos_token_id``) and [ENC] (put at position 0 for image-text matching).
BLIP_SPECIALS = [*BERT_SPECIALS, "[DEC]", "[ENC]"]

#: The planted head: text layer 1, head 2 (1-based, as ``Segmenter(layer=..., head=...)``).
PLANTED_LAYER, PLANTED_HEAD = 1, 2
#: Model input side the planted head is fitted at (any multiple of 16 works).
PLANTED_SIZE = 224
#: Query scale: score margins of ~0.4 colour units become attention logit gaps of ~8.
BETA = 80.0
#: The largest pull of a blob's colour towards mid-grey in ``make_scene``.
PULL = 0.12
#: Relative ridge strength of the key and query fits.
RIDGE = 1e-3


def tiny_blip_parts(
    *,
    hidden: int,
    vision_layers: int,
    heads: int,
    image_size: int,
    words: Sequence[str] = WORDS,
    text_layers: int = 3,
) -> tuple[Any, Any]:
    """A small ``BlipConfig`` (ITM architecture) and its ``BlipProcessor`` with a generated
    WordPiece vocabulary of ``words``: patch 16, MLPs twice ``hidden`` wide, ``text_layers``
    text layers with cross-attention in each, 64 text positions, ``heads`` heads in both towers."""
    import transformers as hf

    vocab = wordpiece_vocab(BLIP_SPECIALS, words)
    tokenizer = hf.BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=64)
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    config = hf.BlipConfig(
        vision_config=dict(
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=vision_layers,
            num_attention_heads=heads,
            image_size=image_size,
            patch_size=16,
            initializer_range=0.02,
        ),
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=text_layers,
            num_attention_heads=heads,
            max_position_embeddings=64,
            pad_token_id=vocab["[PAD]"],
            bos_token_id=vocab["[DEC]"],
            sep_token_id=vocab["[SEP]"],
            is_decoder=True,
        ),
        image_text_hidden_size=16,
        projection_dim=16,
    )
    config.architectures = ["BlipForImageTextRetrieval"]
    image_processor = hf.BlipImageProcessor(size={"height": image_size, "width": image_size})
    return config, hf.BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_planted_blip(folder: str | os.PathLike[str], seed: int = 0) -> tuple[Path, int, int]:
    """Save the planted tiny BLIP to ``folder``; returns ``(folder, layer, head)``, 1-based.

    Vision: 224 px, patch 16, hidden 64, 4 layers × 4 heads. Text: hidden 64, 3 layers × 4
    heads, every colour word one token. Takes a few seconds on a CPU.
    """
    import transformers as hf

    from pnpseg_blip.adapter import BlipAdapter

    config, processor = tiny_blip_parts(
        hidden=64, vision_layers=4, heads=4, image_size=PLANTED_SIZE, words=(*WORDS, *COLOURS)
    )
    path = save_tiny(folder, lambda: hf.BlipForImageTextRetrieval(config), processor, _quiet_vision, seed)
    adapter = BlipAdapter(model=str(path))
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        _plant(adapter, rng)
    adapter.model.save_pretrained(path)
    return path, PLANTED_LAYER, PLANTED_HEAD


def _quiet_vision(model: Any) -> None:
    """Scale the vision tower's residual branches and position embeddings down, and give the
    patch embedding a bias: each patch's final feature is then mostly its own colour."""
    vision = model.vision_model
    vision.embeddings.position_embedding.mul_(0.1)
    vision.embeddings.patch_embedding.bias.normal_(0.0, 0.5)
    for layer in vision.encoder.layers:
        layer.self_attn.projection.weight.mul_(0.1)
        layer.mlp.fc2.weight.mul_(0.1)


def _plant(adapter: Any, rng: np.random.Generator) -> None:
    """Fit the planted head's keys, queries and values on the fp32 model (see the module doc)."""
    model = adapter.model
    attention = model.text_encoder.encoder.layer[PLANTED_LAYER - 1].crossattention.self
    width = attention.attention_head_size
    rows = slice((PLANTED_HEAD - 1) * width, PLANTED_HEAD * width)
    names = list(COLOURS)
    scenes = [_scene(rng, names) for _ in range(16)]
    pixels = adapter.preprocess([image for image, _ in scenes], (PLANTED_SIZE, PLANTED_SIZE))

    # Keys: read (r, g, b, is-[CLS]) out of the vision features, of whole and dropped-out scenes.
    drop = torch.from_numpy(rng.random((len(scenes), (PLANTED_SIZE // 16) ** 2)) < 0.3)
    both = torch.cat([pixels, adapter.mask_patches(pixels, drop)])
    features = model.vision_model(pixel_values=both).last_hidden_state  # (B, 1 + P, D)
    colours = torch.cat([torch.zeros(len(both), 1, 3), _patch_colours(both, adapter)], 1)
    is_cls = torch.zeros(*colours.shape[:2], 1)
    is_cls[:, 0] = 1.0
    readout = _ridge(features.flatten(0, 1), torch.cat([colours, is_cls], 2).flatten(0, 1))  # (D + 1, 4)
    for part in (attention.key, attention.query, attention.value):
        part.weight[rows] = 0.0
        part.bias[rows] = 0.0
    attention.key.weight[rows.start : rows.start + 4] = readout[:-1].T
    attention.key.bias[rows.start : rows.start + 4] = readout[-1]

    # Queries: the hidden states entering the cross-attention at each colour token, over
    # prompts of 1–5 colours in any order, → that colour's query vector.
    targets = torch.zeros(len(names), width)
    for c, name in enumerate(names):
        signs = torch.tensor([1.0 if v > 127 else -1.0 for v in COLOURS[name]])
        targets[c, :3] = BETA * signs
        targets[c, 3] = BETA * _sink(signs)
    prompts = [[str(n) for n in rng.permutation(names)[: rng.integers(1, 6)]] for _ in range(160)]
    embeds = model.vision_model(pixel_values=pixels[:1]).last_hidden_state
    with _recording(attention) as seen:
        _, tokens = _text_pass(adapter, embeds, prompts)
    hidden = torch.cat([seen["hidden"][i, index] for i, index in enumerate(tokens)])
    labels = [names.index(n) for chosen in prompts for n in chosen]
    fitted = _ridge(hidden, targets[labels])
    attention.query.weight[rows] = fitted[:-1].T
    attention.query.bias[rows] = fitted[-1]

    # Values: weights 0, bias u along the mean direction of ∂s/∂context at the colour tokens
    # (twice: u itself changes the forward a little).
    embeds = model.vision_model(pixel_values=pixels).last_hidden_state
    prompts = [chosen for _, chosen in scenes]
    for _ in range(2):
        grads = _context_grads(adapter, embeds, prompts, attention)[..., rows]
        u = torch.nn.functional.normalize(grads, dim=1).mean(0)
        attention.value.bias[rows] = u / u.norm()
    signs = _context_grads(adapter, embeds, prompts, attention)[..., rows] @ attention.value.bias[rows]
    if not bool((signs > 0).all()):  # GradCAM would zero those maps
        raise RuntimeError(f"planting failed: ∂s/∂A < 0 at {int((signs <= 0).sum())} colour tokens")


def _scene(rng: np.random.Generator, names: Sequence[str]) -> tuple[Any, list[str]]:
    """A random scene of 2–4 colours, and its colours."""
    chosen = [str(n) for n in rng.permutation(names)[: rng.integers(2, 5)]]
    height, width = (int(v) for v in rng.integers(160, 400, size=2))
    return make_scene(height, width, chosen, seed=int(rng.integers(1 << 30)))[0], chosen


def _patch_colours(pixels: torch.Tensor, adapter: Any) -> torch.Tensor:
    """(B, P, 3) mean colour in 0–1 of each 16-pixel patch of normalised ``pixels`` (B, 3, H, W)."""
    rgb = pixels * adapter.std + adapter.mean
    return torch.nn.functional.avg_pool2d(rgb, 16).flatten(2).transpose(1, 2)


def _sink(signs: torch.Tensor) -> float:
    """Halfway between the worst own-colour score (a blob pulled towards grey) and the best
    score of anything else (another corner, a grey, the mean colour of a dropped patch)."""
    corners = torch.tensor(list(COLOURS.values()), dtype=torch.float32) / 255
    own = corners[((corners > 0.5).float() * 2 - 1).eq(signs).all(1)][0]
    worst_own = float((own + (0.5 - own) * PULL) @ signs)
    others = [c for c in corners if not torch.equal(c, own)]
    others += [torch.full((3,), float(g)) for g in np.linspace(0.0, 0.5, 11)]
    best_other = max(float(c @ signs) for c in others)
    return (worst_own + best_other) / 2


@contextmanager
def _recording(module: torch.nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Record the input hidden states and the output context of ``module``."""
    seen: dict[str, torch.Tensor] = {}

    def before(_module: Any, args: tuple, kwargs: dict) -> None:
        seen["hidden"] = args[0] if args else kwargs["hidden_states"]

    def after(_module: Any, _args: Any, output: Any) -> None:
        context = output[0]
        if context.requires_grad:
            context.retain_grad()
        seen["context"] = context

    handles = [module.register_forward_pre_hook(before, with_kwargs=True), module.register_forward_hook(after)]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def _text_pass(
    adapter: Any, embeds: torch.Tensor, prompts: Sequence[Sequence[str]]
) -> tuple[torch.Tensor, list[list[int]]]:
    """The match logits of one prompt per colour list (``embeds`` broadcast if it is one
    image), and the index of each colour's token in each prompt."""
    built = [build_prompt(chosen) for chosen in prompts]
    text = adapter.tokenize([prompt for prompt, _ in built])
    tokens = [
        [next(t for t, (a, b) in enumerate(offsets) if b > a and a == start) for start, _ in spans]
        for offsets, (_, spans) in zip(text.offsets, built)
    ]
    model = adapter.model
    hidden = model.text_encoder(
        input_ids=text.input_ids,
        attention_mask=text.attention_mask,
        encoder_hidden_states=embeds.expand(len(prompts), -1, -1),
        return_dict=True,
    ).last_hidden_state
    return model.itm_head(hidden[:, 0, :])[:, 1], tokens


def _context_grads(
    adapter: Any, embeds: torch.Tensor, prompts: Sequence[Sequence[str]], attention: torch.nn.Module
) -> torch.Tensor:
    """∂ match logit / ∂ context of ``attention`` at every colour token: (tokens, hidden)."""
    with torch.enable_grad(), _recording(attention) as seen:
        logit, tokens = _text_pass(adapter, embeds.detach().requires_grad_(True), prompts)
        logit.sum().backward()
    grad = seen["context"].grad
    assert grad is not None
    return torch.cat([grad[i, index] for i, index in enumerate(tokens)])


def _ridge(x: torch.Tensor, y: torch.Tensor, strength: float = RIDGE) -> torch.Tensor:
    """Ridge regression ``x @ w + b ≈ y``; returns ``w`` with ``b`` as its last row.

    The ridge keeps the weights small: plain least squares reads the few colours or words
    out of tiny within-class variations with weights of 10⁴–10⁶, which bf16 cannot carry.
    """
    x, y = x.double(), y.double()
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc = x - x_mean
    gram = xc.T @ xc
    gram += strength * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
    w = torch.linalg.solve(gram, xc.T @ (y - y_mean))
    return torch.cat([w, (y_mean - x_mean @ w)[None]]).float()
