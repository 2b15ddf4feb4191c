"""`pnpseg tune`: finds the planted head, one VLM pass per image, cache, presets, CLIP scorer."""

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

from pnpseg.cli import app
from pnpseg.errors import PnpsegError
from pnpseg.io.images import discover
from pnpseg.io.preset import PresetError, apply_preset, load_preset, save_preset
from pnpseg.testing import SyntheticAdapter, make_scene, miou
from pnpseg.tuning.capture import read_labels
from pnpseg.tuning.space import parse_float_range, parse_int_range, sample_grid

SIZE = (112, 144)
SCENES = {
    "s0.png": ["red", "green"],
    "sub/s1.png": ["blue", "yellow", "red"],
    "s2.png": ["cyan", "magenta"],
    "s3.png": ["green", "blue", "white"],
}
FAST = ["--adapter", "synthetic", "--scorer", "synthetic", "--image-size", "112x144", "--device", "cpu"]


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune-scenes")
    truth = {}
    for i, (rel, names) in enumerate(SCENES.items()):
        image, labels = make_scene(*SIZE, names, seed=10 + i)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        image.save(root / rel)
        truth[rel] = (names, labels)
    labels = tmp_path_factory.mktemp("labels") / "labels.json"
    labels.write_text(json.dumps({rel: names for rel, names in SCENES.items()}))
    return root, labels, truth


@pytest.fixture(scope="module")
def tuned(scenes, tmp_path_factory):
    root, labels, _ = scenes
    out = tmp_path_factory.mktemp("tuned") / "preset.json"
    result = invoke("tune", root, "--labels", labels, "--out", out, "--trials", "200", *FAST, "--json")
    return out, result


@pytest.mark.slow
def test_json_summary_on_stdout(tuned):
    out, result = tuned
    summary = json.loads(result.stdout)  # the only thing on stdout
    preset = json.loads(out.read_text())
    assert summary["command"] == "tune" and summary["preset"] == str(out)
    assert (
        summary["params"]["layer"] == preset["params"]["layer"]
        and summary["params"]["head"] == preset["params"]["head"]
    )
    assert summary["reward"]["total"] == preset["reward"]["total"]
    assert "best: layer" in result.stderr


def test_tune_finds_the_planted_head(tuned):
    out, result = tuned
    assert result.exit_code == 0, result.output
    preset = load_preset(out)
    assert (preset["params"]["layer"], preset["params"]["head"]) == (3, 2)
    assert preset["adapter"] == "synthetic" and preset["params"]["image_size"] == list(SIZE)
    assert preset["params"]["threshold"] in parse_float_range("0.05:0.5:0.1", "t")
    assert preset["params"]["blur_sigma"] in parse_float_range("0.01:0.11:0.02", "b")
    assert preset["reward"]["total"] == preset["reward"]["possible"] == 10
    assert set(preset["reward"]["per_class"]) == {"red", "green", "blue", "yellow", "cyan", "magenta", "white"}
    assert len(preset["log"]["stage1"]) == 4 * 4 * 5 and len(preset["log"]["stage2"]) == 5  # whole grids
    assert preset["search"]["vlm_passes"] == 4 and "VLM passes: 4 for 4 image(s)" in result.output
    heat = Image.open(out.parent / "preset-heatmap.png")
    assert heat.size[0] > 100 and preset["search"]["heatmap_grid"][2][1] == 10
    assert len(list((out.parent / "preset.cache").glob("*.pt"))) == 4


@pytest.mark.slow
def test_preset_segments_better_than_a_wrong_head_and_flags_win(scenes, tuned, tmp_path):
    root, _, truth = scenes
    out, _ = tuned
    scores = {}
    for name, extra in {"preset": [], "wrong": ["--layer", "1", "--head", "1"]}.items():
        values = []
        for i, (rel, (names, gt)) in enumerate(truth.items()):  # each scene with its own classes
            dest = tmp_path / name / str(i)
            result = invoke(
                "segment",
                root / rel,
                "--classes",
                ",".join(names),
                "--preset",
                out,
                "--out",
                dest,
                "--device",
                "cpu",
                *extra,
            )
            assert result.exit_code == 0, result.output
            record = json.loads((dest / "manifest.jsonl").read_text().splitlines()[0])
            assert record["settings"]["adapter"] == "synthetic"  # from the preset: no --adapter given
            assert record["settings"]["params"]["image_size"] == list(SIZE)
            assert record["settings"]["params"]["layer"] == (3 if name == "preset" else 1)  # the flag wins
            pred = np.array(Image.open(dest / Path(rel).with_suffix(".png").name))
            values.append(miou(pred, gt, len(names) + 1))
        scores[name] = float(np.mean(values))
    assert scores["preset"] >= 0.8 and scores["preset"] > scores["wrong"] + 0.2, scores


@pytest.fixture
def count_forward(monkeypatch):
    calls = []
    original = SyntheticAdapter.forward

    def counted(self, pixels, text, layers):
        calls.append(list(layers))
        return original(self, pixels, text, layers)

    monkeypatch.setattr(SyntheticAdapter, "forward", counted)
    return calls


@pytest.mark.slow
def test_one_vlm_pass_per_image_whatever_the_trials_and_cache_resume(scenes, tmp_path, count_forward):
    root, labels, _ = scenes
    for trials, folder in ((3, "a"), (60, "b")):
        result = invoke(
            "tune", root, "--labels", labels, "--out", tmp_path / folder / "p.json", "--trials", trials, *FAST
        )
        assert result.exit_code == 0, result.output
        assert len(count_forward) == 4, (trials, count_forward)  # one forward per image...
        assert all(layers == [0, 1, 2, 3] for layers in count_forward)  # ...capturing every layer
        assert len(load_preset(tmp_path / folder / "p.json")["log"]["stage1"]) == trials
        count_forward.clear()
    again = invoke("tune", root, "--labels", labels, "--out", tmp_path / "b" / "p.json", "--trials", 60, *FAST)
    assert again.exit_code == 0, again.output
    assert count_forward == [] and "VLM passes: 0 for 4 image(s) (4 from the cache)" in again.output
    first, second = (load_preset(tmp_path / "b" / "p.json") for _ in range(2))
    assert first["params"] == second["params"]
    other = invoke(
        "tune",
        root,
        "--labels",
        labels,
        "--out",
        tmp_path / "c" / "p.json",
        "--cache",
        tmp_path / "b" / "p.cache",
        "--image-size",
        "96x128",
        "--trials",
        2,
        *FAST[:4],
    )
    assert other.exit_code == 0, other.output
    assert len(count_forward) == 4  # another input size is another cache key


@pytest.mark.slow
def test_seeded_random_search_is_reproducible(scenes, tmp_path):
    root, labels, _ = scenes
    logs = []
    for seed, folder in ((3, "x"), (3, "y"), (4, "z")):
        result = invoke(
            "tune",
            root,
            "--labels",
            labels,
            "--out",
            tmp_path / folder / "p.json",
            "--trials",
            6,
            "--seed",
            seed,
            "--no-cache",
            *FAST,
        )
        assert result.exit_code == 0, result.output
        logs.append(
            [
                (t["layer"], t["head"], t["threshold"])
                for t in load_preset(tmp_path / folder / "p.json")["log"]["stage1"]
            ]
        )
    assert logs[0] == logs[1] and logs[0] != logs[2]
    assert not (tmp_path / "x" / "p.cache").exists()


def test_search_space_parsing():
    assert parse_float_range("0.05:0.5:0.1", "t") == [0.05, 0.15, 0.25, 0.35, 0.45]
    assert parse_float_range("0.01:0.11:0.02", "b") == [0.01, 0.03, 0.05, 0.07, 0.09]
    assert parse_float_range("0.2,0.1", "t") == [0.1, 0.2]
    assert parse_int_range("1-3,7", 1, 12, "layers") == [1, 2, 3, 7]
    with pytest.raises(PnpsegError, match="out of range"):
        parse_int_range("1-13", 1, 12, "layers")
    with pytest.raises(PnpsegError, match="start:stop:step"):
        parse_float_range("0.1:0.5", "t")
    grid = list(range(10))
    assert sample_grid(grid, 20, 0) == grid and sample_grid(grid, 4, 1) == sample_grid(grid, 4, 1)
    assert len(set(sample_grid(grid, 4, 1))) == 4


def test_csv_labels_and_key_matching(scenes, tmp_path):
    root, _, _ = scenes
    items, _ = discover([root])
    csv = tmp_path / "labels.csv"
    csv.write_text("image,classes\ns0,red;green\nsub/s1.png,blue; yellow;red\n")
    labelled, unlabelled = read_labels(csv, items)
    assert [(e.item.relative.as_posix(), e.classes) for e in labelled] == [
        ("s0.png", ["red", "green"]),
        ("sub/s1.png", ["blue", "yellow", "red"]),
    ]
    assert len(unlabelled) == 2
    result = invoke("tune", root, "--labels", csv, "--out", tmp_path / "p.json", "--trials", 2, *FAST)
    assert result.exit_code == 0, result.output
    assert "2 input image(s) not in the labels file are ignored" in result.output


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("l.json", '{"nope.png": ["red"]}', "names image 'nope.png', which is not among the inputs"),
        ("l.json", '{"s0.png": ["red", "purple"]}', "labels for 's0.png'"),
        ("l.json", '{"s0.png": ["red", "Red"]}', "duplicate class name"),
        ("l.json", '{"s0.png": ["red"', "is not valid JSON"),
        ("l.json", '{"s0.png": "red"}', "must be a list of class names"),
        ("l.csv", "s0.png,red,green\n", "expected 2 columns"),
        ("l.csv", "s0.png,red\ns0,green\n", "twice"),
        ("missing.json", None, "labels file not found"),
    ],
)
def test_bad_labels_are_one_line_errors(scenes, tmp_path, count_forward, name, content, message):
    root, _, _ = scenes
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    result = invoke("tune", root, "--labels", path, "--out", tmp_path / "p.json", *FAST)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert count_forward == []  # rejected before any VLM pass
    if "purple" in (content or ""):
        assert "cannot represent: purple" in result.output


def test_preset_files(tmp_path):
    path = tmp_path / "p.json"
    save_preset(
        path, adapter="synthetic", model=None, params={"layer": 3, "head": 2, "threshold": 0.15}, reward={"total": 1}
    )
    preset = load_preset(path)
    assert preset["reward"] == {"total": 1} and preset["format"] == "pnpseg-preset"
    adapter, model, params = apply_preset(preset, None, None, {"layer": None, "head": 4})
    assert (adapter, model, params["layer"], params["head"]) == ("synthetic", None, 3, 4)
    assert apply_preset(preset, "blip", None, {})[0] == "blip"
    assert apply_preset(None, None, None, {})[0] == "blip"
    path.write_text(json.dumps({"format": "pnpseg-preset", "params": {"layer": 0}}))
    with pytest.raises(PresetError, match="1-based"):
        load_preset(path)
    path.write_text(json.dumps({"format": "pnpseg-preset", "params": {"colour": 1}}))
    with pytest.raises(PresetError, match="unknown parameter"):
        load_preset(path)
    path.write_text("[]")
    with pytest.raises(PresetError, match="not a pnpseg preset"):
        load_preset(path)
    result = invoke(
        "segment", tmp_path, "--classes", "red", "--preset", tmp_path / "nope.json", "--out", tmp_path / "o"
    )
    assert result.exit_code == 2 and "preset not found" in result.output


# -- the CLIP scorer with a tiny randomly initialised open_clip model --------------------
TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    open_clip = pytest.importorskip("open_clip")
    folder = tmp_path_factory.mktemp("tinyclip")
    (folder / "pnpseg-tiny-clip.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(folder / "pnpseg-tiny-clip.json")
    torch.manual_seed(0)
    model = open_clip.create_model("pnpseg-tiny-clip", pretrained=None)
    checkpoint = folder / "tiny.pt"
    torch.save(model.state_dict(), checkpoint)
    return f"pnpseg-tiny-clip:{checkpoint}"


@pytest.mark.slow
def test_clip_scorer_end_to_end(scenes, tmp_path, tiny_clip, count_forward):
    from pnpseg.tuning.scorers import ClipScorer

    scorer = ClipScorer(tiny_clip)
    logits = scorer(
        [np.zeros((40, 50, 3), np.uint8), Image.new("RGB", (30, 20), "red"), torch.rand(3, 24, 24)], ["red", "green"]
    )
    assert logits.shape == (3, 2) and logits.abs().max() <= 100.0 + 1e-4
    root, labels, _ = scenes
    out = tmp_path / "clip.json"
    result = invoke(
        "tune",
        root,
        "--labels",
        labels,
        "--out",
        out,
        "--adapter",
        "synthetic",
        "--scorer",
        "clip",
        "--scorer-model",
        tiny_clip,
        "--trials",
        4,
        "--blur-scales",
        "0.05",
        "--image-size",
        "112x144",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    preset = load_preset(out)
    assert preset["scorer"] == {"name": "clip", "model": tiny_clip}
    assert len(preset["log"]["stage1"]) == 4 and len(count_forward) == 4
    bad = invoke(
        "tune",
        root,
        "--labels",
        labels,
        "--out",
        out,
        "--scorer",
        "clip",
        "--scorer-model",
        f"pnpseg-tiny-clip:{tmp_path / 'none.pt'}",
        *FAST[:2],
    )
    assert bad.exit_code == 3 and "neither a file nor a known tag" in bad.output  # environment: a missing model


@pytest.mark.slow
def test_clip_weights_unavailable_offline_is_one_line(scenes, tmp_path):
    pytest.importorskip("open_clip")
    root, labels, _ = scenes
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pnpseg.cli",
            "tune",
            str(root),
            "--labels",
            str(labels),
            "--adapter",
            "synthetic",
            "--scorer-model",
            "ViT-B-32:openai",
            "--out",
            str(tmp_path / "p.json"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 3  # environment: weights neither cached nor downloadable
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("Tuning")]
    assert len(lines) == 1 and "--scorer-model" in lines[0] and "ViT-B-32:openai" in lines[0], proc.stderr


@pytest.mark.slow
def test_tune_a_tiny_blip_with_the_tiny_clip_scorer_and_segment_with_the_preset(scenes, tmp_path, tiny_clip):
    from tiny_models import build_tiny_blip

    blip = build_tiny_blip(tmp_path / "blip")  # 3 layers × 2 heads
    root, labels, _ = scenes
    out = tmp_path / "blip-preset.json"
    result = invoke(
        "tune",
        root,
        "--labels",
        labels,
        "--out",
        out,
        "--adapter",
        "blip",
        "--model",
        blip,
        "--scorer",
        "clip",
        "--scorer-model",
        tiny_clip,
        "--trials",
        6,
        "--blur-scales",
        "0.03,0.05",
        "--image-size",
        64,
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    assert "VLM passes: 4 for 4 image(s)" in result.output
    preset = load_preset(out)
    assert preset["adapter"] == "blip" and preset["model"] == str(blip)
    assert 1 <= preset["params"]["layer"] <= 3 and 1 <= preset["params"]["head"] <= 2
    assert preset["params"]["blur_sigma"] in (0.03, 0.05)
    segmented = invoke(
        "segment",
        root / "s0.png",
        "--classes",
        "red,green",
        "--preset",
        out,
        "--out",
        tmp_path / "seg",
        "--device",
        "cpu",
    )
    assert segmented.exit_code == 0, segmented.output
    record = json.loads((tmp_path / "seg" / "manifest.jsonl").read_text().splitlines()[0])
    assert (
        record["settings"]["adapter"] == "blip" and record["settings"]["params"]["layer"] == preset["params"]["layer"]
    )


# -- the library API and the guarantees of issue 12 (items 3 and 11) ----------------------
LIB = {"adapter": "synthetic", "scorer": "synthetic", "image_size": "112x144", "device": "cpu"}


@pytest.mark.slow
def test_tune_is_a_library_call_with_a_result_and_no_console_output(scenes, tmp_path, capsys):
    import pnpseg

    root, labels, _ = scenes
    events = []
    result = pnpseg.tune([root], labels, trials=20, seed=1, progress=lambda *e: events.append(e), **LIB)
    assert capsys.readouterr() == ("", "")  # no console side effects
    assert list(tmp_path.iterdir()) == []  # nothing written without out=
    assert (result.best.layer, result.best.head) == (result.params["layer"], result.params["head"])
    assert len(result.stage1) == 20 and len(result.stage2) == 5 and result.images == 4
    assert result.heatmap.shape == (4, 4) and result.ranked(1)[0].reward.total == result.best_stage1.reward.total
    assert result.vlm_passes == 4 and result.cache_hits == 0
    assert events[0] == ("capture", 0, 4) and ("stage 1", 80, 80) in events and events[-1] == ("stage 2", 20, 20)
    assert result.margin["best"] == result.best_stage1.reward.total and result.margin["margin"] > 0.05


def test_labels_with_one_class_per_image_are_refused_before_any_pass(scenes, tmp_path, count_forward):
    """Issue 12.3: every trial would score 0 and the first grid point would win."""
    root, _, _ = scenes
    labels = tmp_path / "one.json"
    labels.write_text(json.dumps({"s0.png": ["red"], "s2.png": ["cyan"]}))
    out = tmp_path / "p.json"
    result = invoke("tune", root, "--labels", labels, "--out", out, *FAST)
    assert result.exit_code == 2 and "two or more classes" in result.output, result.output
    assert "Traceback" not in result.output and not out.exists() and count_forward == []


@pytest.mark.slow
def test_a_best_trial_that_hardly_beats_the_median_warns_and_records_the_margin(scenes, tmp_path):
    """Issue 12.3: a search whose reward cannot tell trials apart says so, in the preset too."""
    root, labels, _ = scenes
    out = tmp_path / "p.json"
    flat = invoke(
        "tune", root, "--labels", labels, "--out", out, "--layers", "1", "--heads", "1-2", "--thresholds", "0.45", *FAST
    )
    assert flat.exit_code == 0, flat.output
    search = load_preset(out)["search"]
    assert search["margin"]["margin"] < 0.05 and search["margin"]["median"] == search["margin"]["best"]
    assert "warning:" in flat.output and "hardly tells the trials apart" in flat.output
    assert search["warnings"] and "hardly tells" in search["warnings"][0]
    good = pnpseg_tune_margin(scenes)
    assert good["margin"] >= 0.05


def pnpseg_tune_margin(scenes) -> dict:
    import pnpseg

    root, labels, _ = scenes
    result = pnpseg.tune([root], labels, trials=30, **LIB)
    assert result.warnings == []
    return result.margin


@pytest.mark.parametrize("target", ["photo", "folder", "labels", "heatmap-photo", "txt", "non-image"])
def test_tune_out_is_checked_before_the_search_and_never_overwrites_an_input(scenes, tmp_path, count_forward, target):
    """Issue 12.11: --out on an input photo overwrote it with JSON; on a folder it crashed at the end."""
    root, labels, _ = scenes
    inputs = tmp_path / "in"
    inputs.mkdir()
    photo = inputs / "s0.png"
    photo.write_bytes((root / "s0.png").read_bytes())
    (inputs / "p-heatmap.png").write_bytes((root / "s2.png").read_bytes())
    notes = inputs / "notes.json"  # a file discovery skips is still an input not to overwrite
    notes.write_text("{}")
    label_file = tmp_path / "labels.json"
    label_file.write_text(json.dumps({"s0.png": ["red", "green"], "p-heatmap.png": ["cyan", "magenta"]}))
    out, message = {
        "photo": (photo, "must name a .json preset file"),
        "folder": (inputs, "is a folder"),
        "labels": (label_file, "would overwrite the input"),
        "heatmap-photo": (inputs / "p.json", "would overwrite the input"),
        "txt": (tmp_path / "preset.txt", "must name a .json preset file"),
        "non-image": (notes, "would overwrite the input"),
    }[target]
    before = {p: p.read_bytes() for p in (photo, inputs / "p-heatmap.png", label_file, notes)}
    result = invoke("tune", inputs, "--labels", label_file, "--out", out, *FAST)
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and count_forward == []  # before any VLM pass
    assert {p: p.read_bytes() for p in before} == before


def test_an_image_listed_with_no_classes_is_unlabelled(tmp_path):
    """The labels file shares the class-file format: ``[]`` means "no classes", not an error."""
    from pnpseg.io.images import discover
    from pnpseg.tuning.capture import read_labels

    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"a.png": ["red", "blue"], "b.png": []}))
    labelled, unlabelled = read_labels(labels, discover([tmp_path])[0])
    assert [(e.item.path.name, e.classes) for e in labelled] == [("a.png", ["red", "blue"])]
    assert [item.path.name for item in unlabelled] == ["b.png"]


def test_tune_never_replaces_a_file_it_did_not_write(scenes, tmp_path, count_forward):
    """Issue 21 item 1 on ``tune``: the heat-map beside ``--out p.json`` is ``p-heatmap.png``; a
    user's file of that name (or a preset pnpseg did not write) is refused before the search
    (exit 2) and kept. A file ``tune`` wrote itself is replaced by the next run."""
    root, labels, _ = scenes
    for name in ("p-heatmap.png", "p.json"):
        folder = tmp_path / name.replace(".", "-")
        folder.mkdir()
        (folder / name).write_text("the user's")
        result = invoke("tune", root, "--labels", labels, "--out", folder / "p.json", "--trials", "4", *FAST)
        assert result.exit_code == 2 and "not written by pnpseg" in result.output, result.output
        assert (folder / name).read_text() == "the user's" and count_forward == []
    out = tmp_path / "mine" / "p.json"
    for _ in range(2):
        again = invoke("tune", root, "--labels", labels, "--out", out, "--trials", "4", *FAST)
        assert again.exit_code == 0, again.output
    assert json.loads(out.read_text())["adapter"] == "synthetic" and (out.parent / "p-heatmap.png").stat().st_size
