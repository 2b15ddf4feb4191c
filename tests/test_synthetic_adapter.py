"""The synthetic adapter must be a faithful stand-in for a VLM: right shapes and orientation,
a planted (layer, head) that localises classes, noise elsewhere, a differentiable logit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pnpseg
from pnpseg.plugins import lookup
from pnpseg.testing import COLOURS, SyntheticAdapter, make_scene, miou

TRUE_LAYER, TRUE_HEAD = 2, 1  # the contract: layer 3, head 2 (1-based) carries the signal

PROMPT = "A picture of red blue"
NOISE = [(l, h) for l in range(4) for h in range(4) if (l, h) != (TRUE_LAYER, TRUE_HEAD)]


def patch_fraction(labels: np.ndarray, label: int, patch: int = 16) -> np.ndarray:
    """(grid_h, grid_w) fraction of each patch's pixels that carry ``label``."""
    h, w = labels.shape
    return (labels == label).reshape(h // patch, patch, w // patch, patch).mean(axis=(1, 3))


def token_index(text: pnpseg.TokenizedText, prompt: str, word: str) -> int:
    start = prompt.index(word)
    return text.offsets[0].index((start, start + len(word)))


@pytest.fixture(scope="module")
def adapter() -> SyntheticAdapter:
    return SyntheticAdapter()


@pytest.fixture(scope="module")
def scene():
    """A non-square 160×224 scene (already at model size) with a red and a blue region."""
    image, labels = make_scene(160, 224, ["red", "blue"], seed=3, jpeg_quality=80)
    return image, labels


def run(adapter, image, prompt=PROMPT, drop=None):
    pixels = adapter.preprocess([image], (image.height, image.width))
    if drop is not None:
        pixels = adapter.mask_patches(pixels, drop)
    text = adapter.tokenize([prompt])
    return text, adapter.forward(pixels, text, list(range(4)))


def test_registered_and_protocol(adapter):
    assert lookup("adapters", "synthetic") is SyntheticAdapter
    assert isinstance(adapter, pnpseg.VLMAdapter)
    assert adapter.default_params["layer"] == TRUE_LAYER + 1
    assert adapter.default_params["head"] == TRUE_HEAD + 1
    pnpseg.SegmentParams.build(adapter.default_params)  # valid parameters


def test_shapes_non_square_and_batch(adapter, scene):
    image, _ = scene
    pixels = adapter.preprocess([image, image.transpose(0)], (160, 224))
    assert pixels.shape == (2, 3, 160, 224)
    assert pixels.min() >= -1 and pixels.max() <= 1
    text = adapter.tokenize([PROMPT, "red"])
    out = adapter.forward(pixels, text, [2, 0])
    assert out.grid == (10, 14)
    assert out.match_logit.shape == (2,)
    assert [tuple(a.shape) for a in out.attentions] == [(2, 4, text.input_ids.shape[1], 140)] * 2
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, 4, text.input_ids.shape[1]))
    with pytest.raises(ValueError):
        adapter.preprocess([image], (160, 220))
    with pytest.raises(IndexError):
        adapter.forward(pixels, text, [4])


def test_batch_rows_are_independent_of_padding(adapter, scene):
    """A padded, batched forward gives each sample what it gets alone."""
    image, _ = scene
    other, _ = make_scene(160, 224, ["green"], seed=8)
    prompts = [PROMPT, "green"]
    pixels = adapter.preprocess([image, other], (160, 224))
    batch = adapter.forward(pixels, adapter.tokenize(prompts), [TRUE_LAYER])
    for b, prompt in enumerate(prompts):
        text = adapter.tokenize([prompt])
        alone = adapter.forward(pixels[b : b + 1], text, [TRUE_LAYER])
        t = text.input_ids.shape[1]
        torch.testing.assert_close(batch.match_logit[b], alone.match_logit[0])
        torch.testing.assert_close(batch.attentions[0][b, :, :t], alone.attentions[0][0])


def regions(labels: np.ndarray) -> dict[str, torch.Tensor]:
    """Patches (flattened) that are at least a quarter red / blue."""
    return {
        word: torch.from_numpy(patch_fraction(labels, label).ravel() >= 0.25)
        for word, label in [("red", 1), ("blue", 2)]
    }


def test_true_head_attends_to_its_colour_noise_heads_do_not(adapter, scene):
    image, labels = scene
    text, out = run(adapter, image)
    region = regions(labels)
    assert 4 <= int(region["red"].sum()) < 0.3 * region["red"].numel()
    for word in ("red", "blue"):
        t = token_index(text, PROMPT, word)
        assert out.attentions[TRUE_LAYER][0, TRUE_HEAD, t][region[word]].sum() > 0.8
        noise = [float(out.attentions[l][0, h, t][region[word]].sum().detach()) for l, h in NOISE]
        assert np.mean(noise) < 0.4, (word, noise)
    for layer, head in NOISE:  # not class-specific: every token gets the same map
        rows = out.attentions[layer][0, head]
        torch.testing.assert_close(rows, rows[:1].expand_as(rows))


def test_gradcam_localises_only_in_true_head(adapter, scene):
    """relu(∂s/∂A)·A with the gradient taken w.r.t. the returned tensors: in the true head
    the red and blue maps each cover their own region, so an argmax over them labels the
    coloured patches correctly; in noise heads it cannot beat guessing one class."""
    image, labels = scene
    text, out = run(adapter, image)
    grads = torch.autograd.grad(out.match_logit.sum(), out.attentions)
    region = regions(labels)
    tokens = [token_index(text, PROMPT, w) for w in ("red", "blue")]
    coloured = region["red"] | region["blue"]
    truth = region["blue"][coloured].long()  # 0 = red, 1 = blue

    def score(layer: int, head: int) -> tuple[float, float]:
        cam = (grads[layer].clamp(min=0) * out.attentions[layer]).detach()[0, head, tokens]
        inside = min(float(cam[i][region[w]].sum() / cam[i].sum()) for i, w in enumerate(("red", "blue")))
        accuracy = float((cam[:, coloured].argmax(0) == truth).float().mean())
        return inside, accuracy

    true_inside, true_accuracy = score(TRUE_LAYER, TRUE_HEAD)
    assert true_inside > 0.9 and true_accuracy > 0.95
    chance = max(float(truth.float().mean()), 1 - float(truth.float().mean()))
    for layer, head in NOISE:
        inside, accuracy = score(layer, head)
        assert inside < 0.6 and accuracy <= chance + 1e-6, (layer, head, inside, accuracy)


def test_masking_a_class_lowers_the_logit(adapter, scene):
    image, labels = scene
    red = torch.from_numpy(patch_fraction(labels, 1).ravel() > 0)[None]
    _, base = run(adapter, image)
    _, masked = run(adapter, image, drop=red)
    background = torch.zeros_like(red)
    pure_background = torch.nonzero(torch.from_numpy(patch_fraction(labels, 0).ravel() == 1))
    background[0, pure_background[: int(red.sum())]] = True
    _, masked_bg = run(adapter, image, drop=background)
    drop_class = float((base.match_logit - masked.match_logit).detach())
    drop_bg = float((base.match_logit - masked_bg.match_logit).detach())
    assert drop_class > 0.5 and abs(drop_bg) < 0.1 * drop_class, (drop_class, drop_bg)


def test_masked_grey_is_no_class(adapter, scene):
    """Zeroed input (mid grey) is far from every colour, white included."""
    image, _ = scene
    everything = torch.ones(1, 140, dtype=torch.bool)
    prompt = "red green blue yellow cyan magenta white"
    text, out = run(adapter, image, prompt=prompt, drop=everything)
    attn = out.attentions[TRUE_LAYER][0, TRUE_HEAD]
    torch.testing.assert_close(attn, torch.full_like(attn, 1 / 140), atol=1e-5, rtol=0)
    _, unmasked = run(adapter, image, prompt=prompt)
    assert float((unmasked.match_logit - out.match_logit).detach()) > 1.5  # red and blue were present


def test_orientation_on_non_square_grid(adapter):
    """Reading the patch axis as (grid_h, grid_w) row-major matches the blob; transposed
    readings do not, so a swapped row/column anywhere would be caught."""
    image, labels = make_scene(128, 256, ["red"], seed=11)
    text, out = run(adapter, image, prompt="red")
    attn = out.attentions[TRUE_LAYER][0, TRUE_HEAD, 1]
    truth = patch_fraction(labels, 1)  # (8, 16)
    right = np.corrcoef(attn.detach().reshape(8, 16).numpy().ravel(), truth.ravel())[0, 1]
    wrong = np.corrcoef(attn.detach().reshape(16, 8).T.numpy().ravel(), truth.ravel())[0, 1]
    assert right > 0.85 and wrong < 0.5, (right, wrong)


def test_tokenize_offsets_unknown_and_padding(adapter):
    prompts = ["A picture of Red dark-blue", "white"]
    text = adapter.tokenize(prompts)
    first, second = text.offsets
    assert first[0] == (0, 0) and first[-1] == (0, 0)
    words = [prompts[0][s:e] for s, e in first[1:-1]]
    assert words == ["A", "picture", "of", "Red", "dark", "-", "blue"]
    assert text.unknown[0] == [False, False, False, False, False, True, True, False, False]
    assert text.attention_mask.tolist()[1] == [1, 1, 1] + [0] * 6
    assert second[1] == (0, 5) and second[2:] == [(0, 0)] * 7
    assert text.input_ids[0, 4] == adapter.tokenize(["red"]).input_ids[0, 1]  # case-insensitive
    assert text.input_ids[0, 5] == text.input_ids[0, 6]  # both [UNK]


def test_max_text_length_is_enforced(adapter, scene):
    image, _ = scene
    short = SyntheticAdapter(max_text_length=5)
    pixels = short.preprocess([image], (160, 224))
    short.forward(pixels, short.tokenize(["red blue white"]), [0])
    with pytest.raises(ValueError, match="max_text_length"):
        short.forward(pixels, short.tokenize(["red blue white cyan"]), [0])


def test_deterministic_and_independent_of_global_rng(scene):
    image, _ = scene
    torch.manual_seed(0)
    first = run(SyntheticAdapter(), image)[1]
    torch.manual_seed(1)
    np.random.seed(1)
    second = run(SyntheticAdapter(), image)[1]
    torch.testing.assert_close(first.match_logit, second.match_logit, rtol=0, atol=0)
    for a, b in zip(first.attentions, second.attentions):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_make_scene_contract():
    colours = ["cyan", "magenta", "yellow"]
    image, labels = make_scene(120, 200, colours, seed=5, noise=0.0)
    again, labels_again = make_scene(120, 200, colours, seed=5, noise=0.0)
    assert image.size == (200, 120) and image.mode == "RGB" and labels.shape == (120, 200)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2, 3}
    assert np.array_equal(np.asarray(image), np.asarray(again)) and np.array_equal(labels, labels_again)
    pixels = np.asarray(image).astype(int)
    for i, name in enumerate(colours, start=1):  # label i is colours[i - 1]
        mean = pixels[labels == i].mean(axis=0)
        assert np.abs(mean - COLOURS[name]).max() < 40, (name, mean)
    background = pixels[labels == 0]
    assert background.max(axis=1).mean() < 130 and np.ptp(background.mean(axis=0)) < 10
    assert not np.array_equal(make_scene(120, 200, colours, seed=6)[1], labels)
    with pytest.raises(ValueError):
        make_scene(64, 64, ["red", "red"], seed=0)
    with pytest.raises(ValueError):
        make_scene(64, 64, ["purple"], seed=0)


def test_miou():
    gt = np.array([[0, 0, 1, 1], [0, 0, 2, 255]])
    assert miou(gt, gt, 3) == 1.0
    pred = np.array([[0, 0, 1, 2], [0, 0, 2, 0]])  # class 1: 1/2, class 2: 1/2, class 0: 4/4
    assert miou(pred, gt, 3) == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert miou(np.zeros_like(gt), gt, 3) == pytest.approx(4 / 7 / 3)
