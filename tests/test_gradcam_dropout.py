import torch
from fakes import LinearAdapter, word_tokenize

from pnpseg.method.dropout import drop_median, drop_patches, drop_topk
from pnpseg.method.gradcam import capture, class_maps, gradcam
from pnpseg.method.params import SegmentParams
from pnpseg.method.prompts import plan_prompts
from pnpseg.method.saliency import Batch, saliency_maps


def test_gradcam_keeps_positive_gradient_only():
    attention = torch.tensor([0.2, 0.3, 0.5])
    gradient = torch.tensor([1.0, -2.0, 0.5])
    assert torch.allclose(gradcam(attention, gradient), torch.tensor([0.2, 0.0, 0.25]))


def test_class_maps_average_tokens():
    cam = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [3.0, 3.0]]])  # (B=1, T=3, P=2)
    weights = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]])  # class 0 = tokens 0,1; class 1 = token 2
    assert class_maps(cam, weights).tolist() == [[[0.5, 0.5], [3.0, 3.0]]]


def test_median_rule_drops_upper_half_of_remaining_and_never_zero_saliency():
    saliency = torch.tensor([[0.1, 0.5, 0.3, 0.0, 0.9]])
    first = drop_median(saliency, torch.zeros(1, 5, dtype=torch.bool))
    assert first.tolist() == [[False, True, True, False, True]]
    second = drop_median(saliency, first)  # remaining 0.1 and 0.0: median 0.0, only 0.1 is > 0
    assert second.tolist() == [[True, False, False, False, False]]


def test_topk_rule_and_parser():
    saliency = torch.tensor([[0.1, 0.5, 0.3, 0.0, 0.9], [0.0, 0.0, 0.0, 0.0, 0.2]])
    dropped = torch.tensor([[False, False, False, False, True], [False] * 5])
    new = drop_topk(saliency, dropped, 2)
    assert new.tolist() == [[False, True, True, False, False], [False, False, False, False, True]]
    assert torch.equal(drop_patches("topk:2", saliency, dropped), new)


def test_capture_returns_exact_gradient():
    values = torch.randn(2, 8, 6)
    adapter = LinearAdapter(values)
    pixels = torch.rand(1, 1, 2, 3)
    text = word_tokenize(["A picture of x"])
    attentions, gradients, grid = capture(adapter, pixels, text, [0])
    assert tuple(grid) == (2, 3)
    assert torch.allclose(gradients[0][0], values[:, :6])
    assert torch.allclose(attentions[0], adapter.attention(pixels, text))


def reference_saliency(adapter, pixels, prompt, class_tokens, params):
    """docs/method.md §1–3 written out plainly, one class and one round at a time."""
    text = word_tokenize([prompt])
    total = 0
    dropped = torch.zeros(pixels[0, 0].numel(), dtype=torch.bool)
    for _round in range(params.drop_rounds):
        image = pixels.clone()
        image[0, 0].view(-1)[dropped] = 0.0
        attention = adapter.attention(image, text).requires_grad_(True)
        match = (attention * adapter.values[None, :, : attention.shape[2]]).sum()
        match.backward()
        cam = attention.grad.clamp(min=0) * attention.detach()
        head = cam[0, params.head - 1]
        maps = torch.stack([head[tokens].mean(0) for tokens in class_tokens])
        maps[:, dropped] = 0
        total = total + maps
        u = maps.sum(0)
        remaining = ~dropped
        median = u[remaining].median()
        dropped = dropped | (remaining & (u >= median) & (u > 0))
    return total


def test_saliency_rounds_match_plain_reference():
    torch.manual_seed(0)
    adapter = LinearAdapter(torch.rand(2, 8, 6) - 0.3)
    pixels = torch.rand(1, 1, 2, 3)
    params = SegmentParams.build(adapter.default_params, {"drop_rounds": 3, "head": 2})
    plan = plan_prompts(["cat", "traffic light"], adapter.tokenize, 16)
    maps = saliency_maps(adapter, pixels, Batch.build([plan], [2]), params)[0]
    expected = reference_saliency(adapter, pixels, "A picture of cat traffic light", [[4], [5, 6]], params)
    assert maps.shape == (2, 2, 3)
    assert torch.allclose(maps.flatten(1), expected, atol=1e-6)
    assert adapter.calls == 3


def test_chunked_prompts_equal_running_the_chunks_by_hand():
    torch.manual_seed(1)
    adapter = LinearAdapter(torch.rand(2, 8, 6))
    pixels = torch.rand(1, 1, 2, 3)
    params = SegmentParams.build(adapter.default_params, {"drop_rounds": 1})
    names = list("abcdefg")
    chunked = saliency_maps(adapter, pixels, Batch.build([plan_prompts(names, adapter.tokenize, 8)], [7]), params)[0]
    by_hand = torch.cat(
        [
            saliency_maps(
                adapter, pixels, Batch.build([plan_prompts(part, adapter.tokenize, 64)], [len(part)]), params
            )[0]
            for part in (names[:3], names[3:6], names[6:])
        ]
    )
    assert torch.allclose(chunked, by_hand)


def test_authors_compat_counts_round_one_twice():
    adapter = LinearAdapter(torch.rand(2, 8, 6))
    pixels = torch.rand(1, 1, 2, 3)
    plan = plan_prompts(["a"], adapter.tokenize, 16)
    one = SegmentParams.build(adapter.default_params, {"drop_rounds": 1})
    authors = SegmentParams.build(adapter.default_params, {"drop_rounds": 1, "compat": "authors"})
    paper = saliency_maps(adapter, pixels, Batch.build([plan], [1]), one)[0]
    doubled = saliency_maps(adapter, pixels, Batch.build([plan], [1]), authors)[0]
    assert torch.allclose(doubled, 2 * paper)


def test_batch_with_different_class_lists_per_image():
    adapter = LinearAdapter(torch.rand(2, 8, 6))
    pixels = torch.rand(2, 1, 2, 3)
    params = SegmentParams.build(adapter.default_params, {"drop_rounds": 2})
    plans = [plan_prompts(["a", "b"], adapter.tokenize, 16), plan_prompts(["c"], adapter.tokenize, 16)]
    together = saliency_maps(adapter, pixels, Batch.build(plans, [2, 1]), params)
    alone = [
        saliency_maps(adapter, pixels[i : i + 1], Batch.build([plans[i]], [n]), params)[0] for i, n in ((0, 2), (1, 1))
    ]
    assert [m.shape[0] for m in together] == [2, 1]
    for a, b in zip(together, alone):
        assert torch.allclose(a, b, atol=1e-6)
