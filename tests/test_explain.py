"""``pnpseg explain``: the pipeline figure, the head atlas and the numbers behind them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pnpseg.cli import app
from pnpseg.explain import class_contrast, head_atlas, trace_pipeline
from pnpseg.method.segmenter import Segmenter
from pnpseg.testing import make_scene
from pnpseg.testing.synthetic import TRUE_HEAD, TRUE_LAYER

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    path = tmp_path_factory.mktemp("scene") / "scene.png"
    make_scene(96, 160, ["red", "blue", "green"], seed=3)[0].save(path)
    return path


def test_class_contrast_by_hand():
    same = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    apart = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 2.0, 2.0]])
    half = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0]])
    assert class_contrast(same).tolist() == [0.0, 0.0]
    assert class_contrast(apart).tolist() == [1.0, 1.0]
    assert class_contrast(half).tolist() == [0.5, 0.5]
    assert class_contrast(torch.tensor([[0.0, 0.0], [1.0, 0.0]])).tolist() == [0.0, 0.0]  # an empty map


@pytest.mark.slow
def test_the_trace_follows_the_rounds(scene):
    segmenter = Segmenter.from_pretrained(adapter="synthetic", device="cpu")
    image = Image.open(scene).convert("RGB")
    trace = trace_pipeline(segmenter, image, ["red", "blue"])
    assert len(trace.rounds) == segmenter.params.drop_rounds
    assert not trace.rounds[0].dropped_before.any()
    kept = [float(1 - r.dropped_before.float().mean()) for r in trace.rounds]
    assert kept == sorted(kept, reverse=True) and kept[-1] < 1.0
    # the summed map is the sum of the rounds' maps, and the labels are segment()'s
    assert torch.allclose(trace.summed, sum(r.maps for r in trace.rounds), atol=1e-6)
    assert np.array_equal(trace.labels, segmenter(image, ["red", "blue"]).labels)
    assert [name for name, _ in trace.stages] == ["threshold", *segmenter.params.postprocess]


def test_the_atlas_finds_the_planted_head(scene):
    segmenter = Segmenter.from_pretrained(adapter="synthetic", device="cpu")
    atlas = head_atlas(segmenter, Image.open(scene).convert("RGB"), ["red", "blue", "green"])
    assert atlas.maps.shape[:3] == (4, 4, 3)
    for k in range(3):
        assert atlas.best(k) == (TRUE_LAYER + 1, TRUE_HEAD + 1)


@pytest.mark.slow
def test_explain_writes_figures_and_numbers(scene, tmp_path):
    out = tmp_path / "explain"
    result = CliRunner().invoke(
        app,
        ["explain", str(scene), "--classes", "red,blue,green", "--adapter", "synthetic", "--device", "cpu"]
        + ["--out", str(out), "--heads"],
    )
    assert result.exit_code == 0, result.output
    for name in ("pipeline.png", "pipeline.svg", "atlas-1.png", "atlas-2.png", "atlas-3.png", "explain.json"):
        assert (out / name).stat().st_size > 0, name
    assert Image.open(out / "pipeline.png").size[0] > 800
    report = json.loads((out / "explain.json").read_text())
    for name in ["red", "blue", "green"]:
        contrast = np.array(report["atlas"]["contrast"][name])  # (layers, heads)
        planted = contrast[TRUE_LAYER, TRUE_HEAD]
        assert planted == contrast.max() and planted > 0.5, (name, contrast.round(2))
        assert np.delete(contrast.ravel(), TRUE_LAYER * 4 + TRUE_HEAD).max() < 0.5 * planted
        rounds = report["pipeline"]["classes"][name]["rounds"]
        assert len(rounds) == 4 and rounds[0]["kept_fraction"] == 1.0
    assert report["atlas"]["chosen"] == [TRUE_LAYER + 1, TRUE_HEAD + 1]
    segmented = CliRunner().invoke(
        app,
        ["segment", str(scene), "--classes", "red,blue,green", "--adapter", "synthetic", "--out", str(tmp_path / "s")],
    )
    assert segmented.exit_code == 0, segmented.output
    fractions = json.loads((tmp_path / "s" / "manifest.jsonl").read_text().splitlines()[0])["classes"]
    for name in ("red", "blue", "green"):  # the figure's mask is exactly what segment writes
        assert round(report["pipeline"]["classes"][name]["pixel_share"], 4) == fractions[name] > 0.01


def test_explain_without_matplotlib_is_one_line(scene, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    out = tmp_path / "explain"
    result = CliRunner().invoke(
        app, ["explain", str(scene), "--classes", "red", "--adapter", "synthetic", "--out", str(out)]
    )
    assert result.exit_code in (2, 3) and "pip install 'pnpseg[viz]'" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.slow
def test_explain_a_tiny_blip_captures_every_layer_at_once(scene, tmp_path, tiny_blip):
    model = tiny_blip
    out = tmp_path / "explain"
    result = CliRunner().invoke(
        app,
        ["explain", str(scene), "--classes", "cat,dog", "--adapter", "blip", "--model", str(model), "--device", "cpu"]
        + ["--layer", "2", "--head", "1", "--image-size", "64", "--out", str(out), "--heads"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "explain.json").read_text())
    contrast = np.array(report["atlas"]["contrast"]["cat"])
    assert contrast.shape == (3, 2)  # the tiny model: 3 text→image layers of 2 heads
    assert np.isfinite(contrast).all() and (contrast >= 0).all() and (contrast <= 1).all()
    assert report["atlas"]["chosen"] == [2, 1] and (out / "atlas-2.png").exists()
