"""``pnpseg convert blip``: an original BLIP / LAVIS ITM checkpoint → a Hugging Face BLIP folder.

The PnP-OVSS authors ran LAVIS with the BLIP release checkpoints (``model_large_retrieval_
flickr.pth``, ...). This turns such a ``.pth`` into a folder that ``--adapter blip --model
OUT_DIR`` loads, so their exact weights run on current transformers:

* weights: LAVIS/BLIP names → ``BlipForImageTextRetrieval`` names (:data:`VISION_RENAMES`);
  the text encoder, ``vision_proj``, ``text_proj`` and ``itm_head`` keep theirs; momentum
  encoders and queues of the retrieval checkpoints are dropped;
* config: sizes read off the tensors (heads of 64), the vision LayerNorm eps of the original
  ViT (1e-6; transformers' default is 1e-5), the image size and its position embeddings
  (bicubically resized for ``--image-size``, as LAVIS does when it loads a checkpoint);
* processor: BLIP's normalisation, bicubic resize, and the BERT tokenizer with ``[DEC]`` (BOS)
  and ``[ENC]`` (the ITM token at position 0) added as BLIP does.
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

import pnpseg
from pnpseg_hf import first_line, load_pretrained, quiet_loading

#: LAVIS ``VisionTransformer`` names → ``BlipVisionModel`` names (regex, replacement), in order.
VISION_RENAMES = (
    (r"^visual_encoder\.cls_token$", "vision_model.embeddings.class_embedding"),
    (r"^visual_encoder\.pos_embed$", "vision_model.embeddings.position_embedding"),
    (r"^visual_encoder\.patch_embed\.proj\.", "vision_model.embeddings.patch_embedding."),
    (r"^visual_encoder\.norm\.", "vision_model.post_layernorm."),
    (r"^visual_encoder\.blocks\.(\d+)\.norm1\.", r"vision_model.encoder.layers.\1.layer_norm1."),
    (r"^visual_encoder\.blocks\.(\d+)\.norm2\.", r"vision_model.encoder.layers.\1.layer_norm2."),
    (r"^visual_encoder\.blocks\.(\d+)\.attn\.qkv\.", r"vision_model.encoder.layers.\1.self_attn.qkv."),
    (r"^visual_encoder\.blocks\.(\d+)\.attn\.proj\.", r"vision_model.encoder.layers.\1.self_attn.projection."),
    (r"^visual_encoder\.blocks\.(\d+)\.mlp\.", r"vision_model.encoder.layers.\1.mlp."),
)
#: Prefixes kept under their own name.
KEPT = ("text_encoder.", "vision_proj.", "text_proj.", "itm_head.")
REQUIRED = ("visual_encoder.pos_embed", "text_encoder.embeddings.word_embeddings.weight", "itm_head.weight")
HEAD_DIM = 64
#: BLIP's image normalisation (OpenAI CLIP's statistics), as LAVIS's ``blip_image_eval``.
BLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
BLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BERT_TOKENIZER = "bert-base-uncased"


class CheckpointError(pnpseg.PnpsegError):
    """The file given is not a BLIP ITM checkpoint this can convert (not PyTorch, another
    model, malformed tensors): the user's input, so a usage error (exit 2), in one line."""


def convert_blip(checkpoint: Path, out_dir: Path, image_size: int | None = None, tokenizer: str | None = None) -> Path:
    """Write the Hugging Face folder for ``checkpoint`` to ``out_dir`` (which must not exist).

    ``tokenizer`` is a folder with BERT's ``vocab.txt``; by default the one beside the
    checkpoint, else ``bert-base-uncased`` from the Hugging Face cache or hub. The folder is
    written next to ``out_dir`` and renamed into place at the end: never half-written.
    """
    out_dir = Path(out_dir)
    if image_size is not None:
        pnpseg.SegmentParams(image_size=image_size)  # pnpseg's bounds on a model input, before any work
    if out_dir.exists():
        raise pnpseg.PnpsegError(f"{str(out_dir)!r} already exists; choose a new output folder")
    state = _load_state(Path(checkpoint))
    bert = with_blip_tokens(_tokenizer(Path(checkpoint), tokenizer))
    try:  # the tensors' names and shapes are the file's word: any that do not fit say so in one line
        model, processor = _blip_model(state, image_size, bert)
    except (KeyError, IndexError, ValueError, TypeError, RuntimeError) as error:
        raise CheckpointError(f"{str(checkpoint)!r} does not fit BLIP ITM ({first_line(error)})") from None
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        with quiet_loading():
            model.save_pretrained(partial)
        processor.save_pretrained(partial)
        os.replace(partial, out_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out_dir


# -- pieces ----------------------------------------------------------------------------------


def _blip_model(state: dict[str, torch.Tensor], image_size: int | None, bert: Any) -> tuple[Any, Any]:
    """The ``BlipForImageTextRetrieval`` holding ``state`` and its processor."""
    from transformers import BlipForImageTextRetrieval

    config = blip_config(state, image_size, bert)
    weights = hf_state_dict(state, config.vision_config.image_size // config.vision_config.patch_size)
    bert.model_max_length = config.text_config.max_position_embeddings
    processor = blip_processor(bert, config.vision_config.image_size)
    model = BlipForImageTextRetrieval(config).eval()
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(f"{'missing ' + missing[0] if missing else 'unexpected ' + unexpected[0]}")
    return model, processor


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    state = pnpseg.load_state_dict(path, invalid=CheckpointError)
    missing = [key for key in REQUIRED if key not in state]
    if missing:
        raise CheckpointError(f"{str(path)!r} is not a BLIP image-text-matching checkpoint (missing {missing[0]})")
    return state


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    found = {int(m.group(1)) for key in state if (m := re.match(pattern, key))}
    return max(found) + 1 if found else 0


def _heads(width: int) -> int:
    if width % HEAD_DIM:
        raise CheckpointError(f"width {width} is not a multiple of BLIP's head size {HEAD_DIM}")
    return width // HEAD_DIM


def blip_config(state: dict[str, torch.Tensor], image_size: int | None, tokenizer: Any) -> Any:
    """The ``BlipConfig`` of the checkpoint's shapes, at ``image_size`` (default: its own).

    The special token ids are ``tokenizer``'s (which must fit the checkpoint's embeddings).
    """
    from transformers import BlipConfig

    width = state["visual_encoder.cls_token"].shape[-1]
    patch = state["visual_encoder.patch_embed.proj.weight"].shape[-1]
    side = math.isqrt(state["visual_encoder.pos_embed"].shape[1] - 1)
    size = side * patch if image_size is None else int(image_size)
    if size <= 0 or size % patch:
        raise pnpseg.PnpsegError(f"--image-size must be a positive multiple of the patch size {patch}, got {size}")
    text_layers = _count(state, r"^text_encoder\.encoder\.layer\.(\d+)\.")
    cross = _count(state, r"^text_encoder\.encoder\.layer\.(\d+)\.crossattention\.")
    if cross == 0 or "text_encoder.encoder.layer.0.crossattention.self.query.weight" not in state:
        raise CheckpointError(
            "the checkpoint's text encoder does not cross-attend in every layer: not BLIP (ALBEF has no "
            "transformers port; use --adapter albef in the LAVIS environment)"
        )
    vocab, hidden = state["text_encoder.embeddings.word_embeddings.weight"].shape
    needed = max(tokenizer.get_vocab().values()) + 1  # ids, not len(): a vocab.txt may repeat a line
    if needed > vocab:
        raise CheckpointError(
            f"the tokenizer with [DEC] and [ENC] has token ids up to {needed - 1} but the checkpoint embeds {vocab}; "
            "use the BERT vocabulary the checkpoint was trained with"
        )
    config = BlipConfig(
        vision_config={
            "hidden_size": width,
            "intermediate_size": state["visual_encoder.blocks.0.mlp.fc1.weight"].shape[0],
            "num_hidden_layers": _count(state, r"^visual_encoder\.blocks\.(\d+)\."),
            "num_attention_heads": _heads(width),
            "image_size": size,
            "patch_size": patch,
            "layer_norm_eps": 1e-6,  # the original ViT's; transformers' default is 1e-5
        },
        text_config={
            "vocab_size": vocab,
            "hidden_size": hidden,
            "intermediate_size": state["text_encoder.encoder.layer.0.intermediate.dense.weight"].shape[0],
            "num_hidden_layers": text_layers,
            "num_attention_heads": _heads(hidden),
            "max_position_embeddings": state["text_encoder.embeddings.position_embeddings.weight"].shape[0],
            "encoder_hidden_size": width,
            "layer_norm_eps": 1e-12,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,  # [DEC]
            "sep_token_id": tokenizer.sep_token_id,
        },
        image_text_hidden_size=state["vision_proj.weight"].shape[0],
    )
    config.architectures = ["BlipForImageTextRetrieval"]
    return config


def hf_state_dict(state: dict[str, torch.Tensor], grid: int) -> dict[str, torch.Tensor]:
    """The ``BlipForImageTextRetrieval`` weights, position embeddings resized to ``grid``²."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(KEPT):
            if not key.endswith("position_ids"):
                out[key] = value
            continue
        for pattern, replacement in VISION_RENAMES:
            new, n = re.subn(pattern, replacement, key)
            if n:
                out[new] = value
                break
    name = "vision_model.embeddings.position_embedding"
    out[name] = resized_position_embedding(out[name], grid)
    return out


def resized_position_embedding(table: torch.Tensor, grid: int) -> torch.Tensor:
    """``[CLS; patches]`` positions bicubically resized to a ``grid``×``grid`` patch grid.

    The arithmetic of LAVIS's ``interpolate_pos_embed`` and of transformers'
    ``interpolate_pos_encoding`` (bicubic, ``align_corners=False``, CLS row kept).
    """
    side = math.isqrt(table.shape[1] - 1)
    if side == grid:
        return table
    dim = table.shape[-1]
    patches = table[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    patches = torch.nn.functional.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat((table[:, :1], patches.permute(0, 2, 3, 1).reshape(1, -1, dim)), dim=1)


def _tokenizer(checkpoint: Path, folder: str | None) -> Any:
    """BERT's tokenizer: ``folder``, else a ``vocab.txt`` beside the checkpoint, else bert-base-uncased.

    bert-base-uncased's ``vocab.txt`` comes from the Hugging Face cache, or the hub if it
    answers (asked for by file: transformers 5 builds an empty 5-token tokenizer, without
    an error, for a tokenizer id it finds nowhere offline).
    """
    from transformers import BertTokenizer

    if folder is None and (checkpoint.parent / "vocab.txt").is_file():
        folder = str(checkpoint.parent)
    if folder is not None:
        vocab = Path(folder) / "vocab.txt"
        if not vocab.is_file():
            raise pnpseg.PnpsegError(f"no BERT vocab.txt in {folder!r}")
    else:
        from huggingface_hub import hf_hub_download

        vocab = load_pretrained(functools.partial(hf_hub_download, filename="vocab.txt"), BERT_TOKENIZER, None, "blip")
    return BertTokenizer(vocab=str(vocab))


def with_blip_tokens(tokenizer: Any) -> Any:
    """BERT's tokenizer as BLIP extends it: [DEC] as BOS, then [ENC] (ids 30522, 30523)."""
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


def blip_processor(tokenizer: Any, image_size: int) -> Any:
    """BLIP's processor: ``tokenizer`` and BLIP's image statistics, bicubic resize."""
    from PIL import Image
    from transformers import BlipImageProcessor, BlipProcessor

    image_processor = BlipImageProcessor(
        size={"height": image_size, "width": image_size},
        resample=Image.Resampling.BICUBIC,
        image_mean=list(BLIP_MEAN),
        image_std=list(BLIP_STD),
    )
    return BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
