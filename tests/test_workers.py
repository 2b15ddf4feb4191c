"""``--workers``: byte-identical to serial with a real (tiny) model, and postprocessors that
are checked, take options, and run in workers or say why they cannot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pnpseg import hookimpl
from pnpseg.cli import app
from pnpseg.plugins import pm
from pnpseg.testing import make_scene


@pytest.mark.slow
def test_workers_match_serial_bit_for_bit_with_near_ties(tmp_path, tiny_blip):
    # Random weights give near-ties between classes; seed 2 at 96×96 flipped pixels when the
    # workers upsampled at one thread and the serial path at four.
    make_scene(96, 96, ["red", "green", "blue"], seed=2)[0].save(tmp_path / "a.png")
    threads = torch.get_num_threads()
    torch.set_num_threads(4)
    labels = {}
    try:
        for flag in ("--workers=0", "--workers=1", "--model-workers=2"):
            out = tmp_path / flag.strip("-").replace("=", "")
            result = CliRunner().invoke(
                app,
                ["segment", str(tmp_path / "a.png"), "--classes", "cat,dog,grass", "--adapter", "blip"]
                + ["--model", str(tiny_blip), "--layer", "2", "--head", "1", "--image-size", "64"]
                + ["--postprocess", "none", "--device", "cpu", "--out", str(out), flag],
            )
            assert result.exit_code == 0, result.output
            labels[flag] = np.asarray(Image.open(out / "a.png"))
    finally:
        torch.set_num_threads(threads)
    assert len(np.unique(labels["--workers=0"])) > 1
    # Model workers run the model passes at one thread and step 4 at the parent's four.
    for flag in ("--workers=1", "--model-workers=2"):
        assert (labels["--workers=0"] != labels[flag]).sum() == 0, flag


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--workers", "1", "--model-workers", "2"], "--workers and --model-workers: choose one"),
        (["--engine", "ray", "--model-workers", "2"], "--model-workers is for the local engine"),
        (["--model-workers", "-1"], "--model-workers"),
    ],
)
def test_model_workers_refuse_what_they_cannot_do_in_one_line(tmp_path, flags, message):
    make_scene(32, 32, ["red"], seed=0)[0].save(tmp_path / "a.png")
    result = CliRunner().invoke(app, ["segment", str(tmp_path / "a.png"), *ARGS, "--out", str(tmp_path / "o"), *flags])
    assert result.exit_code == 2, result.output
    assert message in result.output.strip().splitlines()[-1] or message in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


# -- postprocessors (issue 13 item 4) ---------------------------------------------------

ARGS = ["--classes", "red,blue", "--adapter", "synthetic", "--image-size", "96", "--device", "cpu"]


def scene_folder(folder: Path, count: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for seed in range(count):
        make_scene(120, 160, ["red", "blue"], seed=seed)[0].save(folder / f"{seed}.png")
    return folder


class Plugin:
    """Postprocessors registered in-process, the way docs/plugins.md shows."""

    @hookimpl
    def register_postprocessors(self, register):
        register("half", lambda: lambda scores, image, params: scores[:, ::2, ::2])
        register("fewer", lambda: lambda scores, image, params: scores[1:])
        register("as-numpy", lambda: lambda scores, image, params: scores.numpy())
        register("as-int", lambda: lambda scores, image, params: (scores * 100).long())
        register("sharpen", lambda: lambda scores, image, params: scores**2)  # docs/plugins.md
        register("scale", Scale)
        register("die-in-worker", DieInWorker)


class DieInWorker:
    """Kills the worker process that runs it, as the out-of-memory killer would."""

    def __call__(self, scores, image, params):
        import multiprocessing

        if multiprocessing.parent_process() is not None:
            os._exit(9)
        return scores


class Scale:
    """A postprocessor with options: ``scale:factor=2``."""

    def __init__(self, factor: float = 1.0, offset: int = 0):
        if factor <= 0:
            raise ValueError(f"factor must be > 0, got {factor}")
        self.factor, self.offset = factor, offset

    def __call__(self, scores, image, params):
        return scores * self.factor + self.offset


@pytest.fixture
def plugin():
    instance = Plugin()
    pm.register(instance, name="test-workers")
    yield
    pm.unregister(instance)


def segment(*args: str):
    return CliRunner().invoke(app, ["segment", *args])


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "name, clause",
    [
        ("half", "returned H×W 60×80, expected 120×160"),
        ("fewer", "returned 2 channels, expected 3"),
        ("as-numpy", "returned ndarray, expected a torch.Tensor"),
        ("as-int", "returned dtype torch.int64, expected a float tensor"),
    ],
)
def test_a_postprocessor_that_breaks_its_contract_fails_each_image_by_name(plugin, tmp_path, name, clause):
    folder = scene_folder(tmp_path / "in")
    out = tmp_path / "out"
    result = segment(str(folder), *ARGS, "--postprocess", f"blur,{name}", "--out", str(out))
    assert result.exit_code == 1, result.output
    found = records(out)
    assert [r["status"] for r in found] == ["error", "error"]
    for record in found:
        assert f"postprocessor {name!r} " in record["error"] and clause in record["error"], record["error"]
        assert "\n" not in record["error"]
    assert not list(out.glob("*.png"))


def test_an_unpicklable_postprocessor_runs_in_the_main_process_under_workers(plugin, tmp_path):
    folder = scene_folder(tmp_path / "in")
    pngs = {}
    for workers in ("0", "1"):
        out = tmp_path / f"out{workers}"
        result = segment(str(folder), *ARGS, "--postprocess", "blur,sharpen", "--workers", workers, "--out", str(out))
        assert result.exit_code == 0, result.output
        pngs[workers] = {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))}
    assert "sharpen" in result.output and "main process" in result.output
    assert len(pngs["0"]) == 2 and pngs["0"] == pngs["1"]


@pytest.mark.slow
def test_a_worker_that_dies_stops_the_run_in_one_line(plugin, tmp_path):
    folder = scene_folder(tmp_path / "in")
    out = tmp_path / "out"
    result = segment(str(folder), *ARGS, "--postprocess", "die-in-worker", "--workers", "1", "--out", str(out))
    assert result.exit_code == 3, result.output
    assert "BrokenProcessPool" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: a --workers process died") and "resume" in last, result.output


def test_postprocessor_options_reach_the_factory_and_the_manifest(plugin, tmp_path):
    folder = scene_folder(tmp_path / "in", 1)
    out = tmp_path / "out"
    result = segment(str(folder), *ARGS, "--postprocess", "blur,scale:factor=2,offset=1,crf", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert records(out)[0]["settings"]["params"]["postprocess"] == ["blur", "scale:factor=2,offset=1", "crf"]
    for spec, words in [
        ("scale:nope=1", ["scale", "nope", "factor=", "offset="]),
        ("scale:factor=0", ["scale", "factor must be > 0"]),
        ("scale:offset=x", ["scale", "offset", "'x'"]),
        ("blur:sigma=2", ["blur", "sigma", "none"]),
    ]:
        bad = segment(str(folder), *ARGS, "--postprocess", spec, "--out", str(tmp_path / "bad"))
        assert bad.exit_code == 2, bad.output
        line = bad.output.strip()
        assert "\n" not in line and all(word in line for word in words), line


PLUGIN_FILE = """
import multiprocessing
import os

import pnpseg


if os.environ.get("BREAK_IN_WORKERS") and multiprocessing.parent_process() is not None:
    raise RuntimeError("this plugin refuses to load in a worker")


class Cube:
    def __call__(self, scores, image, params):
        if os.environ.get("DIE_IN_WORKERS") and multiprocessing.parent_process() is not None:
            os._exit(1)  # killed, or out of memory
        return scores**3


@pnpseg.hookimpl
def register_postprocessors(register):
    register("cube", Cube)
"""


@pytest.mark.slow
def test_a_plugins_dir_postprocessor_works_under_workers(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "cube.py").write_text(PLUGIN_FILE)
    folder = scene_folder(tmp_path / "in")
    pngs = {}
    env = {**os.environ, "PNPSEG_LOAD_PLUGINS": ""}
    for flag in ("--workers=0", "--workers=1", "--model-workers=1"):
        out = tmp_path / flag.strip("-").replace("=", "")
        cmd = [sys.executable, "-m", "pnpseg.cli", "--plugins-dir", str(plugins), "segment", str(folder), *ARGS]
        cmd += ["--postprocess", "blur,cube", flag, "--out", str(out)]
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr
        pngs[flag] = {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))}
    assert len(pngs["--workers=0"]) == 2
    assert pngs["--workers=0"] == pngs["--workers=1"] == pngs["--model-workers=1"]
    for flag in ("--workers=1", "--model-workers=1"):
        cmd[-3], cmd[-1] = flag, str(tmp_path / f"broken{flag}")
        broken = subprocess.run(cmd, capture_output=True, text=True, env={**env, "BREAK_IN_WORKERS": "1"}, timeout=300)
        assert broken.returncode == 2, broken.stderr
        assert "BrokenProcessPool" not in broken.stderr and "Traceback" not in broken.stderr
        assert "refuses to load in a worker" in broken.stderr.strip().splitlines()[-1]
    cmd[-3], cmd[-1] = "--model-workers=1", str(tmp_path / "dies")
    died = subprocess.run(cmd, capture_output=True, text=True, env={**env, "DIE_IN_WORKERS": "1"}, timeout=300)
    assert died.returncode == 3, died.stderr
    assert "BrokenProcessPool" not in died.stderr and "Traceback" not in died.stderr
    last = died.stderr.strip().splitlines()[-1]
    assert last.startswith("error: a --model-workers process died") and "resume" in last, died.stderr


# -- the CRF overlapped with the next image's model passes (issue 24) ----------------------


def _photo(height: int, width: int) -> Image.Image:
    """scikit-image's astronaut when it is installed, else a photo-like stand-in: smooth
    shading, soft-edged shapes and sensor noise (many distinct colours, unlike the scenes)."""
    try:
        import skimage.data
    except ImportError:
        y, x = np.mgrid[0:height, 0:width] / max(height, width)
        rgb = np.stack([np.sin(3 * x + 1), np.cos(4 * y), np.sin(2 * (x + y))], -1) * 90 + 128
        rgb[(x - 0.4) ** 2 + (y - 0.3) ** 2 < 0.04] = (200, 60, 40)
        rgb += np.random.default_rng(0).normal(0, 6, rgb.shape)
        return Image.fromarray(rgb.clip(0, 255).astype(np.uint8))
    return Image.fromarray(skimage.data.astronaut()).resize((width, height), Image.Resampling.BICUBIC)


@pytest.mark.slow
@pytest.mark.parametrize("compat", ["paper", "authors"])
def test_the_crf_in_workers_gives_the_serial_labels_on_photos_scenes_and_noise(tmp_path, compat):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _photo(120, 160).save(inputs / "photo.png")
    make_scene(120, 160, ["red", "green", "blue"], seed=0)[0].save(inputs / "scene.png")
    noise = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(noise).save(inputs / "noise.png")
    labels = {}
    for workers in (0, 1):
        out = tmp_path / f"out{workers}"
        result = CliRunner().invoke(
            app,
            ["segment", str(inputs), "--classes", "red,green,blue", "--adapter", "synthetic", "--compat", compat]
            + ["--image-size", "96x128", "--postprocess", "blur,crf", "--device", "cpu", "--out", str(out)]
            + ["--workers", str(workers)],
        )
        assert result.exit_code == 0, result.output
        labels[workers] = {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))}
    assert sorted(labels[0]) == ["noise.png", "photo.png", "scene.png"]
    assert labels[0] == labels[1]
    for name in ("photo.png", "scene.png"):  # not vacuous (noise is all background under the authors' rules)
        assert len(np.unique(np.asarray(Image.open(tmp_path / "out0" / name)))) > 2


def test_model_workers_refuse_a_gpu_device_before_any_output(tmp_path, monkeypatch):
    from pnpseg.testing.synthetic import SyntheticAdapter

    init = SyntheticAdapter.__init__

    def on_a_gpu(self, *args, **kwargs):  # no GPU here: the adapter only says where it runs
        init(self, *args, **kwargs)
        self.device = torch.device("cuda", 0)

    monkeypatch.setattr(SyntheticAdapter, "__init__", on_a_gpu)
    make_scene(32, 32, ["red"], seed=0)[0].save(tmp_path / "a.png")
    result = CliRunner().invoke(
        app, ["segment", str(tmp_path / "a.png"), *ARGS, "--out", str(tmp_path / "o"), "--model-workers", "1"]
    )
    assert result.exit_code == 2, result.output
    assert "--model-workers runs the model in CPU processes, but the device is cuda:0" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()
