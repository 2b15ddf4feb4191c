"""The BLIP-2 adapter (pnpseg-blip2) on a tiny random ``Blip2ForImageTextRetrieval``: sizes
from the Q-Former's config, the composed map, conformance, and the commands end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import pnpseg
from pnpseg.cli import app
from pnpseg.testing import check_adapter, make_scene

pytest.importorskip("pnpseg_blip2")

from pnpseg_blip2 import Blip2Adapter  # noqa: E402
from pnpseg_blip2.adapter import compose, query_routes  # noqa: E402
from pnpseg_blip2.testing import build_tiny_blip2  # noqa: E402

from pnpseg_hf.testing import resave_as  # noqa: E402

#: The tiny model has 2 text→image layers of 4 heads: the defaults do not exist.
TINY = ["--adapter", "blip2", "--device", "cpu", "--image-size", "64x96"]


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return build_tiny_blip2(tmp_path_factory.mktemp("tiny-blip2"))


@pytest.fixture(scope="module")
def adapter(tiny_path):
    return Blip2Adapter(str(tiny_path))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("blip2-scenes")
    for i, names in enumerate((["red", "blue"], ["green", "red"])):
        make_scene(64, 96, names, seed=i)[0].save(root / f"s{i}.png")
    labels = root.parent / "labels.json"
    labels.write_text(json.dumps({"s0.png": ["red", "blue"], "s1.png": ["green", "red"]}))
    return root, labels


def test_sizes_come_from_the_qformer_config_not_the_language_model(adapter):
    config = adapter.config
    assert config.text_config.num_hidden_layers != 4  # the language model's (OPT) config
    assert (adapter.num_layers, adapter.num_heads, adapter.max_text_length, adapter.patch_size) == (2, 4, 64, 16)


def test_conformance(adapter):
    report = check_adapter(adapter)  # raises, naming each failed clause
    assert "layer numbering" in report.passed and "patch order" in report.passed
    assert report.skipped == {"exact gradients": "no reference_gradients given"}


def test_map_is_query_routes_times_cross_attention(adapter):
    """Block of layer 1 = mean-over-heads (queries → text) self-attention of Q-Former layer 2,
    transposed, times its (queries → patches) cross-attention, for the attention and its gradient."""
    text = adapter.tokenize(["A picture of red blue", "A picture of green"])
    pixels = torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    recorded = {}
    layer = adapter.model.qformer.encoder.layer[2]
    hooks = [
        layer.attention.attention.register_forward_hook(lambda m, i, o: recorded.__setitem__("self", o[1])),
        layer.crossattention.attention.register_forward_hook(lambda m, i, o: recorded.__setitem__("cross", o[1])),
    ]
    try:
        with torch.enable_grad():
            out = adapter.forward(pixels, text, [1])
    finally:
        for hook in hooks:
            hook.remove()
    q = adapter.model.query_tokens.shape[1]
    routes = recorded["self"][..., :q, q:].mean(dim=1, keepdim=True).transpose(-1, -2)
    assert torch.equal(out.attentions[0], recorded["cross"])
    torch.testing.assert_close(out.text_image(out.attentions[0].detach(), 1), routes @ recorded["cross"][..., 1:])
    (grad,) = torch.autograd.grad(out.match_logit.sum(), out.attentions)
    torch.testing.assert_close(out.text_image(grad, 1), routes.detach() @ grad[..., 1:])
    assert out.text_image(grad, 1).shape == (2, 4, text.input_ids.shape[1], 6)
    assert torch.equal(
        compose(query_routes(recorded["self"], q), recorded["cross"]), routes @ recorded["cross"][..., 1:]
    )


def test_a_composition_with_the_wrong_layer_fails_layer_numbering(tiny_path):
    class OtherLayersRoutes(Blip2Adapter):
        def forward(self, pixels, text, layers):
            out = super().forward(pixels, text, sorted({0, 1, *layers}))
            blocks = dict(zip(sorted({0, 1, *layers}), out.attentions))
            slicing = out.text_image
            return pnpseg.VLMOutput(
                out.match_logit,
                [blocks[i] for i in layers],
                out.grid,
                lambda tensor, layer: slicing(tensor, 1 - layer),  # routes of the other layer
            )

    report = check_adapter(OtherLayersRoutes(str(tiny_path)), raise_on_failure=False)
    assert "differs from the model's own (reported_maps)" in report.failed["layer numbering"]


def test_from_pretrained_picks_blip2_by_architecture(tiny_path):
    segmenter = pnpseg.Segmenter.from_pretrained(str(tiny_path), device="cpu", postprocess=())
    assert segmenter.adapter_name == "blip2"
    assert (segmenter.params.layer, segmenter.params.head) == (1, 4)  # untuned defaults 4, 10 clamped


def test_wrong_checkpoints_are_one_line_errors(tmp_path, tiny_path):
    bare = str(resave_as(tiny_path, tmp_path / "bare", "Blip2Model"))
    with pytest.raises(pnpseg.ModelLoadError, match="is a BLIP-2 Blip2Model, not an image-text-matching model"):
        Blip2Adapter(bare)
    config = json.loads((tiny_path / "config.json").read_text())
    config["qformer_config"]["use_qformer_text_input"] = False
    no_text = tmp_path / "no-text"
    no_text.mkdir()
    for item in tiny_path.iterdir():
        (no_text / item.name).write_bytes(item.read_bytes())
    (no_text / "config.json").write_text(json.dumps(config))
    with pytest.raises(pnpseg.ModelLoadError, match="Q-Former without text input"):
        Blip2Adapter(str(no_text))


def test_segment_explain_heads_and_tune_end_to_end(tiny_path, scenes, tmp_path):
    root, labels = scenes
    runner = CliRunner()
    model = ["--model", str(tiny_path)]
    segmented = runner.invoke(
        app, ["segment", str(root), "--classes", "red,blue,green", *model, *TINY, "--out", str(tmp_path / "masks")]
    )
    assert segmented.exit_code == 0, segmented.output
    assert sorted(p.name for p in (tmp_path / "masks").glob("*.png")) == ["s0.png", "s1.png"]

    explain = tmp_path / "explain"
    explained = runner.invoke(
        app, ["explain", str(root / "s0.png"), "--classes", "red,blue", *model, *TINY, "--out", str(explain), "--heads"]
    )
    assert explained.exit_code == 0, explained.output
    contrast = np.array(json.loads((explain / "explain.json").read_text())["atlas"]["contrast"]["red"])
    assert contrast.shape == (2, 4) and np.isfinite(contrast).all()

    preset = tmp_path / "preset.json"
    tuned = runner.invoke(
        app,
        ["tune", str(root), "--labels", str(labels), "--out", str(preset), *model, *TINY]
        + ["--scorer", "synthetic", "--trials", "10"],
    )
    assert tuned.exit_code == 0, tuned.output
    params = json.loads(preset.read_text())["params"]
    assert 1 <= params["layer"] <= 2 and 1 <= params["head"] <= 4
