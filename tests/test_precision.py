"""``--precision bf16-vision``: the vision tower alone in bf16, the text tower and gradient fp32."""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import pnpseg.plugins
from pnpseg import PnpsegError, Segmenter
from pnpseg.cli import app
from pnpseg.cli.options import Precision
from pnpseg.method.precision import PRECISIONS, autocast, autocast_modules, to_float32
from pnpseg.testing import SyntheticAdapter, check_adapter, make_scene

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def blip(tiny_blip: Path):
    return pnpseg.plugins.lookup("adapters", "blip")(model=str(tiny_blip))


def linear_output_dtypes(model: torch.nn.Module, precision: str, adapter) -> dict[str, set[torch.dtype]]:
    """The dtypes the Linear layers of the vision and text towers produced in one forward, and
    those of the match logit and captured attention."""
    seen: dict[str, set[torch.dtype]] = {"vision": set(), "text": set()}
    handles = []
    for tower, module in (("vision", model.vision_model), ("text", model.text_encoder)):
        for layer in module.modules():
            if isinstance(layer, torch.nn.Linear):
                handles.append(layer.register_forward_hook(lambda m, a, out, t=tower: seen[t].add(out.dtype)))
    text = adapter.tokenize(["A picture of cat dog"])
    try:
        with autocast(adapter, precision), torch.enable_grad():
            out = adapter.forward(torch.randn(1, 3, 64, 96), text, [1])
    finally:
        for handle in handles:
            handle.remove()
    seen["outputs"] = {out.match_logit.dtype, out.attentions[0].dtype}
    return seen


def test_bf16_vision_runs_only_the_vision_tower_in_bf16(blip):
    vision_only = linear_output_dtypes(blip.model, "bf16-vision", blip)
    assert vision_only == {"vision": {torch.bfloat16}, "text": {torch.float32}, "outputs": {torch.float32}}
    everything = linear_output_dtypes(blip.model, "bf16", blip)
    assert everything == {"vision": {torch.bfloat16}, "text": {torch.bfloat16}, "outputs": {torch.bfloat16}}
    assert not blip.model.vision_model._forward_hooks and not blip.model.vision_model._forward_pre_hooks


def test_bf16_vision_features_are_bf16_close_and_fp32_typed(blip):
    pixels = torch.randn(1, 3, 64, 96)
    tower = blip.model.vision_model
    with torch.no_grad():
        exact = tower(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state
        with autocast(blip, "bf16-vision"):
            rounded = tower(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state
    assert rounded.dtype == torch.float32
    error = (rounded - exact).abs().max().item()
    assert 0 < error < 0.1, error  # bf16 rounding happened, and stayed small


def test_segmenting_with_bf16_vision_keeps_the_gradient_fp32(blip):
    image, _ = make_scene(64, 96, ["red", "blue"], seed=1)
    seen: list[torch.dtype] = []
    fp32 = Segmenter(blip, precision="fp32", layer=2, head=1, image_size=(64, 96), postprocess=())
    mixed = Segmenter(blip, precision="bf16-vision", layer=2, head=1, image_size=(64, 96), postprocess=())
    maps = fp32.saliency([image], [["red", "blue"]], on_round=lambda r, m, d: seen.append(m.dtype))[0]
    maps_mixed = mixed.saliency([image], [["red", "blue"]], on_round=lambda r, m, d: seen.append(m.dtype))[0]
    assert set(seen) == {torch.float32} and maps_mixed.dtype == torch.float32
    relative = (maps_mixed - maps).abs().max() / maps.abs().max()
    assert 0 < relative < 0.2, relative


def test_adapters_without_a_vision_tower_refuse_it_in_one_line():
    with pytest.raises(PnpsegError, match=r"^--precision bf16-vision needs an adapter with a separate vision tower"):
        Segmenter(SyntheticAdapter(), precision="bf16-vision")
    with pytest.raises(PnpsegError, match="fp16-vision needs a CUDA device"):
        Segmenter(SyntheticAdapter(), precision="fp16-vision")
    with pytest.raises(PnpsegError, match="precision must be one of fp32, bf16, fp16, bf16-vision, fp16-vision"):
        Segmenter(SyntheticAdapter(), precision="int8")


def test_cli_refuses_bf16_vision_without_a_vision_tower(tmp_path):
    image, _ = make_scene(32, 48, ["red"], seed=0)
    image.save(tmp_path / "a.png")
    out = tmp_path / "out"
    args = ["segment", str(tmp_path / "a.png"), "--classes", "red", "--adapter", "synthetic", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--precision", "bf16-vision"])
    assert result.exit_code == 2, result.output
    assert "needs an adapter with a separate vision tower" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists() or not any(out.glob("*.png"))


def test_the_cli_offers_exactly_the_core_precisions():
    assert [p.value for p in Precision] == list(PRECISIONS)


def test_autocast_state_is_restored_when_a_module_fails():
    class Boom(torch.nn.Module):
        def forward(self, x):
            assert torch.is_autocast_enabled("cpu")
            raise RuntimeError("boom")

    module = Boom()
    with pytest.raises(RuntimeError, match="boom"), autocast_modules([module], "cpu", torch.bfloat16):
        module(torch.ones(1))
    assert not torch.is_autocast_enabled("cpu")
    assert not module._forward_hooks and not module._forward_pre_hooks


def test_to_float32_reaches_into_nested_outputs():
    Pair = namedtuple("Pair", "a b")
    half = torch.ones(2, dtype=torch.bfloat16)
    ids = torch.ones(2, dtype=torch.long)
    out = to_float32({"x": (half, [half]), "p": Pair(half, ids)})
    assert out["x"][0].dtype == out["x"][1][0].dtype == out["p"].a.dtype == torch.float32
    assert out["p"].b.dtype == torch.long and isinstance(out["p"], Pair)


class ListsAnIdleModule(SyntheticAdapter):
    """Names a vision module that its forward never calls: bf16-vision would do nothing."""

    idle = torch.nn.Identity()

    def vision_modules(self):
        return [self.idle]


def test_conformance_catches_a_vision_module_that_never_runs():
    report = check_adapter(ListsAnIdleModule(), raise_on_failure=False)
    assert list(report.failed) == ["vision modules"]
    assert report.failed["vision modules"].startswith("vision module Identity never ran in forward")
