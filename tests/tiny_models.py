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

from pnpseg_hf.testing import BERT_SPECIALS, byte_level_vocab, save_tiny, wordpiece_vocab

#: Special tokens of BLIP's BERT tokenizer: the BERT five, then [DEC] (the captioning BOS,
#: ``text_config.bos_token_id``) and [ENC] (put at position 0 for image-text matching).
BLIP_SPECIALS = [*BERT_SPECIALS, "[DEC]", "[ENC]"]

#: The tiny BridgeTower's text limit: RoBERTa positions start at ``pad_token_id + 1`` = 2,
#: so ``max_position_embeddings`` = 26 leaves room for 24 tokens (the real model: 514 → 512).
TINY_BRIDGETOWER_TEXT_LIMIT = 24


def build_tiny_blip(folder: Path) -> Path:
    """Save a tiny ``BlipForImageTextRetrieval`` + ``BlipProcessor`` to ``folder``.

    Vision: 64 px, patch 16, hidden 32, 2 layers × 2 heads. Text: hidden 32, 3 layers × 2
    heads (cross-attention in every layer), 64 positions.
    """
    import transformers as hf

    vocab = wordpiece_vocab(BLIP_SPECIALS)
    tokenizer = hf.BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=64)
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    config = hf.BlipConfig(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=64,
            patch_size=16,
            initializer_range=0.02,
        ),
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=2,
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

    def sharpen(model: Any) -> None:
        # Random init gives near-uniform attention and position-blind features; sharpen
        # both so that wrong patch order or sliced position embeddings show in the maps.
        model.vision_model.embeddings.position_embedding.mul_(50.0)
        for layer in model.text_encoder.encoder.layer:
            layer.crossattention.self.query.weight.mul_(4.0)
            layer.crossattention.self.key.weight.mul_(4.0)

    image_processor = hf.BlipImageProcessor(size={"height": 64, "width": 64})
    processor = hf.BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
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
