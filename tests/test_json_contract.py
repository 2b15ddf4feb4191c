"""The exit-code and ``--json`` contract of every command (issue 21, items 22 and 23): with
``--json``, exactly one JSON document lands on stdout whatever the exit (0, 1, 2, 3, 4, 130),
the error in it; each error class exits with its documented code."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from cli_run import cli

from pnpseg.errors import EnvironmentProblem
from pnpseg.testing import make_scene


def one_document(result) -> dict:
    """The only thing on stdout: one JSON object whose exit code is the process's."""
    document = json.loads(result.stdout)
    assert isinstance(document, dict), result.stdout
    assert document["exit_code"] == result.exit_code, result.output
    return document


def segment(scene: Path, tmp_path: Path, *extra: object):
    return cli("segment", scene, "--adapter", "synthetic", "--classes", "red,blue", "--out", tmp_path / "o", *extra)


def test_segment_json_ok_and_inputs_failed(scene, tmp_path):
    ok = one_document(segment(scene, tmp_path, "--json"))
    assert ok["exit_code"] == 0 and ok["error"] is None and ok["segmented"] == 1
    broken = tmp_path / "in"
    broken.mkdir()
    (broken / "b.png").write_bytes(b"\x89PNG not really")
    failed = one_document(segment(broken, tmp_path, "--json"))
    assert failed["exit_code"] == 1 and failed["failed"] == 1
    assert failed["error"]["kind"] == "inputs failed" and failed["error"]["message"]


def test_no_images_is_exit_1_with_one_document(tmp_path):
    (tmp_path / "empty").mkdir()
    document = one_document(segment(tmp_path / "empty", tmp_path, "--json"))
    assert document["exit_code"] == 1 and document["command"] == "segment"
    assert "no image" in document["error"]["message"].lower()


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--threshold", "2"], "threshold"),  # a value the parameters refuse
        (["--bogus"], "No such option"),  # the parser refuses
        (["--format", "tiff"], "tiff"),
    ],
)
def test_usage_errors_are_exit_2_with_one_document(scene, tmp_path, extra, words):
    result = segment(scene, tmp_path, "--json", *extra)
    document = one_document(result)
    assert document["exit_code"] == 2 and document["error"]["kind"] == "usage", result.output
    assert words in document["error"]["message"]


@pytest.mark.parametrize(
    ("raised", "code", "kind"),
    [
        (EnvironmentProblem("no model here"), 3, "environment"),
        (RuntimeError("nobody planned this"), 4, "bug"),
        (KeyboardInterrupt(), 130, "interrupted"),
        (OSError(errno.ENOSPC, "No space left on device", "somewhere/coco.json"), 3, "environment"),
        (OSError(errno.EROFS, "Read-only file system", "somewhere"), 3, "environment"),
    ],
)
def test_every_exit_has_one_document(scene, tmp_path, monkeypatch, raised, code, kind):
    from pnpseg.io import class_names as local

    def fail(*args, **kwargs):
        raise raised

    monkeypatch.setattr(local, "read_class_names", fail)
    result = segment(scene, tmp_path, "--json")
    document = one_document(result)
    assert result.exit_code == code and document["error"]["kind"] == kind, result.output
    assert document["command"] == "segment" and document["error"]["message"]
    if code == 4:
        saved = Path(document["error"]["message"].split("traceback saved to ")[1].split(";")[0])
        saved.unlink()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["tune", "{scene}", "--labels", "{tmp}/none.json", "--adapter", "synthetic", "--out", "{tmp}/p.json"], "none"),
        (["eval", "--dataset", "voc20", "--root", "{tmp}/nowhere", "--out", "{tmp}/e"], "nowhere"),
        (["explain", "{scene}/a.png", "--adapter", "synthetic", "--classes", "red,red", "--out", "{tmp}/x"], "red"),
        (["plugins", "--bogus"], "--bogus"),
        (["convert", "blip", "{tmp}/missing.pth", "{tmp}/hf"], "missing.pth"),
    ],
)
def test_every_command_answers_json_on_error(scene, tmp_path, args, words):
    args = [a.format(scene=scene, tmp=tmp_path) for a in args]
    result = cli(*args, "--json")
    document = one_document(result)
    assert result.exit_code in (2, 3), result.output
    assert document["command"] == " ".join(args[:2] if args[0] == "convert" else args[:1])
    assert words in document["error"]["message"] and "--json" not in document["error"]["message"]


def test_explain_json_lists_what_it_wrote(scene, tmp_path):
    result = cli(
        "explain", scene / "a.png", "--adapter", "synthetic", "--classes", "red,blue", "--out", tmp_path, "--json"
    )
    document = one_document(result)
    assert document["exit_code"] == 0 and document["command"] == "explain"
    assert all(Path(path).is_file() for path in document["written"]) and document["written"]


def test_plugins_json_stays_a_list():
    result = cli("plugins", "--json")
    assert result.exit_code == 0 and isinstance(json.loads(result.stdout), list)


# -- item 23: the documented code, not exit 4 -------------------------------------------------
def test_full_disk_while_writing_the_format_documents_is_exit_3(scene, tmp_path, monkeypatch):
    from pnpseg.io import store

    real = store.atomic_write_bytes

    def full(path, data):
        if "cvat" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(store, "atomic_write_bytes", full)
    result = segment(scene, tmp_path, "--format", "png,cvat", "--json")
    assert result.exit_code == 3, result.output
    assert "No space left on device" in one_document(result)["error"]["message"]
    assert (tmp_path / "o" / "a.png").is_file()  # the label is kept for the next run


@pytest.mark.parametrize("code", [errno.EROFS, errno.EPERM, errno.EACCES])
def test_a_folder_that_turns_read_only_mid_run_stops_it_as_a_full_disk_does(tmp_path, monkeypatch, code):
    from pnpseg.engines.common import OutputLayout

    folder = tmp_path / "in"
    folder.mkdir()
    for seed in range(4):
        make_scene(48, 48, ["red", "blue"], seed=seed)[0].save(folder / f"{seed}.png")
    real, saved = OutputLayout.write, []

    def write(layout, item, image, labels):
        if len(saved) == 1:
            raise OSError(code, os.strerror(code), str(layout.label_file(item)))
        saved.append(item)
        return real(layout, item, image, labels)

    monkeypatch.setattr(OutputLayout, "write", write)
    result = segment(folder, tmp_path)
    assert result.exit_code == 3, result.output
    assert "stopped" in result.output and "run the same command again" in result.output
    records = [json.loads(line) for line in (tmp_path / "o" / "manifest.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok", "error"]  # stopped at the first refusal


def test_tune_out_in_a_read_only_folder_is_exit_3_before_the_search(scene, tmp_path, readonly, monkeypatch):
    from pnpseg.testing import SyntheticAdapter

    passes = []
    monkeypatch.setattr(SyntheticAdapter, "forward", lambda *args: passes.append(args))
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"a.png": ["red", "blue"]}))
    args = ["--labels", labels, "--adapter", "synthetic", "--scorer", "synthetic", "--no-cache"]
    result = cli("tune", scene, *args, "--out", readonly / "p.json", "--json")
    assert result.exit_code == 3 and "cannot write" in one_document(result)["error"]["message"], result.output
    assert passes == []  # before any model pass


@pytest.mark.parametrize("where", ["file", "read-only"])
def test_explain_out_that_cannot_be_a_folder_is_refused_before_the_model(scene, tmp_path, readonly, monkeypatch, where):
    from pnpseg.testing import SyntheticAdapter

    passes = []
    monkeypatch.setattr(SyntheticAdapter, "forward", lambda *args: passes.append(args))
    out = {"file": tmp_path / "afile", "read-only": readonly / "x"}[where]
    if where == "file":
        out.write_text("mine")
    args = ["explain", scene / "a.png", "--adapter", "synthetic", "--classes", "red,blue", "--out", out, "--json"]
    result = cli(*args)
    assert result.exit_code == {"file": 2, "read-only": 3}[where], result.output
    assert str(out) in one_document(result)["error"]["message"] and passes == []
    assert where != "file" or out.read_text() == "mine"


def test_explain_on_a_one_pixel_image(tmp_path):
    from PIL import Image

    Image.new("RGB", (1, 1), (200, 10, 10)).save(tmp_path / "one.png")
    result = cli(
        "explain", tmp_path / "one.png", "--adapter", "synthetic", "--classes", "red,blue", "--out", tmp_path / "x"
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x" / "pipeline.png").is_file()
