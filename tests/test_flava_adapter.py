"""The FLAVA adapter on a tiny random ``FlavaForPreTraining`` (real classes, no download).

FLAVA is the proof that a new Hugging Face family costs little: the plugin is class
attributes, two size hooks and ``forward``. Its joint sequence is ``[mm CLS; image CLS;
patches; text]``; these tests pin that layout down against FLAVA's own forward.
"""

from __future__ import annotations

import pytest
import torch
from cli_run import run_cli_segment
from tiny_models import build_tiny_vilt

import pnpseg
from pnpseg.plugins import lookup
from pnpseg.testing import check_adapter, repainted_patch_deviations

transformers = pytest.importorskip("transformers")
pytest.importorskip("pnpseg_flava")

from pnpseg_flava import FlavaAdapter  # noqa: E402
from pnpseg_hf import eager  # noqa: E402
from pnpseg_hf.testing import offline_default_model_error, resave_as, save_tiny, wordpiece_vocab  # noqa: E402


def build_tiny_flava(folder):
    """A tiny random FlavaForPreTraining + FlavaProcessor saved to ``folder``. Image: ViT
    64 px, patch 16, hidden 32, 2 layers. Text: BERT hidden 32, 2 layers, 64 positions.
    Multimodal: hidden 32, 3 layers × 4 heads. No image codebook (not used)."""
    vocab = wordpiece_vocab()
    tokenizer = transformers.BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=64)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = transformers.FlavaConfig(
        image_config=dict(small, image_size=64, patch_size=16, vocab_size=64),
        text_config=dict(small, vocab_size=len(vocab), max_position_embeddings=64, pad_token_id=0),
        multimodal_config=dict(small, num_hidden_layers=3, num_attention_heads=4),
        image_codebook_config=dict(hidden_size=8, num_groups=1, num_blocks_per_group=1, vocab_size=64),
        hidden_size=32,
        projection_dim=16,
        init_codebook=False,
    )

    def sharpen(model):
        # Random init is position-blind; sharpen so that a wrong patch order shows in the maps.
        model.flava.image_model.embeddings.position_embeddings.mul_(50.0)

    size = {"height": 64, "width": 64}
    image_processor = transformers.FlavaImageProcessor(size=size, crop_size=size)
    processor = transformers.FlavaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return save_tiny(folder, lambda: transformers.FlavaForPreTraining(config), processor, sharpen)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return build_tiny_flava(tmp_path_factory.mktemp("tiny-flava"))


@pytest.fixture(scope="module")
def adapter(tiny_path):
    return FlavaAdapter(str(tiny_path))


def test_conformance(adapter):
    report = check_adapter(adapter, layers=[1, 0])  # raises, naming each failed clause
    assert report.skipped == {"exact gradients": "no reference_gradients given"}


def random_pixels(size, batch=1, seed=0):
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


def test_registered_sizes_from_the_config_and_lazy(tiny_path):
    adapter = lookup("adapters", "flava")(model=str(tiny_path))
    assert isinstance(adapter, FlavaAdapter) and not adapter.weights_loaded
    assert (adapter.num_layers, adapter.num_heads) == (3, 4)  # the multimodal encoder's
    assert (adapter.patch_size, adapter.max_text_length) == (16, 64)
    assert FlavaAdapter.model_description == "FLAVA image-text-matching model"  # derived


def _flava_own_forward(adapter, pixels, text, layers):
    """FLAVA's own ``FlavaModel.forward`` + ITM head, with the multimodal attentions."""
    model = adapter.model
    mm_config = model.flava.multimodal_model.config
    mm_config.output_attentions = True
    try:
        with eager(model.flava.multimodal_model.encoder.layer[i].attention.attention for i in layers):  # as captured
            out = model.flava(
                input_ids=text.input_ids, attention_mask=text.attention_mask, pixel_values=pixels, return_dict=True
            )
    finally:
        mm_config.output_attentions = False
    logit = model.itm_head(out.multimodal_embeddings)[:, 1]
    return logit, [out.multimodal_output.attentions[i] for i in layers]


@pytest.mark.slow
def test_composed_forward_is_flavas_own_at_the_checkpoint_size(adapter):
    text = adapter.tokenize(["A picture of cat dog", "A picture of sky"])
    pixels = random_pixels((64, 64), batch=2, seed=1)
    out = adapter.forward(pixels, text, [2, 0])
    with torch.no_grad():
        logit, attentions = _flava_own_forward(adapter, pixels, text, [2, 0])
    torch.testing.assert_close(out.match_logit.detach(), logit)
    t, n = text.input_ids.shape[1], 16
    for ours, theirs in zip(out.attentions, attentions):
        assert ours.shape == (2, 4, 2 + n + t, 2 + n + t)  # [mm CLS; image CLS; patches; text]
        torch.testing.assert_close(ours.detach(), theirs)
        torch.testing.assert_close(out.to_text_image(ours), ours[..., 2 + n :, 2 : 2 + n])


def _reference_gradients(adapter, pixels, text, layers):
    """∂match/∂probs with a full graph through FLAVA's own modules (parameters trainable),
    cut by hand to text rows and patch columns."""
    model = adapter.model
    flava = model.flava
    model.requires_grad_(True)
    try:
        image = flava.image_model(pixel_values=pixels, interpolate_pos_encoding=True, output_hidden_states=True)
        image = flava.image_to_mm_projection(image.hidden_states[-1])
        words = flava.text_model(
            input_ids=text.input_ids, attention_mask=text.attention_mask, output_hidden_states=True
        )
        words = flava.text_to_mm_projection(words.hidden_states[-1])
        b, n1 = image.shape[:2]
        mask = torch.cat([torch.ones(b, 1 + n1, dtype=torch.long), text.attention_mask], dim=1)
        with eager(flava.multimodal_model.encoder.layer[i].attention.attention for i in layers):  # as captured
            out = flava.multimodal_model(torch.cat([image, words], 1), attention_mask=mask, output_attentions=True)
        logit = model.itm_head(out.last_hidden_state)[:, 1]
        grads = torch.autograd.grad(logit.sum(), [out.attentions[i] for i in layers])
    finally:
        model.requires_grad_(False)
    return [grad[..., 1 + n1 :, 2 : 1 + n1] for grad in grads]


@pytest.mark.slow
def test_gradients_are_exact(adapter):
    report = check_adapter(adapter, layers=[1, 0], reference_gradients=_reference_gradients, atol=1e-8)
    assert "exact gradients" in report.passed


@pytest.mark.parametrize("size", [(64, 96), (96, 64)])
@pytest.mark.slow
def test_patch_columns_are_row_major(adapter, size):
    pixels = random_pixels(size, seed=1)
    text = adapter.tokenize(["A picture of cat dog"])
    cells = lambda grid_h, grid_w: [(0, grid_w - 1), (grid_h - 1, 1), (1, 0)]  # noqa: E731
    for row, col, grid_w, deviation in repainted_patch_deviations(adapter, pixels, text, cells, seed=2):
        assert int(deviation.argmax()) == row * grid_w + col


def test_small_checkpoint_gets_clamped_defaults(adapter):
    from pnpseg.method.segmenter import Segmenter

    segmenter = Segmenter(adapter, postprocess=())
    assert (segmenter.params.layer, segmenter.params.head) == (2, 4)  # defaults 4, 6 on 3 × 4


def test_wrong_checkpoints_are_one_line_errors(tmp_path, tiny_path):
    with pytest.raises(pnpseg.ModelLoadError, match="'vilt' model, not FLAVA; use a FLAVA checkpoint"):
        FlavaAdapter(str(build_tiny_vilt(tmp_path / "vilt")))
    bare = FlavaAdapter(str(resave_as(tiny_path, tmp_path / "bare", "FlavaModel")))
    with pytest.raises(pnpseg.ModelLoadError, match="no image-text-matching weights"):
        bare.forward(random_pixels((32, 32)), bare.tokenize(["a cat"]), [0])


@pytest.mark.slow
def test_offline_default_model_is_one_line_error(tmp_path):
    message = offline_default_model_error(FlavaAdapter, tmp_path)
    assert message.startswith("ModelLoadError: model 'facebook/flava-full' is not in the local cache")
    assert "'flava'" in message and "\n" not in message


@pytest.mark.slow
def test_cli_segment_end_to_end(tmp_path, tiny_path):
    run_cli_segment(tmp_path, tiny_path, "flava", ["cat", "dog", "grass"], "--image-size", "64x96")


def test_pnpseg_plugins_lists_flava():
    from typer.testing import CliRunner

    from pnpseg.cli import app

    result = CliRunner().invoke(app, ["plugins"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    lines = result.output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("flava  (pnpseg-flava"))
    block = [line for line in lines[start + 1 :] if line.startswith("  ")][:3]  # one block per plugin
    assert "  adapters: flava" in block


def test_a_checkpoint_without_the_itm_head_is_one_line_not_a_load_report(tmp_path, tiny_path):
    """transformers' load report (~40 lines of MISSING keys) and tied-weight warnings are
    hidden; pnpseg's one line says what is missing and what to use instead."""
    import subprocess
    import sys

    from pnpseg.testing import make_scene

    bare = resave_as(tiny_path, tmp_path / "bare", "FlavaModel")
    make_scene(32, 32, ["red", "blue"], seed=0)[0].save(tmp_path / "a.png")
    run = subprocess.run(
        [sys.executable, "-m", "pnpseg", "segment", str(tmp_path / "a.png"), "--classes", "red,blue"]
        + ["--adapter", "flava", "--model", str(bare), "--out", str(tmp_path / "out"), "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 3, run.stderr
    assert "LOAD REPORT" not in run.stderr and "MISSING" not in run.stderr and "[transformers]" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "has no image-text-matching weights" in errors[0]
    assert len(run.stderr.strip().splitlines()) <= 3  # the run's header, its progress line, the error
