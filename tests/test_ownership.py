"""pnpseg owns its output folder and nothing else (issue 21, items 1–8 and 12): it writes and
deletes only files it wrote, never through a path read from a file, and resumes whatever
way the run before it ended. docs/reliability.md states the rule."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pnpseg.cli import app
from pnpseg.io.formats.coco import FILE as COCO
from pnpseg.testing import make_scene

ARGS = ["--adapter", "synthetic", "--device", "cpu", "--image-size", "96"]


def segment(*args: str):
    return CliRunner().invoke(app, ["segment", *args, *ARGS])


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        make_scene(64, 80, ["red", "green", "blue"], seed=i)[0].save(folder / f"p{i}.png")
    return folder


def test_a_users_file_with_an_outputs_name_is_never_overwritten(photos, tmp_path):
    """Item 1: ``p0.png`` or the COCO document the user put in ``--out`` stays, and the run is
    refused before it writes anything (exit 2, one line)."""
    for name, extra in (("p0.png", []), (COCO, ["--format", "coco"]), ("overlays/p1.png", ["--viz"])):
        out = tmp_path / f"out-{len(extra)}"
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("the user's")
        result = segment(str(photos), "--classes", "red", "--out", str(out), *extra)
        assert result.exit_code == 2, (name, result.output)
        assert name in result.output and "not written by pnpseg" in result.output
        assert (out / name).read_text() == "the user's"
        assert not (out / "manifest.jsonl").exists() and not (out / "classes.json").exists()
        again = segment(str(photos), "--classes", "red", "--out", str(out), "--overwrite", *extra)
        assert again.exit_code == 2 and (out / name).read_text() == "the user's"  # --overwrite too


def test_its_own_files_are_rewritten_and_a_user_file_beside_them_is_kept(photos, tmp_path):
    out = tmp_path / "out"
    assert segment(str(photos), "--classes", "red", "--out", str(out), "--format", "coco", "--viz").exit_code == 0
    (out / "notes.txt").write_text("the user's")
    again = segment(str(photos), "--classes", "red", "--out", str(out), "--format", "coco", "--viz", "--overwrite")
    assert again.exit_code == 0, again.output
    assert (out / "notes.txt").read_text() == "the user's"


def forge(out: Path, **fields) -> None:
    """Append a manifest record as a hostile or broken tool might."""
    record = dict(records(out)[0], **fields)
    with open(out / "manifest.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def test_a_path_read_from_the_manifest_never_reaches_outside_out(photos, tmp_path):
    """Item 2: a record's ``file`` naming ``../victim.png`` or an absolute path is never deleted
    by ``--overwrite``, nor read into a ``--format`` document, nor written through."""
    out = tmp_path / "deep" / "out"
    assert segment(str(photos), "--classes", "red", "--out", str(out)).exit_code == 0
    victims = [tmp_path / "deep" / "victim.png", tmp_path / "absolute.png"]
    for victim in victims:
        make_scene(8, 8, ["red"], seed=0)[0].convert("P").save(victim)
    forge(out, key="../photos/p0.png", file="../victim.png")
    forge(out, key="../photos/p1.png", file=str(victims[1]))
    forge(out, key="../photos/x.png", input="x.png", file="../../../escaped.png")
    (tmp_path / "escaped.png").write_bytes(victims[0].read_bytes())
    kept = segment(str(photos), "--classes", "red", "--out", str(out), "--format", "cvat,coco")
    assert kept.exit_code == 0, kept.output
    names = json.loads((out / COCO).read_text())["images"]
    assert sorted(image["pnpseg_output"] for image in names) == ["p0.png", "p1.png", "p2.png"]
    assert not (tmp_path / "deep" / "escaped.png").exists() and sorted(
        p.name for p in (out / "cvat" / "SegmentationClass").iterdir()
    ) == ["p0.png", "p1.png", "p2.png"]
    forge(out, key="../photos/p0.png", file="../victim.png", fingerprint="0" * 16)
    forge(out, key="../photos/p1.png", file=str(victims[1]), fingerprint="0" * 16)
    reset = segment(str(photos), "--classes", "green", "--out", str(out), "--overwrite")
    assert reset.exit_code == 0, reset.output
    assert all(victim.exists() for victim in victims)


def test_overwrite_with_other_classes_resets_every_format(photos, tmp_path):
    """Item 3: the documents of the old class table go with its masks; a subset ``--overwrite``
    leaves no old-table mask in ``cvat/SegmentationClass/``."""
    out = tmp_path / "out"
    studio = importlib.util.find_spec("label_studio_sdk") is not None
    formats = ["--format", "coco,cvat" + (",labelstudio" if studio else "")]
    assert segment(str(photos), "--classes", "red,green", "--out", str(out), *formats).exit_code == 0
    subset = segment(
        str(photos / "p0.png"), "--classes", "green,blue", "--out", str(out), "--overwrite", "--format", "cvat"
    )
    assert subset.exit_code == 0, subset.output
    assert sorted(p.name for p in (out / "cvat" / "SegmentationClass").iterdir()) == ["p0.png"]
    assert (out / "cvat" / "ImageSets" / "Segmentation" / "default.txt").read_text() == "p0\n"
    assert not (out / COCO).exists() and not (out / "labelstudio.json").exists()
    plain = segment(str(photos / "p0.png"), "--classes", "blue", "--out", str(out), "--overwrite")
    assert plain.exit_code == 0, plain.output
    assert not (out / "cvat").exists()


def test_inputs_named_like_overlays_or_cvat_outputs_are_refused_up_front(photos, tmp_path):
    """Item 4: an input subfolder ``overlays/`` or ``cvat/SegmentationClass/`` whose label would
    land where another input's overlay or CVAT mask goes: one line, exit 2, nothing written."""
    for sub, extra in (("overlays", ["--viz"]), ("cvat/SegmentationClass", ["--format", "cvat"])):
        (photos / sub).mkdir(parents=True)
        make_scene(64, 80, ["red"], seed=9)[0].save(photos / sub / "p0.png")
        out = tmp_path / f"out-{sub[:4]}"
        result = segment(str(photos), "--classes", "red", "--out", str(out), *extra)
        assert result.exit_code == 2, result.output
        assert f"{sub}/p0.png" in result.output and not out.exists()
        fine = segment(str(photos), "--classes", "red", "--out", str(out))  # without the colliding output
        assert fine.exit_code == 0, fine.output
        assert (out / sub / "p0.png").exists()
        (photos / sub / "p0.png").unlink()


def test_explain_never_overwrites_an_input_or_a_users_file(tmp_path):
    """Item 5: ``explain DIR/pipeline.png --out DIR`` keeps the input; a re-run replaces its own figures."""
    pytest.importorskip("matplotlib")
    folder = tmp_path / "dir"
    folder.mkdir()
    image = folder / "pipeline.png"
    make_scene(48, 64, ["red", "blue"], seed=1)[0].save(image)
    before = image.read_bytes()
    args = ["--classes", "red,blue", "--adapter", "synthetic", "--device", "cpu", "--out", str(folder)]
    result = CliRunner().invoke(app, ["explain", str(image), *args])
    assert result.exit_code == 2, result.output
    assert "pipeline.png" in result.output and image.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["pipeline.png"]
    mine = tmp_path / "mine"
    mine.mkdir()
    moved = mine / "scene.png"
    image.rename(moved)
    first = CliRunner().invoke(app, ["explain", str(moved), *args[:-1], str(mine)])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(app, ["explain", str(moved), *args[:-1], str(mine)])
    assert again.exit_code == 0, again.output  # its own figures are replaced


LOCKER = """
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
time.sleep(120)
"""


def test_a_run_never_touches_the_temp_files_of_a_live_run_in_a_subfolder(photos, tmp_path):
    """Item 6: ``X/sub`` is another run's folder, locked by it; a run into ``X`` leaves its
    in-flight temp files alone."""
    out = tmp_path / "X"
    sub = out / "sub"
    sub.mkdir(parents=True)
    in_flight = sub / ".pnpseg-tmp-0123abcd-p0.png"
    in_flight.write_bytes(b"half a png")
    holder = subprocess.Popen([sys.executable, "-c", LOCKER, str(sub / ".pnpseg.lock")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        result = segment(str(photos), "--classes", "red", "--out", str(out))
        assert result.exit_code == 0, result.output
        assert in_flight.read_bytes() == b"half a png"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_out_equal_to_the_input_folder_resumes(photos):
    """Item 7, first half: the labels a run wrote are its outputs, never the next run's inputs."""
    for name in ("p0", "p1", "p2"):
        (photos / f"{name}.png").rename(photos / f"{name}.jpg")
    first = segment(str(photos), "--classes", "red", "--out", str(photos))
    assert first.exit_code == 0, first.output
    again = segment(str(photos), "--classes", "red", "--out", str(photos))
    assert again.exit_code == 0, again.output
    assert "Segmenting 0 image(s)" in again.output and "3 already done" in again.output


def test_a_kill_during_an_overwrite_that_changes_settings_resumes(photos, tmp_path, monkeypatch):
    """Item 7, second half: the reset is recorded, so the PNG a killed ``--overwrite`` wrote
    before its record does not make the folder look like one of the old settings."""
    from pnpseg.engines.common import OutputFolder

    out = tmp_path / "out"
    assert segment(str(photos), "--classes", "red", "--out", str(out)).exit_code == 0

    def killed(self, rows):
        raise KeyboardInterrupt  # the first PNG is written, its record never appended

    with monkeypatch.context() as m:
        m.setattr(OutputFolder, "append", killed)
        assert segment(
            str(photos), "--classes", "red", "--out", str(out), "--overwrite", "--threshold", "0.5"
        ).exit_code
    resumed = segment(str(photos), "--classes", "red", "--out", str(out), "--threshold", "0.5")
    assert resumed.exit_code == 0, resumed.output
    assert "Segmenting 3 image(s)" in resumed.output
    assert len({r["fingerprint"] for r in records(out)[-3:]}) == 1


def test_an_input_replaced_in_place_is_redone(photos, tmp_path):
    """Item 8: resume is keyed on the input's content (SHA-256), as ``eval``'s is: new pixels
    under the old name are redone; a copy with a new mtime is not."""
    out = tmp_path / "out"
    assert segment(str(photos), "--classes", "red,green,blue", "--out", str(out)).exit_code == 0
    old = np.array(Image.open(out / "p0.png"))
    make_scene(64, 80, ["blue", "green", "red"], seed=7)[0].save(photos / "p0.png")
    (photos / "p1.png").write_bytes((photos / "p1.png").read_bytes())  # same bytes, new mtime
    again = segment(str(photos), "--classes", "red,green,blue", "--out", str(out))
    assert again.exit_code == 0, again.output
    assert "Segmenting 1 image(s)" in again.output and "2 already done" in again.output
    assert not np.array_equal(np.array(Image.open(out / "p0.png")), old)
    assert all(len(r["input_sha256"]) == 64 for r in records(out))


def test_an_input_named_like_a_temp_file_keeps_its_label(tmp_path):
    """Item 12: an input ``.pnpseg-tmp-…`` is an input like any other: its label survives the run
    and the next run resumes it."""
    for name in (".pnpseg-tmp-x.png", ".pnpseg-tmp-0123abcd-y.png"):
        image = tmp_path / name
        make_scene(64, 80, ["red"], seed=2)[0].save(image)
        out = tmp_path / f"out{len(name)}"
        first = segment(str(image), "--classes", "red", "--out", str(out))
        assert first.exit_code == 0, first.output
        assert (out / name).exists()
        again = segment(str(image), "--classes", "red", "--out", str(out))
        assert again.exit_code == 0 and "1 already done" in again.output, again.output
        assert (out / name).exists()


def test_paths_that_leave_the_folder_are_never_written(tmp_path):
    """The ownership module itself: ``..``, absolute paths and a symlinked folder that leads out
    are refused before anything is written; a ledger naming such paths owns nothing."""
    from pnpseg.errors import PnpsegError
    from pnpseg.io.ownership import LEDGER, Ownership, Planned, contained
    from pnpseg.io.store import Store

    assert [contained(p) for p in ("a/./b.png", "a//b.png", "../x", "/etc/x", "a/../b", "C:x", "", None)] == [
        "a/b.png",
        "a/b.png",
        None,
        None,
        None,
        None,
        None,
        None,
    ]
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "link").symlink_to(elsewhere, target_is_directory=True)
    (out / LEDGER).write_text(
        json.dumps({"files": {"../victim.txt": "labels", "/abs.txt": "labels", "ok.png": "labels"}})
    )
    owned = Ownership(Store(out)).load()
    assert owned.files == {"ok.png": "labels"}
    with pytest.raises(PnpsegError, match="outside"):
        owned.claim([Planned("link/a.png", "labels", "label")])
    owned.delete(["../victim.txt", "/abs.txt"])  # not held: nothing happens
    assert not list(elsewhere.iterdir()) and owned.files == {"ok.png": "labels"}


@pytest.mark.parametrize("name", ["coco", "cvat", "labelstudio"])
def test_the_files_a_run_claims_are_the_files_each_format_writes(name):
    """A run claims its ``--format`` files before it starts (so a user's file of that name is
    refused up front): the claim must name exactly what the writer renders."""
    pytest.importorskip({"coco": "pycocotools", "cvat": "numpy", "labelstudio": "label_studio_sdk"}[name])
    from pnpseg.io.formats import Labelled, planned_files, render

    labels = np.zeros((4, 6), dtype=np.uint8)
    labels[1:3, 2:5] = 1
    images = [Labelled("a.jpg", "a", 6, 4, labels, "a.jpg"), Labelled("s/b.jpg", "s/b", 6, 4, labels, "s/b.jpg")]
    assert set(render([name], ["red"], images)[name]) == set(planned_files(name, ["a", "s/b"]))
    assert planned_files(name, []) == [] == list(render([name], ["red"], [])[name])


def test_eval_never_replaces_a_file_it_did_not_write_and_owns_its_own(tmp_path):
    """``eval --out`` goes through the folder's owner like every other output: a user's
    ``results.md`` (or saved prediction) in the way is refused before the model loads, with or
    without ``--overwrite``; ``--save-predictions`` into the folder being scored is refused; an
    eval folder of a version before the ledger is adopted and resumes; its own files are
    rewritten."""
    from test_eval import png, write_layout

    from pnpseg.io.ownership import LEDGER

    root, preds = tmp_path / "ade", tmp_path / "predictions"
    write_layout("ade20k", root, [0, 1, 2, 3, 150], count=2)
    rng = np.random.default_rng(0)
    names = sorted(p.stem for p in (root / "images" / "validation").glob("*.jpg"))
    for name in names:
        png(preds / f"{name}.png", rng.integers(0, 5, (12, 16)))
    common = ["eval", "--dataset", "ade20k", "--root", str(root)]
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.md").write_text("my notes")
    for extra in ([], ["--overwrite"]):
        refused = CliRunner().invoke(app, [*common, "--predictions", str(preds), "--out", str(out), *extra])
        assert refused.exit_code == 2, refused.output
        assert "results.md is in the way of the evaluation report" in refused.output
        assert (out / "results.md").read_text() == "my notes" and not (out / "results.json").exists()
    (out / "results.md").unlink()
    first = CliRunner().invoke(app, [*common, "--predictions", str(preds), "--out", str(out)])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(app, [*common, "--predictions", str(preds), "--out", str(out)])
    assert again.exit_code == 0 and "0 image(s) to do" in again.output, again.output
    # --save-predictions writes OUT/predictions/<id>.png: never over the predictions scored
    into_inputs = CliRunner().invoke(
        app, [*common, "--predictions", str(preds), "--out", str(tmp_path), "--save-predictions"]
    )
    assert into_inputs.exit_code == 2 and "would overwrite an input" in into_inputs.output, into_inputs.output
    # --overwrite starts afresh: saved predictions of images no longer scored go, its own only
    rescored = tmp_path / "rescored"
    saved = [*common, "--predictions", str(preds), "--out", str(rescored), "--save-predictions"]
    assert CliRunner().invoke(app, saved).exit_code == 0
    assert sorted(p.stem for p in (rescored / "predictions").glob("*.png")) == names
    (rescored / "predictions" / "mine.txt").write_text("mine")
    fewer = CliRunner().invoke(app, [*saved, "--overwrite", "--limit", "1"])
    assert fewer.exit_code == 0, fewer.output
    kept = sorted(p.name for p in (rescored / "predictions").iterdir())
    assert kept == sorted(["classes.json", f"{names[0]}.png", "mine.txt"])
    # a folder an earlier version wrote (no ledger) is adopted: it resumes, nothing refused
    (out / LEDGER).unlink()
    adopted = CliRunner().invoke(app, [*common, "--predictions", str(preds), "--out", str(out)])
    assert adopted.exit_code == 0 and "0 image(s) to do" in adopted.output, adopted.output


def test_export_classes_never_replaces_a_file_it_did_not_write(tmp_path):
    """``eval --export-classes FILE`` writes one file: a user's file of that name is refused
    (exit 2, untouched); the file it wrote is rewritten."""
    from test_eval import write_layout

    root = tmp_path / "ade"
    write_layout("ade20k", root, [0, 1, 150], count=1)
    mine = tmp_path / "classes.txt"
    mine.write_text("my list\n")
    command = ["eval", "--dataset", "ade20k", "--root", str(root), "--export-classes", str(mine)]
    refused = CliRunner().invoke(app, command)
    assert refused.exit_code == 2 and "classes.txt is in the way" in refused.output, refused.output
    assert mine.read_text() == "my list\n"
    fresh = tmp_path / "exported.txt"
    for _ in range(2):
        written = CliRunner().invoke(app, [*command[:-1], str(fresh)])
        assert written.exit_code == 0, written.output
    assert fresh.read_text().splitlines()[0] == "wall"
