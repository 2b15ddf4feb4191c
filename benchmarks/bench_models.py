"""The benchmark's inputs: full-size random-weight models saved by path, and images by content.

Models are built from the published configs with random weights (nothing is downloaded),
their vocabularies from :mod:`pnpseg_hf.testing`, the tiny BLIP from
:mod:`pnpseg_blip.testing`, so the benchmark and the tests build them one way.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from pnpseg.io.class_lists import prompted_classes
from pnpseg.testing import make_scene

#: Pascal VOC's 20 classes, as pnpseg ships them (the first name of each).
VOC = [names[0] for names in prompted_classes("voc20")]
#: Every word of the prompts, one vocabulary entry each.
PROMPT_WORDS = list(dict.fromkeys(piece for text in ["a picture of", *VOC] for piece in text.split()))
#: bert-base-uncased's special tokens at their ids ([PAD] 0, [unused0–98], [UNK] 100 … [MASK] 103),
#: so a converted checkpoint keeps BERT's ids.
BERT_BASE_SPECIALS = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BERT_BASE_VOCAB_SIZE = 30522

#: The vision tower of Salesforce/blip-itm-large-flickr (its config.json): ViT-L/16 at 384 px.
BLIP_L_VISION = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=384,
    patch_size=16,
    layer_norm_eps=1e-5,
)
#: Its text side: BERT-base with cross-attention to the 1024-d image features.
BLIP_L_TEXT = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)

#: Content types of ``make_images``.
CONTENTS = ("scenes", "photos", "noise")


def choices(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    """An argparse ``type``: a comma-separated list of ``allowed`` values."""

    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        unknown = [v for v in values if v not in allowed]
        if unknown or not values:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(allowed)}")
        return values

    return parse


def counts(text: str) -> list[int]:
    """An argparse ``type``: a count or a comma-separated list of counts ≥ 0."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError("expected a count or a comma-separated list of counts ≥ 0, e.g. 0,1")
    return values


#: scikit-image's bundled colour photographs (no download).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")


def build_blip(folder: Path, tiny: bool) -> Path:
    """BLIP ITM large (ViT-L/16 @384, BERT-base with cross-attention to 1024-d), or a tiny one
    (pnpseg_blip.testing's, with the 12 text layers the adapter's default layer needs)."""
    if tiny:
        from pnpseg_blip.testing import tiny_blip_parts
        from pnpseg_hf.testing import WORDS, save_tiny

        config, processor = tiny_blip_parts(
            hidden=48, vision_layers=2, heads=12, image_size=64, words=(*WORDS, *PROMPT_WORDS), text_layers=12
        )
        return save_tiny(folder, lambda: _blip_class()(config), processor)
    return _save_blip_large(folder)


def _blip_class():
    from transformers import BlipForImageTextRetrieval

    return BlipForImageTextRetrieval


def _save_blip_large(folder: Path) -> Path:
    from transformers import BertTokenizer, BlipConfig, BlipImageProcessor, BlipProcessor

    from pnpseg_hf.testing import save_tiny, wordpiece_vocab

    vocab = wordpiece_vocab(BERT_BASE_SPECIALS, PROMPT_WORDS)
    vocab.update({f"[filler{i}]": i for i in range(len(vocab), BERT_BASE_VOCAB_SIZE)})
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=512)
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    config = BlipConfig(
        vision_config=dict(BLIP_L_VISION),
        text_config=dict(
            BLIP_L_TEXT,
            encoder_hidden_size=BLIP_L_VISION["hidden_size"],
            vocab_size=BERT_BASE_VOCAB_SIZE + 2,
            max_position_embeddings=512,
            pad_token_id=0,
            bos_token_id=BERT_BASE_VOCAB_SIZE,
            sep_token_id=102,
            is_decoder=True,
        ),
        image_text_hidden_size=256,
        projection_dim=256,
    )
    config.architectures = ["BlipForImageTextRetrieval"]
    size = BLIP_L_VISION["image_size"]
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": size, "width": size}), tokenizer=tokenizer
    )
    return save_tiny(folder, lambda: _blip_class()(config), processor)


def build_bridgetower(folder: Path, tiny: bool) -> Path:
    """BridgeTower large ITM (RoBERTa-large text, CLIP ViT-L/14 @294 vision, 6 cross-modal
    layers of 1024-d × 16 heads), or a tiny one."""
    from transformers import (
        BridgeTowerConfig,
        BridgeTowerForImageAndTextRetrieval,
        BridgeTowerImageProcessor,
        BridgeTowerProcessor,
        RobertaTokenizer,
    )

    from pnpseg_hf.testing import byte_level_vocab, save_tiny

    vocab, merges = byte_level_vocab(PROMPT_WORDS)
    tokenizer = RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=512)
    if tiny:
        hidden, layers, heads, text_layers, inter, vision_hidden, vision_layers, image, patch = (
            64, 3, 8, 2, 128, 64, 2, 64, 16,
        )  # fmt: skip
    else:  # BridgeTower/bridgetower-large-itm-mlm-itc
        hidden, layers, heads, text_layers, inter, vision_hidden, vision_layers, image, patch = (
            1024, 6, 16, 24, 4096, 1024, 24, 294, 14,
        )  # fmt: skip
    config = BridgeTowerConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        text_config=dict(
            vocab_size=50265,
            hidden_size=hidden,
            num_hidden_layers=text_layers,
            num_attention_heads=heads,
            intermediate_size=inter,
            max_position_embeddings=514,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
        ),
        vision_config=dict(
            hidden_size=vision_hidden, num_hidden_layers=vision_layers, image_size=image, patch_size=patch
        ),
    )
    image_processor = BridgeTowerImageProcessor(size={"shortest_edge": image}, crop_size={"shortest_edge": image})
    processor = BridgeTowerProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return save_tiny(folder, lambda: BridgeTowerForImageAndTextRetrieval(config), processor)


def make_images(folder: Path, count: int, content: str = "scenes", size: tuple[int, int] = (375, 500)) -> list[Path]:
    """``count`` VOC-sized (500×375) JPEGs of one content type: ``scenes`` (flat coloured
    blobs), ``photos`` (scikit-image's bundled photographs, resized) or ``noise`` (uniform
    random pixels, the CRF's worst case). The models are random, so content matters only
    to the CRF, whose bilateral lattice grows with the number of distinct colours."""
    folder.mkdir(parents=True, exist_ok=True)
    height, width = size
    paths = []
    for i in range(count):
        if content == "scenes":
            image = make_scene(height, width, ["red", "green", "blue"], seed=i, jpeg_quality=90)[0]
        elif content == "photos":
            image = _photo(PHOTOS[i % len(PHOTOS)]).resize((width, height), Image.Resampling.BICUBIC)
        elif content == "noise":
            pixels = np.random.default_rng(i).integers(0, 256, (height, width, 3), dtype=np.uint8)
            image = Image.fromarray(pixels)
        else:
            raise ValueError(f"unknown content {content!r}: one of {', '.join(CONTENTS)}")
        path = folder / f"{content}{i:03d}.jpg"
        image.save(path)
        paths.append(path)
    return paths


def _photo(name: str) -> Image.Image:
    try:
        import skimage.data
    except ImportError:
        raise SystemExit(
            "--content photos needs scikit-image (its bundled photographs): pip install scikit-image"
        ) from None
    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
