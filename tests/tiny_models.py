"""Tiny randomly initialised Hugging Face models, saved to a folder, for adapter tests.

Real weights cannot be downloaded here, so the adapters are exercised on the real model
classes (BLIP, BridgeTower, ViLT) with small configs and real processors, saved with
``save_pretrained`` so the adapters load them by path exactly as they would load a
downloaded checkpoint: shapes, hooks, gradients and loading paths are all genuine. Each
builder takes well under a second.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from pnpseg_blip.testing import tiny_blip_parts
from pnpseg_hf.testing import BERT_SPECIALS, byte_level_vocab, save_tiny, wordpiece_vocab

#: The tiny BridgeTower's text limit: RoBERTa positions start at ``pad_token_id + 1`` = 2,
#: so ``max_position_embeddings`` = 26 leaves room for 24 tokens (the real model: 514 → 512).
TINY_BRIDGETOWER_TEXT_LIMIT = 24


def build_tiny_blip(folder: Path) -> Path:
    """Save a tiny ``BlipForImageTextRetrieval`` + ``BlipProcessor`` to ``folder``.

    Vision: 64 px, patch 16, hidden 32, 2 layers × 2 heads. Text: hidden 32, 3 layers × 2
    heads (cross-attention in every layer), 64 positions.
    """
    import transformers as hf

    config, processor = tiny_blip_parts(hidden=32, vision_layers=2, heads=2, image_size=64)

    def sharpen(model: Any) -> None:
        # Random init gives near-uniform attention and position-blind features; sharpen
        # both so that wrong patch order or sliced position embeddings show in the maps.
        model.vision_model.embeddings.position_embedding.mul_(50.0)
        for layer in model.text_encoder.encoder.layer:
            layer.crossattention.self.query.weight.mul_(4.0)
            layer.crossattention.self.key.weight.mul_(4.0)

    return save_tiny(folder, lambda: hf.BlipForImageTextRetrieval(config), processor, sharpen)


def build_tiny_bridgetower(folder: Path) -> Path:
    """Save a tiny ``BridgeTowerForImageAndTextRetrieval`` + ``BridgeTowerProcessor``.

    Vision: CLIP-style tower, hidden 64 (= 1 head: the tower uses ``hidden // 64`` heads),
    3 layers, 32 px, patch 16. Text: RoBERTa, hidden 32, 3 layers, 26 positions (24 tokens).
    Cross-modal: 3 layers whose attention has the text config's 8 heads, so the adapter's
    default layer 2, head 8 exist and are not the last layer (whose class-token rows get no
    gradient: only the [CLS] row reaches the pooler); the top-level ``num_attention_heads``
    (unused by the modules) is deliberately different.
    """
    import transformers as hf

    vocab, merges = byte_level_vocab()
    max_positions = TINY_BRIDGETOWER_TEXT_LIMIT + 2
    tokenizer = hf.RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=TINY_BRIDGETOWER_TEXT_LIMIT)
    config = hf.BridgeTowerConfig(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=8,
            intermediate_size=64,
            max_position_embeddings=max_positions,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
        ),
        vision_config=dict(hidden_size=64, num_hidden_layers=3, image_size=32, patch_size=16),
    )
    image_processor = hf.BridgeTowerImageProcessor(size={"shortest_edge": 32}, crop_size={"shortest_edge": 32})
    processor = hf.BridgeTowerProcessor(image_processor=image_processor, tokenizer=tokenizer)
    folder = save_tiny(folder, lambda: hf.BridgeTowerForImageAndTextRetrieval(config), processor)
    # The real checkpoint's config names another head class (its weights hold every head);
    # save_pretrained writes our class, so put the real name back.
    config_path = folder / "config.json"
    saved = json.loads(config_path.read_text())
    saved["architectures"] = ["BridgeTowerForContrastiveLearning"]
    config_path.write_text(json.dumps(saved, indent=2))
    return folder


def build_tiny_vilt(folder: Path) -> Path:
    """Save a tiny ``ViltForImageAndTextRetrieval`` + ``ViltProcessor``.

    Hidden 40, 9 layers × 10 heads (head size 4): the adapter's default layer 8, head 10
    exist and layer 8 is not the last (whose text rows other than [CLS] get no gradient:
    only [CLS] reaches the pooler). Patch 32 as in the real ``vilt-b32`` models, position table for 64 px
    (interpolated to any grid), 40 text positions as in the real model.
    """
    import transformers as hf

    vocab = wordpiece_vocab()
    tokenizer = hf.BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=40)
    config = hf.ViltConfig(
        vocab_size=len(vocab),
        hidden_size=40,
        num_hidden_layers=9,
        num_attention_heads=10,
        intermediate_size=80,
        max_position_embeddings=40,
        image_size=64,
        patch_size=32,
        pad_token_id=vocab["[PAD]"],
    )
    config.architectures = ["ViltForImageAndTextRetrieval"]
    image_processor = hf.ViltImageProcessor(size={"shortest_edge": 64})
    processor = hf.ViltProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return save_tiny(folder, lambda: hf.ViltForImageAndTextRetrieval(config), processor)


def write_tiny_lavis_blip_checkpoint(folder: Path, width: int = 128, seed: int = 0) -> Path:
    """``folder/blip.pth`` shaped and named as a LAVIS ``BlipITM`` / BLIP release checkpoint.

    Random tensors under LAVIS's names (``visual_encoder.blocks.N.attn.qkv``,
    ``text_encoder.encoder.layer.N.crossattention...``), stored as the releases store them:
    ``{"model": state, "config": ..., "epoch": ...}``, with a retrieval checkpoint's momentum
    encoder and queue, and BERT's ``vocab.txt`` beside it. Vision: 64 px, patch 16, 2 layers;
    text: 3 layers, all cross-attending, 64 positions; embeddings for the vocabulary plus
    [DEC] and [ENC]. Needs no LAVIS (the LAVIS environment builds real ones).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = wordpiece_vocab(BERT_SPECIALS)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    g = torch.Generator().manual_seed(seed)
    w, mlp = width, 4 * width

    def linear(prefix: str, n_out: int, n_in: int) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}.weight": torch.randn(n_out, n_in, generator=g) * 0.05,
            f"{prefix}.bias": torch.randn(n_out, generator=g) * 0.01,
        }

    def norm(prefix: str) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}.weight": 1 + 0.1 * torch.randn(w, generator=g),
            f"{prefix}.bias": 0.1 * torch.randn(w, generator=g),
        }

    state: dict[str, torch.Tensor] = {
        "visual_encoder.cls_token": torch.randn(1, 1, w, generator=g),
        "visual_encoder.pos_embed": torch.randn(1, 17, w, generator=g),
        "visual_encoder.patch_embed.proj.weight": torch.randn(w, 3, 16, 16, generator=g) * 0.05,
        "visual_encoder.patch_embed.proj.bias": torch.zeros(w),
        **norm("visual_encoder.norm"),
        "text_encoder.embeddings.position_ids": torch.arange(64)[None],
        "text_encoder.embeddings.word_embeddings.weight": torch.randn(len(vocab) + 2, w, generator=g),
        "text_encoder.embeddings.position_embeddings.weight": torch.randn(64, w, generator=g),
        **norm("text_encoder.embeddings.LayerNorm"),
        **linear("vision_proj", 16, w),
        **linear("text_proj", 16, w),
        **linear("itm_head", 2, w),
    }
    for i in range(2):
        block = f"visual_encoder.blocks.{i}"
        state.update(norm(f"{block}.norm1") | norm(f"{block}.norm2") | linear(f"{block}.attn.qkv", 3 * w, w))
        state.update(
            linear(f"{block}.attn.proj", w, w) | linear(f"{block}.mlp.fc1", mlp, w) | linear(f"{block}.mlp.fc2", w, mlp)
        )
    for i in range(3):
        layer = f"text_encoder.encoder.layer.{i}"
        for attention in ("attention", "crossattention"):
            for part in ("query", "key", "value"):
                state.update(linear(f"{layer}.{attention}.self.{part}", w, w))
            state.update(
                linear(f"{layer}.{attention}.output.dense", w, w) | norm(f"{layer}.{attention}.output.LayerNorm")
            )
        state.update(linear(f"{layer}.intermediate.dense", 2 * w, w) | linear(f"{layer}.output.dense", w, 2 * w))
        state.update(norm(f"{layer}.output.LayerNorm"))
    momentum = {
        k.replace("visual_encoder.", "visual_encoder_m.", 1): v
        for k, v in state.items()
        if k.startswith("visual_encoder.")
    }
    state.update(
        momentum | {"image_queue": torch.randn(16, 8, generator=g), "ptr_queue": torch.zeros(1, dtype=torch.long)}
    )
    path = folder / "blip.pth"
    torch.save({"model": state, "config": {"image_size": 64, "vit": "tiny"}, "epoch": 5}, path)
    return path
