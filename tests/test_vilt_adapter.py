"""The ViLT adapter on a tiny random ``ViltForImageAndTextRetrieval``.

Besides shapes, gradients, chunking (ViLT holds only 40 text tokens) and the CLI, these
tests pin down ViLT's trap: ``visual_embed`` shuffles the patches, and the adapter must put
the attention columns back in row-major order.
"""

from __future__ import annotations

import pytest
import torch
from cli_run import run_cli_segment
from tiny_models import build_tiny_bridgetower

import pnpseg
from pnpseg.plugins import lookup
from pnpseg.testing import check_adapter, compare_devices, repainted_patch_deviations

pytest.importorskip("pnpseg_vilt")

from pnpseg_hf import eager  # noqa: E402
from pnpseg_hf.testing import offline_default_model_error, resave_as  # noqa: E402


def random_pixels(adapter, size, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *size, generator=g).to(adapter.device)


@pytest.fixture(scope="module")
def adapter(tiny_vilt):
    return lookup("adapters", "vilt")(model=str(tiny_vilt))


@pytest.fixture
def force_patch_order(adapter, monkeypatch):
    """Make ``visual_embed`` emit the patches in a chosen order: ``order[j]`` is the
    row-major index of the patch at position j (the real one samples a random order)."""
    embeddings = adapter.model.vilt.embeddings
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


def test_loads_through_plugin_registry_lazily(tiny_vilt):
    from pnpseg_vilt import ViltAdapter

    adapter = lookup("adapters", "vilt")(model=str(tiny_vilt))
    assert isinstance(adapter, ViltAdapter) and not adapter.weights_loaded
    assert (adapter.num_layers, adapter.num_heads, adapter.patch_size) == (9, 10, 32)
    assert adapter.max_text_length == 40
    prompt = "A picture of cat elephant"
    offsets = adapter.tokenize([prompt]).offsets[0]  # [CLS] … [SEP]
    assert offsets[0] == offsets[-1] == (0, 0) and not adapter.weights_loaded
    pieces = [prompt[a:b] for a, b in offsets if b > a]
    assert pieces[:4] == ["A", "picture", "of", "cat"] and "".join(pieces[4:]) == "elephant"


def test_default_params():
    from pnpseg_vilt import ViltAdapter

    p = pnpseg.SegmentParams.build(ViltAdapter.default_params)  # the adapter states only what differs
    assert (p.layer, p.head, p.threshold, p.image_size) == (8, 10, 0.15, (384, 384))


@pytest.mark.parametrize("size, grid", [((64, 96), (2, 3)), ((96, 64), (3, 2))])
def test_attention_shapes_and_grid(adapter, size, grid):
    text = adapter.tokenize(["A picture of cat dog", "A picture of sky"])
    out = adapter.forward(random_pixels(adapter, size, batch=2), text, [3, 0])
    t = text.input_ids.shape[1]
    assert out.grid == grid and out.match_logit.shape == (2,)
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
    for row, col, grid_w, deviation in repainted_patch_deviations(adapter, pixels, text, cells, seed=7):
        assert int(deviation.argmax()) == row * grid_w + col
        assert (deviation > 1e-4).sum() == 1


def test_forward_leaves_global_rng_alone(adapter):
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    adapter.forward(random_pixels(adapter, (64, 64)), adapter.tokenize(["A picture of cat"]), [0])
    torch.testing.assert_close(torch.rand(3), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(tiny_vilt, adapter):
    gpu = lookup("adapters", "vilt")(model=str(tiny_vilt), device="cuda")
    compare_devices(adapter, gpu, (64, 96), [1])


def _reference_gradients(adapter, pixels, text, layers):
    """∂score/∂probs with a full autograd graph (parameters temporarily trainable), with the
    patches embedded in row-major order by hand; cut to the text→patch block."""
    model = adapter.model
    b, _, h, w = pixels.shape
    model.requires_grad_(True)
    try:
        embeds, mask, (index, grid) = model.vilt.embeddings.visual_embed(
            pixels, torch.ones(b, h, w, dtype=torch.long), max_image_length=-1
        )
        pick = (index[..., 0] * grid[1] + index[..., 1]).argsort(dim=1)[..., None]
        embeds = torch.cat([embeds[:, :1], embeds[:, 1:].gather(1, pick.expand(-1, -1, embeds.shape[-1]))], dim=1)
        with eager(model.vilt.encoder.layer[layer].attention.attention for layer in layers):  # as captured
            out = model.vilt(
                input_ids=text.input_ids,
                attention_mask=text.attention_mask,
                image_embeds=embeds,
                pixel_mask=mask,
                output_attentions=True,
            )
        score = model.rank_output(out.pooler_output)[:, 0]
        t = text.input_ids.shape[1]
        grads = torch.autograd.grad(score.sum(), [out.attentions[layer] for layer in layers])
        return [grad[..., :t, t + 1 :] for grad in grads]
    finally:
        model.requires_grad_(False)


def test_conformance(adapter):
    """Every clause of the protocol; gradients equal those of the model's own forward with
    a full graph and the patches in row-major order."""
    report = check_adapter(adapter, size=(64, 96), layers=[4, 1], reference_gradients=_reference_gradients, atol=1e-8)
    assert report.skipped == {"vision modules": "no vision_modules()"}  # single-stream: no separate tower


NAMES = ["cat", "dog", "elephant", "giraffe", "zebra", "traffic light", "grass", "sky", "umbrella"]


def test_long_prompt_is_refused_by_forward(adapter):
    from pnpseg.method.prompts import build_prompt

    full = adapter.tokenize([build_prompt(NAMES)[0]])
    assert full.input_ids.shape[1] > 40  # one prompt would not fit ViLT
    with pytest.raises(ValueError, match="ViLT allows 40"):
        adapter.forward(random_pixels(adapter, (64, 96)), full, [0])


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


def test_checkpoint_without_retrieval_head_is_refused(tmp_path, tiny_vilt):
    adapter = lookup("adapters", "vilt")(model=str(resave_as(tiny_vilt, tmp_path / "mlm", "ViltForMaskedLM")))
    text = adapter.tokenize(["A picture of cat"])
    with pytest.raises(pnpseg.ModelLoadError, match="no image-text retrieval head"):
        adapter.forward(random_pixels(adapter, (64, 64)), text, [0])


@pytest.mark.slow
def test_offline_default_model_is_one_line_error(tmp_path):
    from pnpseg_vilt import ViltAdapter

    message = offline_default_model_error(ViltAdapter, tmp_path)
    assert message.startswith("ModelLoadError: model 'dandelin/vilt-b32-finetuned-coco' is not in the local")
    assert "--model PATH" in message and "'vilt'" in message and "\n" not in message


@pytest.mark.slow
def test_cli_segment_end_to_end(tmp_path, tiny_vilt):
    # more than 40 tokens: chunked
    run_cli_segment(tmp_path, tiny_vilt, "vilt", NAMES, "--image-size", "64x96", "--drop-rounds", "2")
