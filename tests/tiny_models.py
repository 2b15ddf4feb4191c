"""Tiny randomly initialised Hugging Face models, saved to a folder, for adapter tests.

Real weights cannot be downloaded here, so the adapters are exercised on the real model
classes with small configs: shapes, hooks, gradients and loading paths are all genuine.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

#: Special tokens of BLIP's BERT tokenizer: the BERT five, then [DEC] (the captioning BOS,
#: ``text_config.bos_token_id``) and [ENC] (put at position 0 for image-text matching).
BLIP_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]"]
WORDS = ["a", "picture", "of", "cat", "dog", "grass", "sky", "red", "blue"]


def tiny_wordpiece_vocab(specials: list[str]) -> dict[str, int]:
    """Specials, every lowercase letter and digit with its ``##`` form, punctuation, words.

    Any ASCII word can be spelt piece by piece (BERT lowercases), so only non-ASCII input
    (an emoji, say) becomes [UNK].
    """
    tokens = list(specials)
    chars = string.ascii_lowercase + string.digits
    tokens += list(chars) + [f"##{c}" for c in chars] + list(".,!?'-_/()")
    tokens += [w for w in WORDS if w not in tokens]
    return {tok: i for i, tok in enumerate(tokens)}


def build_tiny_blip(folder: Path) -> Path:
    """Save a tiny ``BlipForImageTextRetrieval`` + ``BlipProcessor`` to ``folder``.

    Vision: 64 px, patch 16, hidden 32, 2 layers × 2 heads. Text: hidden 32, 3 layers × 2
    heads (cross-attention in every layer), 64 positions.
    """
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForImageTextRetrieval,
        BlipImageProcessor,
        BlipProcessor,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = tiny_wordpiece_vocab(BLIP_SPECIALS)
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=64)
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    config = BlipConfig(
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=64, patch_size=16, initializer_range=0.02,
        ),
        text_config=dict(
            vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
            num_attention_heads=2, max_position_embeddings=64, pad_token_id=vocab["[PAD]"],
            bos_token_id=vocab["[DEC]"], sep_token_id=vocab["[SEP]"], is_decoder=True,
        ),
        image_text_hidden_size=16,
        projection_dim=16,
    )
    config.architectures = ["BlipForImageTextRetrieval"]
    torch.manual_seed(0)
    model = BlipForImageTextRetrieval(config).eval()
    with torch.no_grad():
        # Random init gives near-uniform attention and position-blind features; sharpen
        # both so that wrong patch order or sliced position embeddings show in the maps.
        model.vision_model.embeddings.position_embedding.mul_(50.0)
        for layer in model.text_encoder.encoder.layer:
            layer.crossattention.self.query.weight.mul_(4.0)
            layer.crossattention.self.key.weight.mul_(4.0)
    model.save_pretrained(folder)
    image_processor = BlipImageProcessor(size={"height": 64, "width": 64})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder
