"""Fused (SDPA) attention on every module nothing captures, checked against the eager path.

Each adapter fuses its ``fused_attention`` classes after loading; the captured layer runs
eager. On tiny models at fp32, ITM logits, captured probabilities and the summed saliency
must equal the eager path's to float rounding, and the label maps must be identical.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from pnpseg.method.segmenter import Segmenter
from pnpseg.plugins import lookup

pnpseg_hf = pytest.importorskip("pnpseg_hf")
fused = pnpseg_hf.fused


#: Each family's tiny checkpoint (a session fixture of conftest.py; FLAVA's is built here).
FAMILIES = ("blip", "bridgetower", "vilt", "flava")
SIZE = (64, 96)


def random_pixels(size: tuple[int, int]) -> torch.Tensor:
    return torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module", params=FAMILIES)
def case(request, tmp_path_factory):
    name = request.param
    pytest.importorskip(f"pnpseg_{name}")
    if name == "flava":
        from test_flava_adapter import build_tiny_flava

        folder = build_tiny_flava(tmp_path_factory.mktemp("tiny-flava"))
    else:
        folder = request.getfixturevalue(f"tiny_{name}")
    return name, lookup("adapters", name)(model=str(folder)), SIZE


def scene() -> Image.Image:
    g = torch.Generator().manual_seed(3)
    return Image.fromarray((torch.rand(70, 100, 3, generator=g) * 255).byte().numpy())


def test_every_listed_attention_class_is_fused_after_loading(case):
    _, adapter, _ = case
    model = adapter.model
    assert adapter.fused_attention
    for class_name in adapter.fused_attention:
        modules = fused.of_type(model, class_name)
        assert modules and all(fused.is_fused(m) for m in modules), class_name


def test_forward_equals_eager_and_restores_fusion(case):
    _, adapter, size = case
    model = adapter.model
    pixels = random_pixels(size)
    text = adapter.tokenize(["a picture of cat", "a picture of dog and sky"])
    layers = [0, adapter.num_layers - 1]
    out = adapter.forward(pixels, text, layers)
    with fused.eager(model.modules()):
        assert not any(fused.is_fused(m) for m in model.modules())
        ref = adapter.forward(pixels, text, layers)
    torch.testing.assert_close(out.match_logit, ref.match_logit, rtol=1e-5, atol=1e-5)
    for a, b in zip(out.attentions, ref.attentions):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # gradients through the fused layers above the captured one
    (grad,) = torch.autograd.grad(out.match_logit.sum(), out.attentions[0])
    (ref_grad,) = torch.autograd.grad(ref.match_logit.sum(), ref.attentions[0])
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-6)
    # fused again after the block; the captured layer is fused again after its forward
    assert all(fused.is_fused(m) for name in adapter.fused_attention for m in fused.of_type(model, name))


def test_label_maps_equal_eager_at_fp32(case):
    _, adapter, size = case
    model = adapter.model
    segment = Segmenter(adapter, image_size=size, layer=1, head=1)
    classes = ["cat", "dog", "sky"]
    result = segment(scene(), classes)
    with fused.eager(model.modules()):
        reference = segment(scene(), classes)
    torch.testing.assert_close(result.saliency, reference.saliency, rtol=1e-4, atol=1e-6)
    assert (result.labels == reference.labels).all()


def test_pnpseg_eager_env_loads_without_fusion(tiny_blip, monkeypatch):
    pytest.importorskip("pnpseg_blip")
    monkeypatch.setenv("PNPSEG_EAGER", "1")
    adapter = lookup("adapters", "blip")(model=str(tiny_blip))
    assert not any(fused.is_fused(m) for m in adapter.model.modules())
