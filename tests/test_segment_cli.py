"""`pnpseg segment` end to end with the synthetic adapter: outputs, accuracy, bad inputs, resume."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pnpseg import VLMOutput
from pnpseg.cli import app
from pnpseg.io.outputs import is_temp_name
from pnpseg.method.segmenter import Segmenter
from pnpseg.testing import SyntheticAdapter, make_scene, miou

COLOURS = ["red", "green", "blue"]
SCENES = {"a/wide.png": (200, 320, 0), "a/b/tall.png": (320, 200, 1), "c.jpg": (240, 256, 2)}


def run(*args: str):
    return CliRunner().invoke(app, ["segment", *args])


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    truth = {}
    for rel, (h, w, seed) in SCENES.items():
        image, labels = make_scene(h, w, COLOURS, seed=seed, jpeg_quality=90 if rel.endswith("jpg") else None)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        image.save(root / rel)
        truth[rel] = labels
    (root / "notes.txt").write_text("not an image")
    return root, truth


@pytest.fixture(scope="module")
def segmented(scenes, tmp_path_factory):
    root, _ = scenes
    out = tmp_path_factory.mktemp("out")
    result = run(
        str(root),
        "--classes",
        ",".join(COLOURS),
        "--adapter",
        "synthetic",
        "--out",
        str(out),
        "--image-size",
        "160x224",
        "--viz",
        "--device",
        "cpu",
    )
    return out, result


def test_outputs_layout_palette_and_manifest(scenes, segmented):
    root, _ = scenes
    out, result = segmented
    assert result.exit_code == 0, result.output
    assert "notes.txt: not an image file" in result.output
    assert json.loads((out / "classes.json").read_text()) == {"0": "background", "1": "red", "2": "green", "3": "blue"}
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 3 and {r["status"] for r in records} == {"ok"}
    for rel, (h, w, _) in SCENES.items():
        png = Image.open(out / Path(rel).with_suffix(".png"))
        assert png.mode == "P" and png.size == (w, h)
        assert png.getpalette()[3:6] == [128, 0, 0]
        assert (out / "overlays" / Path(rel).with_suffix(".png")).exists()
    record = next(r for r in records if r["input"].endswith("wide.png"))
    assert (record["width"], record["height"]) == (320, 200)
    assert set(record["classes"]) == {"background", "red", "green", "blue"}
    assert abs(sum(record["classes"].values()) - 1) < 1e-3
    assert record["settings"]["params"]["layer"] == 3 and record["settings"]["adapter"] == "synthetic"
    assert record["seconds"] > 0


def test_synthetic_accuracy_on_non_square_images(scenes, segmented):
    _, truth = scenes
    out, _ = segmented
    scores = [miou(np.array(Image.open(out / Path(rel).with_suffix(".png"))), gt, 4) for rel, gt in truth.items()]
    assert min(scores) >= 0.85, scores


class TransposedGrid(SyntheticAdapter):
    """The classic bug: patches read column-major instead of row-major."""

    def forward(self, pixels, text, layers):
        out = super().forward(pixels, text, layers)
        gh, gw = out.grid

        def swap(attention: torch.Tensor) -> torch.Tensor:
            block = out.to_text_image(attention)
            return block.reshape(*block.shape[:-1], gh, gw).transpose(-1, -2).reshape(block.shape)

        return VLMOutput(out.match_logit, out.attentions, out.grid, swap)


def test_accuracy_check_catches_a_transposed_grid(scenes):
    _, truth = scenes
    image, gt = make_scene(200, 320, COLOURS, seed=0)
    good = Segmenter(SyntheticAdapter(), image_size=(160, 224))(image, COLOURS)
    bad = Segmenter(TransposedGrid(), image_size=(160, 224))(image, COLOURS)
    assert miou(good.labels, gt, 4) >= 0.85
    assert miou(bad.labels, gt, 4) < 0.85


def test_rerun_skips_done_images_and_overwrite_redoes_them(scenes, segmented):
    root, _ = scenes
    out, _ = segmented
    before = (out / "manifest.jsonl").read_text()
    again = run(
        str(root),
        "--classes",
        ",".join(COLOURS),
        "--adapter",
        "synthetic",
        "--out",
        str(out),
        "--image-size",
        "160x224",
        "--viz",
        "--device",
        "cpu",
    )
    assert again.exit_code == 0, again.output
    assert "Segmenting 0 image(s)" in again.output and "3 already done" in again.output
    assert (out / "manifest.jsonl").read_text() == before
    other = run(str(root), "--classes", "red,blue", "--adapter", "synthetic", "--out", str(out))
    assert other.exit_code == 2 and "other classes" in other.output
    settings = run(
        str(root), "--classes", ",".join(COLOURS), "--adapter", "synthetic", "--out", str(out), "--layer", "1"
    )
    assert settings.exit_code == 2 and "other settings" in settings.output


def test_overwrite_redoes(scenes, tmp_path):
    root, _ = scenes
    args = [str(root / "a" / "wide.png"), "--classes", "red", "--adapter", "synthetic", "--out", str(tmp_path)]
    assert run(*args).exit_code == 0
    redo = run(*args, "--overwrite", "--postprocess", "blur")
    assert redo.exit_code == 0 and "Segmenting 1 image(s)" in redo.output
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[-1])["settings"]["params"]["postprocess"] == ["blur"]


def odd_images(folder: Path) -> dict[str, tuple[int, int]]:
    """Write one file per odd kind; return name → expected (width, height) of the output."""
    rgb, _ = make_scene(60, 90, ["red"], seed=3)
    rgb.convert("L").save(folder / "gray.png")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "rgba.png")
    rgb.convert("P", palette=Image.ADAPTIVE).save(folder / "palette.png")
    Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257).save(folder / "sixteen.png")
    rgb.convert("CMYK").save(folder / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    rgb.save(folder / "rotated.jpg", exif=exif)
    Image.new("RGB", (3, 5), (255, 0, 0)).save(folder / "tiny.png")
    big, _ = make_scene(1500, 2600, ["red"], seed=4)
    big.save(folder / "large.jpg", quality=80)
    return {
        "gray": (90, 60),
        "rgba": (90, 60),
        "palette": (90, 60),
        "sixteen": (90, 60),
        "cmyk": (90, 60),
        "rotated": (60, 90),
        "tiny": (3, 5),
        "large": (2600, 1500),
    }


@pytest.mark.slow
def test_odd_images_work_and_bad_files_are_recorded(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    expected = odd_images(folder)
    (folder / "empty.png").write_bytes(b"")
    good_jpeg = (folder / "cmyk.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good_jpeg[: len(good_jpeg) // 2])
    (folder / "text.jpg").write_text("hello")
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    out = tmp_path / "out"
    result = run(str(folder), "--classes", "red,blue", "--adapter", "synthetic", "--out", str(out))
    assert result.exit_code == 1, result.output  # some inputs failed, the others were done
    records = {
        Path(json.loads(line)["input"]).stem: json.loads(line)
        for line in (out / "manifest.jsonl").read_text().splitlines()
    }
    for stem, size in expected.items():
        assert records[stem]["status"] == "ok", records[stem]
        assert Image.open(out / f"{stem}.png").size == size
    for stem in ("empty", "truncated", "text"):
        assert records[stem]["status"] == "error" and records[stem]["error"]
        assert not (out / f"{stem}.png").exists()
    assert "empty" in records["empty"]["error"]
    labels = np.array(Image.open(out / "tiny.png"))
    assert labels.shape == (5, 3) and set(np.unique(labels)) <= {0, 1}
    # The EXIF-rotated output is aligned with the displayed (rotated) image.
    rotated_in = np.array(Image.open(out / "rotated.png")) == 1
    upright = np.array(Image.open(out / "gray.png"))  # same scene, unrotated; grey has no red
    assert rotated_in.shape == upright.shape[::-1]
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()} == digests


@pytest.mark.parametrize(
    "classes, message",
    [
        ("", "blank class name"),
        ("red,,blue", "blank class name"),
        ("red,Red", "duplicate class name"),
        ("red,purple", "cannot represent: purple"),
    ],
)
def test_bad_class_lists_fail_before_running(scenes, tmp_path, classes, message):
    root, _ = scenes
    result = run(str(root), "--classes", classes, "--adapter", "synthetic", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_classes_file_and_missing_classes(scenes, tmp_path):
    root, _ = scenes
    classes = tmp_path / "classes.txt"
    classes.write_text("# colours\nred\n\ngreen\n")
    ok = run(
        str(root / "c.jpg"), "--classes-file", str(classes), "--adapter", "synthetic", "--out", str(tmp_path / "o")
    )
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / "o" / "classes.json").read_text())["2"] == "green"
    none = run(str(root), "--adapter", "synthetic", "--out", str(tmp_path / "p"))
    assert none.exit_code == 2 and "no class names" in none.output


def test_unknown_adapter_and_postprocessor_list_available(scenes, tmp_path):
    root, _ = scenes
    adapter = run(str(root), "--classes", "red", "--adapter", "nope", "--out", str(tmp_path))
    assert (
        adapter.exit_code == 2
        and "unknown adapter 'nope'; available:" in adapter.output
        and "synthetic" in adapter.output
    )
    post = run(
        str(root), "--classes", "red", "--adapter", "synthetic", "--postprocess", "blur,pamr", "--out", str(tmp_path)
    )
    assert post.exit_code == 2 and "unknown postprocessor 'pamr'; available: blur, crf" in post.output


def test_bad_parameters_and_missing_input(scenes, tmp_path):
    root, _ = scenes
    layer = run(str(root), "--classes", "red", "--adapter", "synthetic", "--layer", "9", "--out", str(tmp_path))
    assert layer.exit_code == 2 and "4 text→image attention layers" in layer.output
    rule = run(str(root), "--classes", "red", "--adapter", "synthetic", "--drop-rule", "top", "--out", str(tmp_path))
    assert rule.exit_code == 2 and "topk:N" in rule.output
    missing = run(str(tmp_path / "nope"), "--classes", "red", "--adapter", "synthetic", "--out", str(tmp_path))
    assert missing.exit_code == 2 and "input not found" in missing.output


def test_output_may_not_overwrite_inputs(tmp_path):
    image, _ = make_scene(64, 64, ["red"], seed=0)
    image.save(tmp_path / "x.png")
    result = run(str(tmp_path), "--classes", "red", "--adapter", "synthetic", "--out", str(tmp_path))
    assert result.exit_code == 2 and "would overwrite an input image" in result.output


@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE=1", "hub unreachable"])
@pytest.mark.slow
def test_missing_model_is_one_line(tmp_path, offline):
    image, _ = make_scene(64, 64, ["red"], seed=0)
    image.save(tmp_path / "x.png")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_HOME"] = str(tmp_path / "hf")
    if offline == "HF_HUB_OFFLINE=1":
        env["HF_HUB_OFFLINE"] = "1"
    else:  # nothing listens there: what a machine without network sees, minus the DNS wait
        env["HF_ENDPOINT"] = "http://127.0.0.1:9"
    started = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pnpseg.cli",
            "segment",
            str(tmp_path / "x.png"),
            "--classes",
            "cat",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 3  # environment: a missing model (README "Exit codes")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--model" in lines[0] and "Salesforce/blip-itm-large-flickr" in lines[0], proc.stderr
    assert time.perf_counter() - started < 30  # no minute of retries


@pytest.mark.slow
def test_killed_run_leaves_no_partial_png_and_resumes(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for seed in range(40):
        make_scene(120, 160, ["red", "blue"], seed=seed)[0].save(folder / f"{seed:02d}.png")
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "pnpseg.cli",
        "segment",
        str(folder),
        "--classes",
        "red,blue",
        "--adapter",
        "synthetic",
        "--out",
        str(out),
        "--image-size",
        "96",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*.png"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(out.glob("*.png"))
    assert 3 <= len(done) < 40
    for png in done:
        Image.open(png).load()  # every visible PNG is complete
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "already done" in resumed.stderr
    assert len(list(out.glob("*.png"))) == 40
    assert not [p for p in out.iterdir() if is_temp_name(p.name)]
    records = [
        json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines() if line.strip().endswith("}")
    ]
    assert {r["input"] for r in records if r["status"] == "ok"} == {str(p) for p in folder.glob("*.png")}


def test_batches_give_the_same_labels_as_single_images(scenes, segmented, tmp_path):
    root, _ = scenes
    out, _ = segmented
    result = run(
        str(root),
        "--classes",
        ",".join(COLOURS),
        "--adapter",
        "synthetic",
        "--out",
        str(tmp_path),
        "--image-size",
        "160x224",
        "--batch-size",
        "2",
    )
    assert result.exit_code == 0, result.output
    for rel in SCENES:
        png = Path(rel).with_suffix(".png")
        assert np.array_equal(np.array(Image.open(tmp_path / png)), np.array(Image.open(out / png)))
