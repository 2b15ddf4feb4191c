"""BLIP adapter on a tiny random BlipForImageTextRetrieval (real classes, no download)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("transformers")


import pnpseg  # noqa: E402
import pnpseg.plugins  # noqa: E402
from pnpseg.testing import check_adapter  # noqa: E402
from pnpseg_blip import BlipAdapter  # noqa: E402
from pnpseg_blip.adapter import _enc_token_id, capture_cross_attentions, cross_attention_module  # noqa: E402

PROMPT = "A picture of cat grassy sky"


@pytest.fixture(scope="module")
def adapter(tiny_blip: Path) -> BlipAdapter:
    return pnpseg.plugins.lookup("adapters", "blip")(model=str(tiny_blip))


def random_images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.mark.slow
def test_registry_builds_adapter_from_folder(adapter: BlipAdapter) -> None:
    assert isinstance(adapter, BlipAdapter)
    assert isinstance(adapter, pnpseg.VLMAdapter)
    assert (adapter.num_layers, adapter.num_heads) == (3, 2)
    assert adapter.max_text_length == 64
    assert adapter.patch_size == 16
    assert adapter.device == torch.device("cpu")
    effective = pnpseg.SegmentParams.build(adapter.default_params)  # BLIP's are SegmentParams' defaults
    assert (effective.layer, effective.head, effective.image_size) == (8, 10, (336, 336))


def test_weights_load_lazily(tiny_blip: Path, tmp_path: Path) -> None:
    folder = tmp_path / "no_weights"
    shutil.copytree(tiny_blip, folder)
    (folder / "model.safetensors").unlink()
    lazy = BlipAdapter(str(folder))
    assert not lazy.weights_loaded
    assert lazy.tokenize(["a cat"]).input_ids.shape == (1, 4)  # [ENC] a cat [SEP]
    pixels = lazy.preprocess(random_images(1), (64, 64))
    with pytest.raises(pnpseg.ModelLoadError, match="no_weights"):
        lazy.forward(pixels, lazy.tokenize(["a cat"]), [0])


def test_checkpoint_without_itm_head_is_rejected(tiny_blip: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "no_itm"
    shutil.copytree(tiny_blip, folder)
    weights = load_file(folder / "model.safetensors")
    kept = {k: v for k, v in weights.items() if not k.startswith("itm_head")}
    save_file(kept, folder / "model.safetensors", metadata={"format": "pt"})
    adapter = BlipAdapter(str(folder))
    with pytest.raises(pnpseg.ModelLoadError, match="itm_head"):
        adapter.forward(adapter.preprocess(random_images(1), (32, 32)), adapter.tokenize(["a cat"]), [0])


@pytest.mark.parametrize(("size", "grid"), [((64, 96), (4, 6)), ((96, 64), (6, 4)), ((32, 48), (2, 3))])
def test_attention_shapes_any_resolution(adapter: BlipAdapter, size: tuple[int, int], grid: tuple[int, int]) -> None:
    text = adapter.tokenize([PROMPT, "a dog"])
    pixels = adapter.preprocess(random_images(2), size)
    assert pixels.shape == (2, 3, *size)
    out = adapter.forward(pixels, text, [2, 0])
    assert adapter.weights_loaded
    n = grid[0] * grid[1]
    tokens = text.input_ids.shape[1]
    assert out.grid == grid
    assert out.match_logit.shape == (2,)
    assert [a.shape for a in out.attentions] == [(2, 2, tokens, 1 + n)] * 2
    assert out.to_text_image(out.attentions[0]).shape == (2, 2, tokens, n)
    # Softmax over [image CLS; patches]: each query row sums to 1.
    torch.testing.assert_close(out.attentions[1].sum(-1), torch.ones(2, 2, tokens))
    torch.testing.assert_close(out.to_text_image(out.attentions[0]), out.attentions[0][..., 1:])


@pytest.mark.parametrize("size", [(64, 96), (32, 32)])
@pytest.mark.slow
def test_match_logit_equals_hf_forward_with_interpolation(adapter: BlipAdapter, size: tuple[int, int]) -> None:
    """Our split forward (vision no_grad, text with hooks) is the model's own ITM pass.

    It must interpolate the position embeddings: at a size below the checkpoint's, HF
    without ``interpolate_pos_encoding`` silently slices them and gives another score.
    """
    text = adapter.tokenize([PROMPT, "a dog"])
    pixels = adapter.preprocess(random_images(2, seed=1), size)
    out = adapter.forward(pixels, text, [1])
    inputs = dict(input_ids=text.input_ids, pixel_values=pixels, attention_mask=text.attention_mask)

    def reference(interpolate: bool) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad(), capture_cross_attentions(adapter.model, [1]) as captured:
            logit = adapter.model(**inputs, interpolate_pos_encoding=interpolate).itm_score[:, 1]
        return logit, captured[1]

    logit, attention = reference(True)
    torch.testing.assert_close(out.match_logit.detach(), logit)
    torch.testing.assert_close(out.attentions[0].detach(), attention)
    if size == (32, 32):
        _, sliced = reference(False)
        assert (sliced - attention).abs().max() > 0.05


def test_gradients_reach_every_captured_layer_and_no_parameter(adapter: BlipAdapter) -> None:
    text = adapter.tokenize([PROMPT])
    out = adapter.forward(adapter.preprocess(random_images(1, seed=2), (64, 96)), text, [0, 1, 2])
    grads = torch.autograd.grad(out.match_logit.sum(), out.attentions)
    for grad, attention in zip(grads, out.attentions):
        assert grad.shape == attention.shape
        assert grad.abs().sum() > 0
    model = adapter.model
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())
    assert not any(cross_attention_module(model, i)._forward_hooks for i in range(adapter.num_layers))


@pytest.mark.slow
def test_conformance(adapter: BlipAdapter) -> None:
    """Every clause of the protocol; gradients equal those of Hugging Face's own ITM forward
    (with a full graph), cut to the text→patch block."""

    def reference(adapter, pixels, text, layers):
        model = adapter.model
        inputs = dict(input_ids=text.input_ids, pixel_values=pixels, attention_mask=text.attention_mask)
        model.requires_grad_(True)
        try:
            with capture_cross_attentions(model, layers) as captured:
                logit = model(**inputs, interpolate_pos_encoding=True).itm_score[:, 1]
            grads = torch.autograd.grad(logit.sum(), [captured[layer] for layer in layers])
        finally:
            model.requires_grad_(False)
        return [grad[..., 1:] for grad in grads]

    report = check_adapter(adapter, layers=[2, 0], reference_gradients=reference, atol=1e-7)
    assert not report.skipped


def test_hooks_removed_when_forward_fails(adapter: BlipAdapter) -> None:
    model = adapter.model
    with pytest.raises(RuntimeError, match="boom"):
        with capture_cross_attentions(model, [0, 2]):
            assert cross_attention_module(model, 0)._forward_hooks
            raise RuntimeError("boom")
    assert not cross_attention_module(model, 0)._forward_hooks
    assert not cross_attention_module(model, 2)._forward_hooks


def test_text_and_image_batches_broadcast(adapter: BlipAdapter) -> None:
    text = adapter.tokenize([PROMPT, "a dog", "sky"])
    out = adapter.forward(adapter.preprocess(random_images(1), (32, 32)), text, [0])
    assert out.match_logit.shape == (3,)
    assert out.attentions[0].shape[:3] == (3, 2, text.input_ids.shape[1])
    (grad,) = torch.autograd.grad(out.match_logit.sum(), out.attentions)
    assert grad.abs().sum() > 0
    with pytest.raises(ValueError, match="batch"):
        adapter.forward(adapter.preprocess(random_images(2), (32, 32)), text, [0])


def test_layer_index_is_checked(adapter: BlipAdapter) -> None:
    pixels = adapter.preprocess(random_images(1), (32, 32))
    with pytest.raises(IndexError):
        adapter.forward(pixels, adapter.tokenize(["a cat"]), [3])


def test_offsets_map_tokens_to_words(adapter: BlipAdapter) -> None:
    text = adapter.tokenize([PROMPT])
    offsets = text.offsets[0]
    pieces = [PROMPT[s:e] for s, e in offsets]
    # [ENC] a picture of cat grass ##y sky [SEP]
    assert pieces == ["", "A", "picture", "of", "cat", "grass", "y", "sky", ""]
    assert offsets[5] == (17, 22) and offsets[6] == (22, 23)
    assert text.unknown == [[False] * len(offsets)]


def test_padding_and_itm_first_token(adapter: BlipAdapter, tiny_blip: Path) -> None:
    tok = adapter.tokenizer
    text = adapter.tokenize(["a dog", PROMPT])
    enc_id = tok.convert_tokens_to_ids("[ENC]")
    assert text.input_ids[:, 0].tolist() == [enc_id, enc_id]
    assert text.attention_mask[0].tolist() == [1, 1, 1, 1] + [0] * 5
    assert text.offsets[0][3:] == [(0, 0)] * 6  # [SEP] and padding
    cls_adapter = BlipAdapter(str(tiny_blip), itm_token="cls")
    assert cls_adapter.tokenize(["a dog"]).input_ids[0, 0].item() == tok.cls_token_id


def test_enc_token_falls_back_to_bos_plus_one() -> None:
    """HF's BLIP tokenizers lack [ENC]; the checkpoints keep its embedding at bos+1."""
    from transformers import BertTokenizer

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"])}
    tok = BertTokenizer(vocab=vocab)
    assert _enc_token_id(tok, SimpleNamespace(bos_token_id=6, vocab_size=8)) == 7
    assert _enc_token_id(tok, SimpleNamespace(bos_token_id=None, vocab_size=6)) == tok.cls_token_id


def test_unknown_flags_for_emoji(adapter: BlipAdapter) -> None:
    prompt = "cat \U0001f431 dog"
    text = adapter.tokenize([prompt])
    flagged = [prompt[s:e] for (s, e), unk in zip(text.offsets[0], text.unknown[0]) if unk]
    assert flagged == ["\U0001f431"]


def test_preprocess_normalises_and_checks_size(adapter: BlipAdapter) -> None:
    mean = tuple(round(m * 255) for m in adapter.mean.flatten().tolist())
    pixels = adapter.preprocess([Image.new("RGB", (30, 20), mean)], (48, 32))
    assert pixels.shape == (1, 3, 48, 32)
    assert pixels.abs().max() < 0.01
    white = adapter.preprocess([Image.new("RGB", (8, 8), (255, 255, 255))], (16, 16))
    torch.testing.assert_close(white[0, :, 0, 0], ((1 - adapter.mean) / adapter.std).flatten())
    with pytest.raises(pnpseg.PnpsegError, match="patch size 16"):
        adapter.preprocess(random_images(1), (40, 48))


@pytest.mark.slow
def test_offline_hub_name_gives_one_line_error(tmp_path: Path) -> None:
    # huggingface_hub reads HF_HUB_OFFLINE / HF_HOME at import: use a fresh interpreter.
    code = textwrap.dedent(
        """
        import pnpseg
        from pnpseg_blip import BlipAdapter
        try:
            BlipAdapter("Salesforce/blip-itm-large-flickr")
        except pnpseg.ModelLoadError as exc:
            print("ERROR:" + str(exc))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    env.pop("HF_HUB_CACHE", None)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    lines = [line for line in result.stdout.splitlines() if line.startswith("ERROR:")]
    assert len(lines) == 1, result.stdout + result.stderr
    message = lines[0]
    assert "--model" in message and "blip-itm-large-flickr" in message
    assert "Traceback" not in result.stderr


def test_missing_path_and_file_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(pnpseg.ModelLoadError, match="no model folder") as info:
        BlipAdapter(str(tmp_path / "missing"))
    assert info.value.__cause__ is None and "\n" not in str(info.value)
    with pytest.raises(pnpseg.ModelLoadError, match="no model folder"):
        BlipAdapter("./missing-model-folder")
    file = tmp_path / "weights.bin"
    file.write_bytes(b"")
    with pytest.raises(pnpseg.ModelLoadError, match="not a model folder"):
        BlipAdapter(str(file))


def test_folders_that_are_not_blip_itm_are_rejected(tiny_blip: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(pnpseg.ModelLoadError, match="empty"):
        BlipAdapter(str(empty))

    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(pnpseg.ModelLoadError, match="not BLIP"):
        BlipAdapter(str(bert))

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{")
    with pytest.raises(pnpseg.ModelLoadError, match="broken") as info:
        BlipAdapter(str(broken))
    assert "\n" not in str(info.value)

    captioner = tmp_path / "captioner"
    shutil.copytree(tiny_blip, captioner)
    config = json.loads((captioner / "config.json").read_text())
    config["architectures"] = ["BlipForConditionalGeneration"]
    (captioner / "config.json").write_text(json.dumps(config))
    with pytest.raises(pnpseg.ModelLoadError, match="not an image-text-matching"):
        BlipAdapter(str(captioner))
