"""`pnpseg convert blip`: a BLIP/LAVIS ITM checkpoint becomes a folder the BLIP adapter loads.

The checkpoint here is random tensors under LAVIS's names (no LAVIS in this environment);
that the converted model computes what LAVIS computes is the cross-environment parity test
(tests/test_lavis_parity.py).
"""

from __future__ import annotations

import shutil

import pytest
import torch
from tiny_models import write_tiny_lavis_blip_checkpoint
from typer.testing import CliRunner

from pnpseg.cli import app
from pnpseg_blip import BlipAdapter


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_lavis_blip_checkpoint(tmp_path_factory.mktemp("lavis"))


def convert(*args):
    return CliRunner().invoke(app, ["convert", "blip", *map(str, args)])


def lavis_state(checkpoint):
    return torch.load(checkpoint, weights_only=True)["model"]


def test_every_weight_lands_where_transformers_expects_it(checkpoint, tmp_path):
    from transformers import BlipForImageTextRetrieval

    result = convert(checkpoint, tmp_path / "hf")
    assert result.exit_code == 0, result.output
    model = BlipForImageTextRetrieval.from_pretrained(tmp_path / "hf")
    ours = model.state_dict()
    theirs = lavis_state(checkpoint)
    pairs = {
        "vision_model.embeddings.class_embedding": "visual_encoder.cls_token",
        "vision_model.embeddings.position_embedding": "visual_encoder.pos_embed",
        "vision_model.embeddings.patch_embedding.weight": "visual_encoder.patch_embed.proj.weight",
        "vision_model.encoder.layers.1.layer_norm1.bias": "visual_encoder.blocks.1.norm1.bias",
        "vision_model.encoder.layers.1.self_attn.qkv.weight": "visual_encoder.blocks.1.attn.qkv.weight",
        "vision_model.encoder.layers.0.self_attn.projection.weight": "visual_encoder.blocks.0.attn.proj.weight",
        "vision_model.encoder.layers.1.layer_norm2.weight": "visual_encoder.blocks.1.norm2.weight",
        "vision_model.encoder.layers.0.mlp.fc2.weight": "visual_encoder.blocks.0.mlp.fc2.weight",
        "vision_model.post_layernorm.weight": "visual_encoder.norm.weight",
        "text_encoder.encoder.layer.2.crossattention.self.key.weight": "text_encoder.encoder.layer.2.crossattention.self.key.weight",
        "text_encoder.embeddings.word_embeddings.weight": "text_encoder.embeddings.word_embeddings.weight",
        "itm_head.weight": "itm_head.weight",
        "vision_proj.bias": "vision_proj.bias",
    }
    for hf_name, lavis_name in pairs.items():
        assert torch.equal(ours[hf_name], theirs[lavis_name]), hf_name
    config = model.config
    assert config.vision_config.layer_norm_eps == 1e-6 and config.vision_config.image_size == 64
    assert (config.vision_config.num_attention_heads, config.text_config.num_attention_heads) == (2, 2)
    assert config.text_config.encoder_hidden_size == 128 and config.image_text_hidden_size == 16
    assert config.architectures == ["BlipForImageTextRetrieval"]


def test_the_blip_adapter_loads_it_with_enc_first(checkpoint, tmp_path):
    assert convert(checkpoint, tmp_path / "hf").exit_code == 0
    adapter = BlipAdapter(str(tmp_path / "hf"))
    tokenizer = adapter.tokenizer
    vocab = len((checkpoint.parent / "vocab.txt").read_text().split())
    assert tokenizer.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [vocab, vocab + 1]
    assert adapter.first_token_id == vocab + 1 and adapter.config.text_config.bos_token_id == vocab
    assert adapter.tokenize(["a cat"]).input_ids[0].tolist()[:1] == [vocab + 1]
    assert tokenizer.model_max_length == adapter.max_text_length == 64
    pixels = adapter.preprocess([__import__("PIL.Image").Image.new("RGB", (50, 40), "red")], (64, 96))
    out = adapter.forward(pixels, adapter.tokenize(["a cat", "sky"]), [2])
    assert out.grid == (4, 6) and torch.isfinite(out.match_logit).all()


def test_image_size_resizes_the_position_table(checkpoint, tmp_path):
    from transformers import BlipForImageTextRetrieval, BlipProcessor

    assert convert(checkpoint, tmp_path / "hf", "--image-size", "96").exit_code == 0
    table = BlipForImageTextRetrieval.from_pretrained(tmp_path / "hf").vision_model.embeddings.position_embedding
    original = lavis_state(checkpoint)["visual_encoder.pos_embed"]
    assert table.shape == (1, 37, 128)
    assert torch.equal(table[:, :1], original[:, :1])  # CLS row kept
    grid = original[:, 1:].reshape(1, 4, 4, 128).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False)
    torch.testing.assert_close(table[:, 1:], resized.permute(0, 2, 3, 1).reshape(1, 36, 128))
    assert BlipProcessor.from_pretrained(tmp_path / "hf").image_processor.size == {"height": 96, "width": 96}


def one_line_failure(args, message, tmp_path, code=2):
    """A one-line error, exit ``code`` (2: a bad file or option, issue 21.16; 3: the environment)."""
    result = convert(*args)
    assert result.exit_code == code and "Traceback" not in result.output, result.output
    assert message in result.output.replace("\n", "")
    assert not (tmp_path / "hf").exists() and not list(tmp_path.glob(".hf.*"))  # nothing half-written


def test_bad_inputs(checkpoint, tmp_path):
    one_line_failure([tmp_path / "none.pth", tmp_path / "hf"], "no checkpoint file at", tmp_path)
    one_line_failure(
        [checkpoint, tmp_path / "hf", "--image-size", "100"], "multiple of the patch size 16", tmp_path, code=2
    )
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"nope")
    one_line_failure([garbage, tmp_path / "hf"], "is not a PyTorch checkpoint", tmp_path)
    state = lavis_state(checkpoint)
    torch.save({"model": {k: v for k, v in state.items() if not k.startswith("itm_head")}}, tmp_path / "pretrain.pth")
    shutil.copy(checkpoint.parent / "vocab.txt", tmp_path / "vocab.txt")
    one_line_failure(
        [tmp_path / "pretrain.pth", tmp_path / "hf"],
        "not a BLIP image-text-matching checkpoint (missing itm_head.weight)",
        tmp_path,
    )
    albef_like = {k: v for k, v in state.items() if not k.startswith("text_encoder.encoder.layer.0.crossattention")}
    torch.save({"model": albef_like}, tmp_path / "albef.pth")
    one_line_failure([tmp_path / "albef.pth", tmp_path / "hf"], "does not cross-attend in every layer", tmp_path)
    bigger = tmp_path / "bigger-vocab"
    bigger.mkdir()
    lines = (checkpoint.parent / "vocab.txt").read_text().split()
    (bigger / "vocab.txt").write_text("\n".join(lines + ["zebra"]) + "\n")  # [ENC] would be one row too far
    one_line_failure(
        [checkpoint, tmp_path / "hf", "--tokenizer", bigger],
        f"has token ids up to {len(lines) + 2} but the checkpoint embeds {len(lines) + 2}",
        tmp_path,
    )
    (tmp_path / "hf").mkdir()
    result = convert(checkpoint, tmp_path / "hf")
    assert result.exit_code == 2 and "already exists" in result.output


def test_without_a_vocabulary_offline(checkpoint, tmp_path, monkeypatch):
    """No vocab.txt beside the checkpoint, bert-base-uncased neither cached nor reachable."""
    from huggingface_hub import hf_hub_download

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        hf_hub_download("bert-base-uncased", "vocab.txt", local_files_only=True)
        pytest.skip("bert-base-uncased is in this machine's Hugging Face cache")
    except OSError:
        pass
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(checkpoint, alone / "blip.pth")
    one_line_failure(
        [alone / "blip.pth", tmp_path / "hf"], "model 'bert-base-uncased' is not in the local cache", tmp_path, code=3
    )
    one_line_failure([alone / "blip.pth", tmp_path / "hf", "--tokenizer", tmp_path], "no BERT vocab.txt in", tmp_path)
    shutil.copy(checkpoint.parent / "vocab.txt", tmp_path / "vocab.txt")
    assert convert(alone / "blip.pth", tmp_path / "hf", "--tokenizer", tmp_path).exit_code == 0
