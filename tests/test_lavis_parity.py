"""Cross-environment parity, main side: a converted LAVIS BLIP gives LAVIS's numbers.

``plugins/pnpseg-lavis/tests/test_lavis_parity_export.py``, run in the LAVIS environment
with ``PNPSEG_PARITY_DIR`` set, writes a tiny random LAVIS BLIP checkpoint and what
``--adapter lavis-blip`` made of it. Here the checkpoint goes through ``pnpseg convert blip``
and ``--adapter blip``: the ITM logits and the summed GradCAM maps after every Saliency
DropOut round must agree to float precision, and the labels exactly. ``.ci/run`` runs both.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pnpseg.cli import app
from pnpseg.method.segmenter import Segmenter
from pnpseg_blip import BlipAdapter

PARITY_DIR = os.environ.get("PNPSEG_PARITY_DIR")
pytestmark = pytest.mark.skipif(
    not PARITY_DIR,
    reason="PNPSEG_PARITY_DIR is not set: the LAVIS environment's export must run first (.ci/run does both)",
)


@pytest.fixture(scope="module")
def exported():
    folder = Path(PARITY_DIR)
    assert (folder / "parity.json").is_file(), f"no LAVIS export in {folder}: run the LAVIS side first"
    return folder, json.loads((folder / "parity.json").read_text()), np.load(folder / "lavis.npz")


@pytest.fixture(scope="module")
def converted(exported, tmp_path_factory):
    folder = exported[0]
    out = tmp_path_factory.mktemp("converted") / "blip-hf"
    result = CliRunner().invoke(app, ["convert", "blip", str(folder / "blip_itm.pth"), str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_itm_logits_match_lavis(exported, converted):
    folder, settings, lavis = exported
    adapter = BlipAdapter(str(converted))
    image = Image.open(folder / "scene.png")
    text = adapter.tokenize(settings["prompts"])
    for h, w in settings["sizes"]:
        with torch.no_grad():
            ours = adapter.forward(adapter.preprocess([image], (h, w)), text, []).match_logit.numpy()
        np.testing.assert_allclose(ours, lavis[f"logits_{h}x{w}"], rtol=1e-5, atol=1e-6)


def test_gradcam_maps_of_every_round_match_lavis(exported, converted):
    folder, settings, lavis = exported
    image = Image.open(folder / "scene.png")
    for rounds in range(1, settings["rounds"] + 1):
        segmenter = Segmenter.from_pretrained(
            str(converted), adapter="blip", device="cpu", drop_rounds=rounds, **settings["params"]
        )
        ours = segmenter.saliency([image], [settings["classes"]])[0].numpy()
        reference = lavis[f"summed_{rounds}"]
        np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())


def test_labels_match_lavis(exported, converted, tmp_path):
    folder, settings, _ = exported
    params = settings["params"]
    result = CliRunner().invoke(
        app,
        ["segment", str(folder / "scene.png"), "-c", ",".join(settings["classes"]), "--adapter", "blip"]
        + ["--model", str(converted), "--out", str(tmp_path), "--device", "cpu"]
        + ["--image-size", "x".join(map(str, params["image_size"])), "--layer", str(params["layer"])]
        + ["--head", str(params["head"]), "--drop-rule", params["drop_rule"], "--drop-rounds", str(settings["rounds"])],
    )
    assert result.exit_code == 0, result.output
    ours = np.array(Image.open(tmp_path / "scene.png"))
    theirs = np.array(Image.open(folder / "lavis-out" / "scene.png"))
    assert np.array_equal(ours, theirs) and len(np.unique(theirs)) > 1
