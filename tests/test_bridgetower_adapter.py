"""The BridgeTower adapter on a tiny random ``BridgeTowerForImageAndTextRetrieval``.

Real weights cannot be downloaded here; the real classes with a small config exercise the
loading paths, hooks, shapes, gradients, chunking and the CLI.
"""

from __future__ import annotations

import json

import pytest
import torch
from cli_run import run_cli_segment
from tiny_models import TINY_BRIDGETOWER_TEXT_LIMIT, build_tiny_vilt

import pnpseg
from pnpseg.plugins import lookup
from pnpseg.testing import check_adapter, compare_devices, repainted_patch_deviations

pytest.importorskip("pnpseg_bridgetower")

from pnpseg_hf import eager  # noqa: E402
from pnpseg_hf.testing import offline_default_model_error, resave_as  # noqa: E402


def random_pixels(adapter, size, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *size, generator=g).to(adapter.device)


@pytest.fixture(scope="module")
def adapter(tiny_bridgetower):
    return lookup("adapters", "bridgetower")(model=str(tiny_bridgetower))


def test_loads_through_plugin_registry_lazily(tiny_bridgetower):
    from pnpseg_bridgetower import BridgeTowerAdapter

    adapter = lookup("adapters", "bridgetower")(model=str(tiny_bridgetower))
    assert isinstance(adapter, BridgeTowerAdapter) and not adapter.weights_loaded
    assert adapter.num_layers == 3  # cross-modal layer pairs
    assert adapter.num_heads == 8  # the text config's heads, not the top-level (4)
    assert adapter.patch_size == 16
    assert adapter.max_text_length == TINY_BRIDGETOWER_TEXT_LIMIT  # 26 positions - (pad 1 + 1)
    prompt = "A picture of cat grass"
    offsets = adapter.tokenize([prompt]).offsets[0]  # <s> … </s>
    assert offsets[0] == offsets[-1] == (0, 0)
    assert [prompt[a:b] for a, b in offsets if b > a] == ["A", "picture", "of", "cat", "grass"]
    assert not adapter.weights_loaded


def test_default_params_are_the_papers():
    from pnpseg_bridgetower import BridgeTowerAdapter

    p = pnpseg.SegmentParams.build(BridgeTowerAdapter.default_params)  # the adapter states only what differs
    assert (p.layer, p.head, p.threshold, p.image_size) == (2, 8, 0.15, (336, 336))


@pytest.mark.parametrize("size, grid", [((64, 96), (4, 6)), ((96, 64), (6, 4))])
def test_attention_shapes_and_grid(adapter, size, grid):
    text = adapter.tokenize(["A picture of cat dog", "A picture of sky"])
    out = adapter.forward(random_pixels(adapter, size, batch=2), text, [1, 0])
    t = text.input_ids.shape[1]
    assert out.grid == grid and out.match_logit.shape == (2,)
    for attention in out.attentions:
        assert attention.shape == (2, adapter.num_heads, t, 1 + grid[0] * grid[1])  # [image CLS; patches]
        torch.testing.assert_close(attention.sum(-1), torch.ones(2, adapter.num_heads, t))
        block = out.to_text_image(attention)
        assert block.shape == (2, adapter.num_heads, t, grid[0] * grid[1])
        torch.testing.assert_close(block, attention[..., 1:])


@pytest.mark.parametrize("size", [(64, 96), (96, 64)])
def test_patch_columns_are_row_major(adapter, size):
    """Repainting the patch at (row, col) changes the attention to column row*grid_w + col.

    Every key's attention changes through the softmax normaliser by the same factor; the
    repainted patch's own column stands out. Uses the grid the adapter reports, so a
    transposed grid or column order fails.
    """
    pixels = random_pixels(adapter, size, seed=1)
    text = adapter.tokenize(["A picture of cat dog"])
    cells = lambda grid_h, grid_w: [(0, grid_w - 1), (grid_h - 1, 1), (1, 0)]  # noqa: E731
    for row, col, grid_w, deviation in repainted_patch_deviations(adapter, pixels, text, cells, seed=2):
        assert int(deviation.argmax()) == row * grid_w + col


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(tiny_bridgetower, adapter):
    gpu = lookup("adapters", "bridgetower")(model=str(tiny_bridgetower), device="cuda")
    compare_devices(adapter, gpu, (64, 96), [1])


def _reference_gradients(adapter, pixels, text, layers):
    """∂match/∂probs through the model's own forward with a full autograd graph (parameters
    temporarily trainable), cut to the text→patch block."""
    from pnpseg_bridgetower.adapter import cross_attention_module

    model = adapter.model
    captured, handles = {}, []
    for layer in layers:
        hook = lambda _m, _i, out, layer=layer: captured.__setitem__(layer, out[1])  # noqa: E731
        handles.append(cross_attention_module(model, layer).register_forward_hook(hook))
    model.requires_grad_(True)
    try:
        with eager(cross_attention_module(model, layer) for layer in layers):  # probabilities, as captured
            out = model.bridgetower(
                input_ids=text.input_ids,
                attention_mask=text.attention_mask,
                pixel_values=pixels,
                interpolate_pos_encoding=True,
            )
        logit = model.itm_score(out.pooler_output)[:, 1]
        grads = torch.autograd.grad(logit.sum(), [captured[layer] for layer in layers])
        return [grad[..., 1:] for grad in grads]
    finally:
        model.requires_grad_(False)
        for handle in handles:
            handle.remove()


@pytest.mark.slow
def test_conformance(adapter):
    """Every clause of the protocol; gradients equal the full-graph ones of the model's own
    forward, although the adapter's graph starts at the first requested layer."""
    report = check_adapter(adapter, size=(64, 96), layers=[1, 0], reference_gradients=_reference_gradients, atol=1e-7)
    assert not report.skipped


NAMES = ["cat", "dog", "zebra", "giraffe", "traffic light", "grass", "sky"]


def test_long_prompt_is_too_long_for_one_prompt(adapter):
    from pnpseg.method.prompts import build_prompt

    full = adapter.tokenize([build_prompt(NAMES)[0]])
    assert full.input_ids.shape[1] > adapter.max_text_length  # one prompt would not fit
    with pytest.raises(ValueError, match="BridgeTower allows 24"):
        adapter.forward(random_pixels(adapter, (64, 96)), full, [0])


def test_bad_model_sources(tmp_path, tiny_bridgetower):
    factory = lookup("adapters", "bridgetower")
    with pytest.raises(pnpseg.ModelLoadError, match="no model folder"):
        factory(model=str(tmp_path / "missing"))
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(pnpseg.ModelLoadError, match="not a BridgeTower image-text-matching model"):
        factory(model=str(tmp_path))
    with pytest.raises(pnpseg.ModelLoadError, match="is a file"):
        factory(model=str(tmp_path / "notes.txt"))
    vilt = build_tiny_vilt(tmp_path / "vilt")
    with pytest.raises(pnpseg.ModelLoadError, match="'vilt' model, not BridgeTower"):
        factory(model=str(vilt))


def test_checkpoint_without_itm_head_is_refused(tmp_path, tiny_bridgetower):
    adapter = lookup("adapters", "bridgetower")(
        model=str(resave_as(tiny_bridgetower, tmp_path / "bare", "BridgeTowerModel"))
    )
    text = adapter.tokenize(["A picture of cat"])
    with pytest.raises(pnpseg.ModelLoadError, match="no image-text-matching weights"):
        adapter.forward(random_pixels(adapter, (32, 32)), text, [0])


@pytest.mark.slow
def test_offline_default_model_is_one_line_error(tmp_path):
    from pnpseg_bridgetower import BridgeTowerAdapter

    message = offline_default_model_error(BridgeTowerAdapter, tmp_path)
    assert message.startswith("ModelLoadError: model 'BridgeTower/bridgetower-large-itm-mlm-itc' is not in the local")
    assert "--model PATH" in message and "'bridgetower'" in message and "\n" not in message


@pytest.mark.slow
def test_cli_segment_end_to_end(tmp_path, tiny_bridgetower):
    out = run_cli_segment(tmp_path, tiny_bridgetower, "bridgetower", ["cat", "dog", "grass"], "--image-size", "64")
    assert json.loads((out / "classes.json").read_text()) == {"0": "background", "1": "cat", "2": "dog", "3": "grass"}
