"""Cross-environment parity, LAVIS side: arrays from ``--adapter lavis-blip`` for the main env.

With ``PNPSEG_PARITY_DIR`` set (``.ci/run`` sets it), this writes a tiny random LAVIS BLIP
checkpoint (+ ``vocab.txt``), a scene, ``parity.json`` (the settings) and ``lavis.npz`` (ITM
logits at three sizes, the summed GradCAM maps after each Saliency DropOut round) and the
label PNG of a ``pnpseg segment`` run. ``tests/test_lavis_parity.py`` in the main
environment converts the checkpoint with ``pnpseg convert blip``, runs ``--adapter blip`` and
compares.
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("lavis", reason="LAVIS tests run in the LAVIS environment (requirements-lavis.txt)")

import json
from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from pnpseg.cli import app
from pnpseg.method.segmenter import Segmenter
from pnpseg.testing import make_scene
from pnpseg_lavis import LavisBlipAdapter

SETTINGS = {
    "prompts": ["a picture of cat.", "red dog sky", "grass"],
    "sizes": [[64, 64], [64, 96], [96, 96]],
    "classes": ["cat", "dog", "grass"],
    "params": {"image_size": [64, 96], "layer": 2, "head": 1, "drop_rule": "topk:3"},
    "rounds": 3,
}


@pytest.mark.skipif(not os.environ.get("PNPSEG_PARITY_DIR"), reason="PNPSEG_PARITY_DIR is not set (.ci/run sets it)")
def test_export_lavis_blip_arrays():
    from tiny_lavis import build_tiny_lavis_blip

    folder = Path(os.environ["PNPSEG_PARITY_DIR"])
    checkpoint = build_tiny_lavis_blip(folder)
    image = make_scene(60, 100, ["red", "blue"], seed=0)[0]
    image.save(folder / "scene.png")
    adapter = LavisBlipAdapter(str(checkpoint))
    arrays = {}
    text = adapter.tokenize(SETTINGS["prompts"])
    for h, w in SETTINGS["sizes"]:
        with torch.no_grad():
            arrays[f"logits_{h}x{w}"] = adapter.forward(
                adapter.preprocess([image], (h, w)), text, []
            ).match_logit.numpy()
    for rounds in range(1, SETTINGS["rounds"] + 1):
        segmenter = Segmenter.from_pretrained(
            str(checkpoint), adapter="lavis-blip", device="cpu", drop_rounds=rounds, **SETTINGS["params"]
        )
        arrays[f"summed_{rounds}"] = segmenter.saliency([image], [SETTINGS["classes"]])[0].numpy()
    # every round adds a map of its own (the comparison would be weak otherwise)
    assert all(np.abs(arrays[f"summed_{r + 1}"] - arrays[f"summed_{r}"]).max() > 0 for r in (1, 2))
    np.savez(folder / "lavis.npz", **arrays)

    params = SETTINGS["params"]
    result = CliRunner().invoke(
        app,
        ["segment", str(folder / "scene.png"), "-c", ",".join(SETTINGS["classes"]), "--adapter", "lavis-blip"]
        + ["--model", str(checkpoint), "--out", str(folder / "lavis-out"), "--device", "cpu"]
        + ["--image-size", "x".join(map(str, params["image_size"])), "--layer", str(params["layer"])]
        + ["--head", str(params["head"]), "--drop-rule", params["drop_rule"], "--drop-rounds", str(SETTINGS["rounds"])],
    )
    assert result.exit_code == 0, result.output
    (folder / "parity.json").write_text(json.dumps(SETTINGS, indent=2))
