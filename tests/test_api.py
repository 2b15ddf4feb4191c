"""The top-level Python API (issue 15): ``pnpseg.Segmenter`` picks the adapter from a
checkpoint's config, takes one image or a list, and results speak the common formats."""

from __future__ import annotations

import importlib.metadata
import json

import numpy as np
import pytest
from PIL import Image

import pnpseg
from pnpseg.plugins import adapter_for
from pnpseg.testing import SyntheticAdapter, make_scene

SIZE = (96, 128)


@pytest.fixture(scope="module")
def scene():
    image, labels = make_scene(*SIZE, ["red", "blue"], seed=3)
    return image, labels


@pytest.fixture(scope="module")
def segmenter():
    return pnpseg.Segmenter(SyntheticAdapter(), image_size=SIZE)


def test_top_level_names_and_version():
    assert pnpseg.Segmenter.__name__ == "Segmenter" and pnpseg.SegmentationResult.__name__ == "SegmentationResult"
    assert pnpseg.__version__ == importlib.metadata.version("pnpseg")
    assert {"Segmenter", "SegmentationResult", "__version__"} <= set(pnpseg.__all__)


def test_from_pretrained_picks_the_adapter_from_the_config(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "pnpseg-synthetic"}))
    seg = pnpseg.Segmenter.from_pretrained(str(folder), device="cpu", image_size=64)
    assert isinstance(seg.adapter, SyntheticAdapter) and seg.adapter_name == "synthetic"
    # The adapter name stays available as a keyword.
    assert pnpseg.Segmenter.from_pretrained(adapter="synthetic", device="cpu").adapter_name == "synthetic"


@pytest.mark.parametrize(
    "config, adapter",
    [
        ({"model_type": "blip", "architectures": ["BlipForImageTextRetrieval"]}, "blip"),
        ({"model_type": "bridgetower", "architectures": ["BridgeTowerForImageAndTextRetrieval"]}, "bridgetower"),
        ({"model_type": "vilt", "architectures": ["ViltForImageAndTextRetrieval"]}, "vilt"),
        ({"model_type": "flava", "architectures": ["FlavaForPreTraining"]}, "flava"),
    ],
)
def test_first_party_plugins_claim_their_model_types(tmp_path, config, adapter):
    pytest.importorskip(f"pnpseg_{adapter}")
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert adapter_for(str(tmp_path)) == adapter


def test_unclaimed_or_unreachable_checkpoints_are_one_line_errors(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(pnpseg.PnpsegError, match="no installed adapter claims .*'llama'.*adapter=NAME"):
        pnpseg.Segmenter.from_pretrained(str(tmp_path))
    from huggingface_hub import constants

    from pnpseg.errors import EnvironmentProblem

    with pytest.raises(
        pnpseg.PnpsegError, match=r"adapter name, not a checkpoint: use from_pretrained\(adapter='synthetic'\)"
    ):
        pnpseg.Segmenter.from_pretrained("synthetic")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))

    with pytest.raises(EnvironmentProblem, match="not in the local cache"):
        adapter_for("some-org/not-cached-model")


def test_one_image_or_a_list_of_paths_pil_and_numpy(segmenter, scene, tmp_path):
    image, _ = scene
    image.save(tmp_path / "a.png")
    one = segmenter(image, ["red", "blue"])
    assert isinstance(one, pnpseg.SegmentationResult)
    many = segmenter([str(tmp_path / "a.png"), image, np.asarray(image)], ["red", "blue"])
    assert len(many) == 3
    for result in many:
        np.testing.assert_array_equal(result.labels, one.labels)


def test_masks_are_boolean_per_class(segmenter, scene):
    image, truth = scene
    result = segmenter(image, ["red", "blue"])
    masks = result.masks()
    assert list(masks) == ["red", "blue"]
    for i, mask in enumerate(masks.values()):
        assert mask.dtype == bool and mask.shape == (image.height, image.width)
        np.testing.assert_array_equal(mask, truth == i + 1)  # the synthetic scene is segmented exactly


def test_to_hf_has_the_pipeline_structure(segmenter, scene):
    """transformers' ImageSegmentationPipeline returns ``[{"score", "label", "mask": PIL "L"}]``."""
    image, _ = scene
    result = segmenter(image, ["red", "blue", "green"])
    entries = result.to_hf()
    present = [name for name, mask in result.masks().items() if mask.any()]
    assert [e["label"] for e in entries] == present and "red" in present  # classes present only
    for entry in entries:
        assert set(entry) == {"score", "label", "mask"}
        assert isinstance(entry["score"], float) and 0.0 <= entry["score"] <= 1.0
        assert isinstance(entry["mask"], Image.Image) and entry["mask"].mode == "L"
        assert entry["mask"].size == image.size
        values = np.array(entry["mask"])
        assert set(np.unique(values)) <= {0, 255}
        np.testing.assert_array_equal(values == 255, result.masks()[entry["label"]])


def test_to_coco_rle_round_trips_through_pycocotools(segmenter, scene):
    mask_api = pytest.importorskip("pycocotools.mask")
    image, _ = scene
    result = segmenter(image, ["red", "blue", "green"])
    rles = result.to_coco_rle()
    assert set(rles) == {name for name, mask in result.masks().items() if mask.any()} >= {"red", "blue"}
    json.dumps(rles)  # JSON-ready
    for name, rle in rles.items():
        decoded = mask_api.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        np.testing.assert_array_equal(decoded.astype(bool), result.masks()[name])
