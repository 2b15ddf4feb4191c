"""Tiny randomly initialised LAVIS BLIP ITM and ALBEF retrieval checkpoints, for tests.

Built from LAVIS's own classes with small sizes (nothing is downloaded) and saved as the
released checkpoints are: ``{"model": state_dict}`` in a ``.pth``, with the BERT
``vocab.txt`` beside it, so the adapters load them by path exactly like a real one.
Width 128 gives 2 heads of 64 in both towers; 64 px images with patch 16 are a 4×4 grid.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import torch

WORDS = ["a", "picture", "of", "cat", "dog", "grass", "sky", "red", "blue"]
WIDTH = 128
IMAGE_SIZE = 64


def write_vocab(folder: Path) -> Path:
    """BERT specials, every lowercase letter and digit (plain and ``##``), a few words."""
    chars = string.ascii_lowercase + string.digits
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += list(chars) + [f"##{c}" for c in chars] + list(".,!?'-_/()")
    tokens += [w for w in WORDS if w not in tokens]  # a line per token: ids are line numbers
    path = Path(folder) / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n")
    return path


def _tokenizer(folder: Path, blip: bool) -> Any:
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast.from_pretrained(str(folder))
    if blip:  # as LAVIS's BlipBase.init_tokenizer
        tokenizer.add_special_tokens({"bos_token": "[DEC]"})
        tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
        tokenizer.enc_token_id = tokenizer.additional_special_tokens_ids[0]
    return tokenizer


def _encoders(vocab_size: int, text_layers: int, fusion_layer: int | None) -> tuple[Any, Any]:
    from lavis.models.med import XBertEncoder
    from lavis.models.vit import VisionTransformerEncoder
    from transformers import BertConfig

    vision = VisionTransformerEncoder(img_size=IMAGE_SIZE, patch_size=16, embed_dim=WIDTH, depth=2, num_heads=2)
    vision.vision_width = WIDTH
    extra = {} if fusion_layer is None else {"fusion_layer": fusion_layer}
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=WIDTH,
        num_hidden_layers=text_layers,
        num_attention_heads=2,
        intermediate_size=2 * WIDTH,
        max_position_embeddings=64,
        encoder_width=WIDTH,
        add_cross_attention=True,
        add_type_embeddings=False,
        layer_norm_eps=1e-12,
        **extra,
    )
    return vision, XBertEncoder(config=config, add_pooling_layer=False)


def _sharpen(model: Any) -> None:
    # Random init gives near-uniform attention and position-blind features; sharpen both
    # so that a wrong patch order or position table shows in the maps.
    with torch.no_grad():
        model.visual_encoder.pos_embed.mul_(50.0)
        for layer in model.text_encoder.encoder.layer:
            if hasattr(layer, "crossattention"):
                layer.crossattention.self.query.weight.mul_(4.0)
                layer.crossattention.self.key.weight.mul_(4.0)


def _save(model: Any, path: Path) -> Path:
    torch.save({"model": model.state_dict()}, path)
    return path


def build_tiny_lavis_blip(folder: Path) -> Path:
    """``folder/blip_itm.pth`` (+ ``vocab.txt``): a LAVIS ``BlipITM``, 2 vision and 3 text layers."""
    from lavis.models.blip_models.blip_image_text_matching import BlipITM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_vocab(folder)
    tokenizer = _tokenizer(folder, blip=True)

    class TinyBlipITM(BlipITM):
        @classmethod
        def init_tokenizer(cls) -> Any:
            return tokenizer

    torch.manual_seed(0)
    vision, text = _encoders(len(tokenizer), text_layers=3, fusion_layer=None)
    model = TinyBlipITM(image_encoder=vision, text_encoder=text, embed_dim=16).eval()
    _sharpen(model)
    return _save(model, folder / "blip_itm.pth")


def build_tiny_albef(folder: Path) -> Path:
    """``folder/albef_retrieval.pth`` (+ ``vocab.txt``): a LAVIS ``AlbefRetrieval``, 4 text layers, 2 fused."""
    from lavis.models.albef_models.albef_retrieval import AlbefRetrieval

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_vocab(folder)
    tokenizer = _tokenizer(folder, blip=False)

    class TinyAlbef(AlbefRetrieval):
        @classmethod
        def init_tokenizer(cls) -> Any:
            return tokenizer

    torch.manual_seed(0)
    vision, text = _encoders(len(tokenizer), text_layers=4, fusion_layer=2)
    model = TinyAlbef(image_encoder=vision, text_encoder=text, queue_size=8, embed_dim=16).eval()
    _sharpen(model)
    return _save(model, folder / "albef_retrieval.pth")
