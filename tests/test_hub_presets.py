"""``--preset hf://org/repo/file.json``: from huggingface_hub's cache, offline-aware (issue 15)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pnpseg.cli import app
from pnpseg.errors import EnvironmentProblem
from pnpseg.io.preset import load_preset
from pnpseg.testing import make_scene

COMMIT = "0123456789abcdef0123456789abcdef01234567"
PRESET = {
    "format": "pnpseg-preset",
    "version": 1,
    "adapter": "synthetic",
    "model": None,
    "params": {"layer": 3, "head": 2, "threshold": 0.2, "image_size": [64, 80]},
}


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An isolated huggingface_hub cache holding one preset in ``org/presets``, and offline mode."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    repo = cache / "models--org--presets"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT / "tuned"
    snapshot.mkdir(parents=True)
    (snapshot / "synthetic.json").write_text(json.dumps(PRESET))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_a_cached_hub_preset_is_read_offline(hub_cache):
    data = load_preset("hf://org/presets/tuned/synthetic.json")
    assert data["params"]["layer"] == 3 and data["adapter"] == "synthetic"


def test_a_hub_preset_drives_segment(hub_cache, tmp_path):
    make_scene(64, 80, ["red", "blue"], seed=0)[0].save(tmp_path / "a.png")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "segment",
            str(tmp_path / "a.png"),
            "--classes",
            "red,blue",
            "--preset",
            "hf://org/presets/tuned/synthetic.json",
        ]
        + ["--out", str(out), "--device", "cpu"],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "manifest.jsonl").read_text().splitlines()[0])
    assert record["settings"]["adapter"] == "synthetic" and record["settings"]["params"]["layer"] == 3
    assert np.array(Image.open(out / "a.png")).max() > 0


def test_offline_and_not_cached_is_one_line_and_exit_3(hub_cache, tmp_path):
    with pytest.raises(EnvironmentProblem, match="not in the local cache"):
        load_preset("hf://org/presets/other.json")
    result = CliRunner().invoke(
        app,
        [
            "segment",
            str(tmp_path),
            "--classes",
            "red",
            "--preset",
            "hf://org/elsewhere/p.json",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 3, result.output
    assert len(result.output.strip().splitlines()) == 1 and "offline" in result.output


def test_malformed_hub_uri_is_a_usage_error():
    with pytest.raises(Exception, match="expected hf://ORG/REPO/PATH"):
        load_preset("hf://org/only-repo")
