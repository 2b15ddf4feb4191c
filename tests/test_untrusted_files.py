"""Untrusted files are parsed safely (issue 21, items 14-16): every file a user or another
program wrote is read with a one-line usage error for what is malformed, never a crash (exit 4)
and never a silently wrong value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_run import cli

from pnpseg.errors import PnpsegError
from pnpseg.sources.gpt4o import class_index, parse_answer, read_gpt4o

DEEP = "[" * 100_000 + "]" * 100_000  # deeper than Python's JSON parser can recurse


def one_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


# -- item 14: GPT-4o answers -------------------------------------------------------------------
def test_a_negative_gpt4o_index_is_not_read_as_a_class():
    assert parse_answer("[-2: 'x', 3: 'sky'], [100, 90]") == [(-2, 100.0), (3, 90.0)]
    index = {1: "aeroplane", 2: "bicycle", 3: "bird"}
    assert [i for i, _ in parse_answer("[-2: 'x']") if i in index] == []


@pytest.mark.parametrize("confidence", ["nan", "inf", "1e400", "-inf"])
def test_a_confidence_that_is_not_a_finite_number_is_refused(tmp_path, confidence):
    with pytest.raises(ValueError, match="finite"):
        parse_answer(f"[2: 'bicycle'], [{confidence}]")
    path = tmp_path / "answers.json"
    path.write_text(json.dumps({"2007_000129": f"[2: 'bicycle'], [{confidence}%]"}))
    with pytest.raises(PnpsegError, match="2007_000129"):
        read_gpt4o(path, class_index("voc21", []), 70)


# -- item 15: nesting too deep is malformed JSON, exit 2 --------------------------------------
def test_a_deeply_nested_preset_is_a_usage_error(scene, tmp_path):
    preset = tmp_path / "p.json"
    preset.write_text(DEEP)
    result = cli(
        "segment", scene, "--adapter", "synthetic", "--classes", "red", "--preset", preset, "--out", tmp_path / "o"
    )
    assert result.exit_code == 2 and "nested too deeply" in one_line(result), result.output


def test_a_deeply_nested_class_file_or_labels_file_is_a_usage_error(scene, tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text(DEEP)
    result = cli(
        "segment",
        scene,
        "--adapter",
        "synthetic",
        "--classes",
        "red,blue",
        "--class-source",
        f"file:{deep}",
        "--out",
        tmp_path / "o",
    )
    assert result.exit_code == 2 and "nested too deeply" in one_line(result), result.output
    result = cli(
        "tune", scene, "--labels", deep, "--adapter", "synthetic", "--scorer", "synthetic", "--out", tmp_path / "p.json"
    )
    assert result.exit_code == 2 and "nested too deeply" in one_line(result), result.output


def test_a_deeply_nested_classes_json_is_refused_in_one_line(scene, tmp_path):
    out = tmp_path / "o"
    args = ["segment", scene, "--adapter", "synthetic", "--classes", "red", "--out", out]
    assert cli(*args).exit_code == 0
    (out / "classes.json").write_text(DEEP)  # the class table, replaced by something else
    result = cli(*args)
    assert result.exit_code == 2 and "classes.json" in one_line(result), result.output
    preds = tmp_path / "preds"
    preds.mkdir()
    (preds / "classes.json").write_text(DEEP)
    from pnpseg.evaluation.datasets import DatasetError
    from pnpseg.evaluation.predictors import PredictionFolder

    with pytest.raises(DatasetError, match="nested too deeply"):
        PredictionFolder(preds, dataset=None)


def test_a_deeply_nested_manifest_line_is_ignored_like_a_cut_one(scene, tmp_path):
    out = tmp_path / "o"
    args = ["segment", scene, "--adapter", "synthetic", "--classes", "red,blue", "--out", out]
    assert cli(*args).exit_code == 0
    with (out / "manifest.jsonl").open("a") as manifest:
        manifest.write(DEEP + "\n")
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert "already done" in result.output or "1 already" in result.output, result.output


def test_deep_json_everywhere_reads_as_a_value_error():
    from pnpseg.io.jsontext import parse_json

    with pytest.raises(ValueError, match="nested too deeply"):
        parse_json(DEEP)
    assert parse_json('{"a": [1]}') == {"a": [1]}


# -- item 16: convert blip on what is not a BLIP checkpoint -----------------------------------
@pytest.fixture(scope="module")
def lavis(tmp_path_factory):
    from tiny_models import write_tiny_lavis_blip_checkpoint

    return write_tiny_lavis_blip_checkpoint(tmp_path_factory.mktemp("lavis"))


def malformed(lavis: Path, folder: Path, change) -> Path:
    """The tiny LAVIS checkpoint with ``change(state)`` applied, its vocab.txt beside it."""
    import shutil

    import torch

    state = torch.load(lavis, weights_only=True)["model"]
    change(state)
    path = folder / "bad.pth"
    torch.save({"model": state}, path)
    shutil.copy(lavis.parent / "vocab.txt", folder / "vocab.txt")
    return path


@pytest.mark.parametrize(
    ("what", "words"),
    [
        ("text", "is not a PyTorch checkpoint"),
        ("foreign", "not a BLIP image-text-matching checkpoint"),
        ("1-d position table", "does not fit BLIP ITM"),
        ("no mlp", "does not fit BLIP ITM"),
        ("wrong width", "does not fit BLIP ITM"),
    ],
)
def test_convert_blip_on_a_file_that_is_not_a_blip_checkpoint_is_exit_2(lavis, tmp_path, what, words):
    import torch

    if what == "text":
        path = tmp_path / "notes.pth"
        path.write_text("hello\n")
    elif what == "foreign":
        path = tmp_path / "resnet.pth"
        torch.save({"model": {"conv1.weight": torch.zeros(2, 3)}}, path)
    else:
        change = {
            "1-d position table": lambda s: s.update({"visual_encoder.pos_embed": torch.zeros(5)}),
            "no mlp": lambda s: s.pop("visual_encoder.blocks.0.mlp.fc1.weight"),
            "wrong width": lambda s: s.update({"vision_proj.weight": torch.zeros(3, 7)}),
        }[what]
        path = malformed(lavis, tmp_path, change)
    result = cli("convert", "blip", path, tmp_path / "hf")
    assert result.exit_code == 2 and words in one_line(result), result.output
    assert not (tmp_path / "hf").exists()
