"""The BridgeTower adapter on a tiny random ``BridgeTowerForImageAndTextRetrieval``.

Real weights cannot be downloaded here; the real classes with a small config exercise the
loading paths, hooks, shapes, gradients, chunking and the CLI.
"""

from __future__ import annotations

import json

import hf_checks
import pytest
import torch
from hf_checks import random_pixels
from tiny_models import TINY_BRIDGETOWER_TEXT_LIMIT, build_tiny_bridgetower, build_tiny_vilt

import pnpseg
from pnpseg.plugins import lookup

pytest.importorskip("pnpseg_bridgetower")


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return build_tiny_bridgetower(tmp_path_factory.mktemp("tiny-bridgetower"))


@pytest.fixture(scope="module")
def adapter(tiny_path):
    return lookup("adapters", "bridgetower")(model=str(tiny_path))


def test_loads_through_plugin_registry_lazily(tiny_path):
    from pnpseg_bridgetower import BridgeTowerAdapter

    adapter = hf_checks.load_lazily("bridgetower", tiny_path, BridgeTowerAdapter)
    assert adapter.num_layers == 3  # cross-modal layer pairs
    assert adapter.num_heads == 8  # the text config's heads, not the top-level (4)
    assert adapter.patch_size == 16
    assert adapter.max_text_length == TINY_BRIDGETOWER_TEXT_LIMIT  # 26 positions - (pad 1 + 1)
    words = hf_checks.token_pieces(adapter, "A picture of cat grass")  # <s> … </s>
    assert words == ["A", "picture", "of", "cat", "grass"]


def test_default_params_are_the_papers():
    from pnpseg_bridgetower import BridgeTowerAdapter

    p = pnpseg.SegmentParams.build(BridgeTowerAdapter.default_params)  # the adapter states only what differs
    assert (p.layer, p.head, p.threshold, p.image_size) == (2, 8, 0.15, (336, 336))


@pytest.mark.parametrize("size, grid", [((64, 96), (4, 6)), ((96, 64), (6, 4))])
def test_attention_shapes_and_grid(adapter, size, grid):
    out, t = hf_checks.forward_two_prompts(adapter, size, [1, 0], grid)
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
    for row, col, grid_w, deviation in hf_checks.repainted_patch_deviations(adapter, pixels, text, cells, seed=2):
        assert int(deviation.argmax()) == row * grid_w + col


def test_one_image_is_broadcast_across_prompts_and_layers_may_be_empty(adapter):
    hf_checks.check_broadcast_and_empty_layers(adapter)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(tiny_path, adapter):
    hf_checks.check_cuda_matches_cpu("bridgetower", tiny_path, adapter)


def _reference_gradients(adapter, pixels, text, layers):
    """∂match/∂probs with a full autograd graph (parameters temporarily trainable)."""
    from pnpseg_bridgetower.adapter import cross_attention_module

    model = adapter._ensure_model()
    captured, handles = {}, []
    for layer in layers:
        hook = lambda _m, _i, out, layer=layer: captured.__setitem__(layer, out[1])  # noqa: E731
        handles.append(cross_attention_module(model, layer).register_forward_hook(hook))
    model.requires_grad_(True)
    try:
        out = model.bridgetower(
            input_ids=text.input_ids,
            attention_mask=text.attention_mask,
            pixel_values=pixels,
            interpolate_pos_encoding=True,
        )
        logit = model.itm_score(out.pooler_output)[:, 1]
        return torch.autograd.grad(logit.sum(), [captured[layer] for layer in layers])
    finally:
        model.requires_grad_(False)
        for handle in handles:
            handle.remove()


def test_gradients_exact_nonzero_and_no_parameter_grads(adapter):
    # The graph starting at the first requested layer gives the full-graph gradients.
    text = adapter.tokenize(["A picture of cat dog", "A picture of sky red"])
    hf_checks.check_exact_gradients(
        adapter, text, [0, 1], (4, 6), _reference_gradients, to_block=lambda ref: ref[..., 1:], atol=1e-7
    )


NAMES = ["cat", "dog", "zebra", "giraffe", "traffic light", "grass", "sky"]


def test_long_prompt_is_chunked_like_running_the_chunks_by_hand(adapter):
    from pnpseg.method.prompts import build_prompt

    full = adapter.tokenize([build_prompt(NAMES)[0]])
    assert full.input_ids.shape[1] > adapter.max_text_length  # one prompt would not fit
    hf_checks.check_chunking_matches_by_hand(adapter, NAMES, (4, 6), atol=1e-9)


def test_bad_model_sources(tmp_path, tiny_path):
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


def test_checkpoint_without_itm_head_is_refused(tmp_path, tiny_path):
    hf_checks.check_headless_checkpoint_refused(
        tmp_path, tiny_path, "BridgeTowerModel", "bridgetower", (32, 32), match="no image-text-matching weights"
    )


def test_offline_default_model_is_one_line_error(tmp_path):
    hf_checks.check_offline_default_model_is_one_line_error(
        tmp_path, "bridgetower", "BridgeTower/bridgetower-large-itm-mlm-itc"
    )


def test_cli_segment_end_to_end(tmp_path, tiny_path):
    out = hf_checks.run_cli_segment(tmp_path, tiny_path, "bridgetower", ["cat", "dog", "grass"], "--image-size", "64")
    assert json.loads((out / "classes.json").read_text()) == {"0": "background", "1": "cat", "2": "dog", "3": "grass"}
