"""A tiny random BLIP-2 ITM checkpoint for tests (no weights can be downloaded here)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pnpseg_hf.testing import save_tiny, wordpiece_vocab


def build_tiny_blip2(folder: str | os.PathLike[str]) -> Path:
    """Save a tiny ``Blip2ForImageTextRetrieval`` + ``Blip2Processor`` to ``folder``.

    Vision: 64 px, patch 16, hidden 32, 2 layers. Q-Former: hidden 32, 4 layers × 4 heads,
    cross-attention every 2nd layer (2 text→image layers), 4 query tokens, text input on
    (``use_qformer_text_input``: the ITM needs it), 64 positions. The query tokens (zeros at
    initialisation, so every query would be the same), the image position table and patch
    embedding (both near 0 at initialisation) are randomised, and the Q-Former initialised 10× wider than usual, so that layers differ
    and a wrong patch order or layer shows in the maps.
    """
    import transformers as hf

    vocab = wordpiece_vocab()
    tokenizer = hf.BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=64)
    small = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4)
    config = hf.Blip2Config(
        vision_config=dict(small, num_hidden_layers=2, image_size=64, patch_size=16),
        qformer_config=dict(
            small,
            vocab_size=len(vocab),
            num_hidden_layers=4,
            max_position_embeddings=64,
            pad_token_id=vocab["[PAD]"],
            cross_attention_frequency=2,
            encoder_hidden_size=32,
            use_qformer_text_input=True,
            initializer_range=0.2,  # 0.02 leaves every layer close to the identity: layers look alike
        ),
        num_query_tokens=4,
        image_text_hidden_size=16,
    )

    def randomise(model: Any) -> None:
        model.query_tokens.normal_(0.0, 1.0)
        # transformers 5 initialises BLIP-2's position table (and so the image features) near 0
        model.vision_model.embeddings.position_embedding.normal_(0.0, 1.0)
        model.vision_model.embeddings.patch_embedding.weight.normal_(0.0, 0.05)  # and the pixels too

    size = {"height": 64, "width": 64}
    processor = hf.Blip2Processor(image_processor=hf.BlipImageProcessor(size=size), tokenizer=tokenizer)
    return save_tiny(folder, lambda: hf.Blip2ForImageTextRetrieval(config), processor, randomise)
