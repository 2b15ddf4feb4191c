"""Every bad --model for the LAVIS adapters is one line (a ModelLoadError), before any forward."""

from __future__ import annotations

import pytest

pytest.importorskip("lavis", reason="LAVIS tests run in the LAVIS environment (requirements-lavis.txt)")

import shutil

import torch

import pnpseg
from pnpseg_lavis import AlbefAdapter, LavisBlipAdapter


def one_line_error(factory, model) -> str:
    with pytest.raises(pnpseg.ModelLoadError) as info:
        factory(model)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.fixture
def offline_empty_caches(tmp_path, monkeypatch):
    """No network and an empty LAVIS (torch hub) cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


@pytest.mark.parametrize(
    "factory, name, url_end",
    [
        (LavisBlipAdapter, "large-flickr", "BLIP/models/model_large_retrieval_flickr.pth"),
        (LavisBlipAdapter, "base-coco", "BLIP/models/model_base_retrieval_coco.pth"),
        (AlbefAdapter, "coco", "ALBEF/albef_coco_retrieval_lavis.pt"),
    ],
)
def test_named_model_offline_and_not_cached(offline_empty_caches, tmp_path, factory, name, url_end):
    message = one_line_error(factory, name)
    assert f"LAVIS model {name!r} is not in LAVIS's cache" in message
    assert str(tmp_path / "torch-home") in message and url_end in message and "--model PATH" in message


def test_named_model_found_in_lavis_cache(offline_empty_caches, tmp_path, blip_checkpoint):
    """A checkpoint LAVIS downloaded before is used offline; the tokenizer still must be found."""
    from transformers import BertTokenizerFast

    try:
        BertTokenizerFast.from_pretrained("bert-base-uncased", local_files_only=True)
        pytest.skip("bert-base-uncased is in this machine's Hugging Face cache")
    except OSError:
        pass
    cache = tmp_path / "torch-home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    shutil.copy(blip_checkpoint, cache / "model_base_retrieval_flickr.pth")
    message = one_line_error(LavisBlipAdapter, "base-flickr")
    assert "'bert-base-uncased' tokenizer" in message and "vocab.txt beside the checkpoint" in message


def test_unknown_names_and_bad_paths(tmp_path):
    assert "use one of base-coco, large-coco, base-flickr, large-flickr" in one_line_error(LavisBlipAdapter, "huge")
    assert "use one of coco, flickr" in one_line_error(AlbefAdapter, "nlvr")
    assert f"no checkpoint file at {str(tmp_path / 'x.pth')!r}" in one_line_error(AlbefAdapter, str(tmp_path / "x.pth"))
    assert "is a folder" in one_line_error(LavisBlipAdapter, str(tmp_path))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    assert "is not a PyTorch checkpoint" in one_line_error(LavisBlipAdapter, str(garbage))


def test_checkpoint_without_itm_head(tmp_path, blip_checkpoint):
    state = torch.load(blip_checkpoint, weights_only=True)["model"]
    del state["itm_head.weight"], state["itm_head.bias"]
    shutil.copy(blip_checkpoint.parent / "vocab.txt", tmp_path / "vocab.txt")
    torch.save({"model": state}, tmp_path / "pretrain.pth")
    message = one_line_error(LavisBlipAdapter, str(tmp_path / "pretrain.pth"))
    assert "has no image-text-matching weights (missing itm_head.weight)" in message
    assert "'large-flickr'" in message


def test_albef_checkpoint_is_not_a_blip_one(albef_checkpoint):
    """The tiny ALBEF embeds BERT's vocabulary only, without BLIP's [DEC] and [ENC]."""
    rows = len((albef_checkpoint.parent / "vocab.txt").read_text().split())
    message = one_line_error(LavisBlipAdapter, str(albef_checkpoint))
    assert f"the tokenizer has token ids up to {rows + 1} but {str(albef_checkpoint)!r} embeds {rows}" in message


def test_vocabulary_with_ids_beyond_the_embeddings(tmp_path, albef_checkpoint):
    """A repeated line in vocab.txt leaves len(tokenizer) small but pushes later ids past the table."""
    shutil.copy(albef_checkpoint, tmp_path / "albef.pth")
    lines = (albef_checkpoint.parent / "vocab.txt").read_text().split()
    (tmp_path / "vocab.txt").write_text("\n".join(lines[:10] + ["a"] + lines[10:]) + "\n")
    message = one_line_error(AlbefAdapter, str(tmp_path / "albef.pth"))
    assert f"token ids up to {len(lines)}" in message and f"embeds {len(lines)}" in message


def test_checkpoint_of_other_shapes(tmp_path, blip_checkpoint):
    state = torch.load(blip_checkpoint, weights_only=True)["model"]
    state["itm_head.weight"] = torch.zeros(2, 64)
    shutil.copy(blip_checkpoint.parent / "vocab.txt", tmp_path / "vocab.txt")
    torch.save({"model": state}, tmp_path / "odd.pth")
    adapter = LavisBlipAdapter(str(tmp_path / "odd.pth"))
    with pytest.raises(pnpseg.ModelLoadError, match="does not fit LAVIS BLIP \\(size mismatch for itm_head.weight"):
        adapter.forward(torch.zeros(1, 3, 64, 64), adapter.tokenize(["cat"]), [0])
