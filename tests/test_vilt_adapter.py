"""The ViLT adapter on a tiny random ``ViltForImageAndTextRetrieval``.

Besides shapes, gradients, chunking (ViLT holds only 40 text tokens) and the CLI, these
tests pin down ViLT's trap: ``visual_embed`` shuffles the patches, and the adapter must put
the attention columns back in row-major order.
"""

from __future__ import annotations

import hf_checks
import pytest
import torch
from hf_checks import random_pixels
from tiny_models import build_tiny_bridgetower, build_tiny_vilt

import pnpseg
from pnpseg.plugins import lookup

pytest.importorskip("pnpseg_vilt")


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return build_tiny_vilt(tmp_path_factory.mktemp("tiny-vilt"))


@pytest.fixture(scope="module")
def adapter(tiny_path):
    return lookup("adapters", "vilt")(model=str(tiny_path))


@pytest.fixture
def force_patch_order(adapter, monkeypatch):
    """Make ``visual_embed`` emit the patches in a chosen order: ``order[j]`` is the
    row-major index of the patch at position j (the real one samples a random order)."""
    embeddings = adapter._ensure_model().vilt.embeddings
    original = embeddings.visual_embed

    def install(make_order):
        def visual_embed(pixel_values, pixel_mask, max_image_length=200):
            x, mask, (index, grid) = original(pixel_values, pixel_mask, max_image_length=max_image_length)
            flat = index[..., 0] * grid[1] + index[..., 1]
            order = make_order(flat.shape[1])
            pick = flat.argsort(dim=1)[:, order]  # positions of row-major patches order[0], order[1], ...

            def take(t):  # reorder the patches after the image CLS of a (B, 1+N, ...) tensor
                gather_index = pick.view(*pick.shape, *[1] * (t.dim() - 2)).expand(-1, -1, *t.shape[2:])
                return torch.cat([t[:, :1], t[:, 1:].gather(1, gather_index)], dim=1)

            new_index = index.gather(1, pick[..., None].expand(-1, -1, 2))
            return take(x), take(mask), (new_index, grid)

        monkeypatch.setattr(embeddings, "visual_embed", visual_embed)

    return install


def test_loads_through_plugin_registry_lazily(tiny_path):
    from pnpseg_vilt import ViltAdapter

    adapter = hf_checks.load_lazily("vilt", tiny_path, ViltAdapter)
    assert (adapter.num_layers, adapter.num_heads, adapter.patch_size) == (9, 10, 32)
    assert adapter.max_text_length == 40
    pieces = hf_checks.token_pieces(adapter, "A picture of cat elephant")  # [CLS] … [SEP]
    assert pieces[:4] == ["A", "picture", "of", "cat"] and "".join(pieces[4:]) == "elephant"


def test_default_params():
    from pnpseg_vilt import ViltAdapter

    p = pnpseg.SegmentParams.build(ViltAdapter.default_params)  # the adapter states only what differs
    assert (p.layer, p.head, p.threshold, p.image_size) == (8, 10, 0.15, (384, 384))


@pytest.mark.parametrize("size, grid", [((64, 96), (2, 3)), ((96, 64), (3, 2))])
def test_attention_shapes_and_grid(adapter, size, grid):
    out, t = hf_checks.forward_two_prompts(adapter, size, [3, 0], grid)
    n = grid[0] * grid[1]
    for attention in out.attentions:
        assert attention.shape == (2, adapter.num_heads, t + 1 + n, t + 1 + n)  # [text; image CLS; patches]
        block = out.to_text_image(attention)
        assert block.shape == (2, adapter.num_heads, t, n)
        # the same columns as the raw patch block, only reordered: no text or image-CLS column
        torch.testing.assert_close(block.sort(-1).values, attention[..., :t, t + 1 :].sort(-1).values)


def test_shuffled_patches_are_put_back_in_row_major_order(adapter, force_patch_order):
    """Any patch order fed to the model gives the same row-major maps (and logit)."""
    pixels = random_pixels(adapter, (96, 128), seed=4)  # 3 x 4 patches
    text = adapter.tokenize(["A picture of cat dog"])
    t = text.input_ids.shape[1]
    results = {}
    for name, make_order in {
        "row-major": lambda n: torch.arange(n),
        "reversed": lambda n: torch.arange(n).flip(0),
        "scrambled": lambda n: torch.randperm(n, generator=torch.Generator().manual_seed(5)),
    }.items():
        force_patch_order(make_order)
        out = adapter.forward(pixels, text, [2])
        results[name] = (out, out.attentions[0].detach())
    ref_out, ref = results["row-major"]
    torch.testing.assert_close(ref_out.to_text_image(ref), ref[..., :t, t + 1 :])
    for name in ("reversed", "scrambled"):
        out, attention = results[name]
        assert not torch.allclose(attention[..., :t, t + 1 :], ref[..., :t, t + 1 :], atol=1e-6)  # really reordered
        torch.testing.assert_close(out.to_text_image(attention), ref_out.to_text_image(ref), rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(out.match_logit, ref_out.match_logit, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("size", [(64, 96), (96, 128)])
def test_attention_columns_follow_a_repainted_patch(adapter, force_patch_order, size):
    """Layer 1's keys are per-patch, so repainting patch (row, col) changes only the
    attention to column row*grid_w + col (others move by the softmax normaliser alone).
    The model sees the patches in reverse order, so an unsorted column block fails."""
    force_patch_order(lambda n: torch.arange(n).flip(0))
    pixels = random_pixels(adapter, size, seed=6)
    text = adapter.tokenize(["A picture of cat dog"])
    cells = lambda grid_h, grid_w: [(0, 0), (grid_h - 1, 1), (1, grid_w - 1)]  # noqa: E731
    for row, col, grid_w, deviation in hf_checks.repainted_patch_deviations(adapter, pixels, text, cells, seed=7):
        assert int(deviation.argmax()) == row * grid_w + col
        assert (deviation > 1e-4).sum() == 1


def test_forward_leaves_global_rng_alone(adapter):
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    adapter.forward(random_pixels(adapter, (64, 64)), adapter.tokenize(["A picture of cat"]), [0])
    torch.testing.assert_close(torch.rand(3), expected)


def test_one_image_is_broadcast_across_prompts_and_layers_may_be_empty(adapter):
    hf_checks.check_broadcast_and_empty_layers(adapter)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(tiny_path, adapter):
    hf_checks.check_cuda_matches_cpu("vilt", tiny_path, adapter)


def _reference_gradients(adapter, pixels, text, layers):
    """∂score/∂probs with a full autograd graph (parameters temporarily trainable), with the
    patches embedded in row-major order by hand."""
    model = adapter._ensure_model()
    b, _, h, w = pixels.shape
    model.requires_grad_(True)
    try:
        embeds, mask, (index, grid) = model.vilt.embeddings.visual_embed(
            pixels, torch.ones(b, h, w, dtype=torch.long), max_image_length=-1
        )
        pick = (index[..., 0] * grid[1] + index[..., 1]).argsort(dim=1)[..., None]
        embeds = torch.cat([embeds[:, :1], embeds[:, 1:].gather(1, pick.expand(-1, -1, embeds.shape[-1]))], dim=1)
        out = model.vilt(
            input_ids=text.input_ids,
            attention_mask=text.attention_mask,
            image_embeds=embeds,
            pixel_mask=mask,
            output_attentions=True,
        )
        score = model.rank_output(out.pooler_output)[:, 0]
        return torch.autograd.grad(score.sum(), [out.attentions[layer] for layer in layers])
    finally:
        model.requires_grad_(False)


def test_gradients_exact_nonzero_and_no_parameter_grads(adapter):
    text = adapter.tokenize(["A picture of cat dog", "A picture of sky red"])
    t = text.input_ids.shape[1]
    hf_checks.check_exact_gradients(
        adapter, text, [1, 4], (2, 3), _reference_gradients, to_block=lambda ref: ref[..., :t, t + 1 :], atol=1e-8
    )


NAMES = ["cat", "dog", "elephant", "giraffe", "zebra", "traffic light", "grass", "sky", "umbrella"]


def test_long_prompt_is_chunked_like_running_the_chunks_by_hand(adapter):
    from pnpseg.method.prompts import build_prompt

    full = adapter.tokenize([build_prompt(NAMES)[0]])
    assert full.input_ids.shape[1] > 40  # one prompt would not fit ViLT
    with pytest.raises(ValueError, match="ViLT allows 40"):
        adapter.forward(random_pixels(adapter, (64, 96)), full, [0])
    hf_checks.check_chunking_matches_by_hand(adapter, NAMES, (2, 3), atol=1e-10)


def test_bad_model_sources(tmp_path):
    factory = lookup("adapters", "vilt")
    with pytest.raises(pnpseg.ModelLoadError, match="no model folder"):
        factory(model=str(tmp_path / "missing"))
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(pnpseg.ModelLoadError, match="not a ViLT image-text retrieval model"):
        factory(model=str(tmp_path))
    bridgetower = build_tiny_bridgetower(tmp_path / "bridgetower")
    with pytest.raises(pnpseg.ModelLoadError, match="'bridgetower' model, not ViLT"):
        factory(model=str(bridgetower))


def test_checkpoint_without_retrieval_head_is_refused(tmp_path, tiny_path):
    hf_checks.check_headless_checkpoint_refused(
        tmp_path, tiny_path, "ViltForMaskedLM", "vilt", (64, 64), match="no image-text retrieval head"
    )


def test_offline_default_model_is_one_line_error(tmp_path):
    hf_checks.check_offline_default_model_is_one_line_error(tmp_path, "vilt", "dandelin/vilt-b32-finetuned-coco")


def test_cli_segment_end_to_end(tmp_path, tiny_path):
    # more than 40 tokens: chunked
    hf_checks.run_cli_segment(tmp_path, tiny_path, "vilt", NAMES, "--image-size", "64x96", "--drop-rounds", "2")
