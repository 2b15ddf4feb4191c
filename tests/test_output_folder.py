"""One output folder, one class table, one settings fingerprint, one run at a time (issue 12,
items 1, 8 and 9): defects that once left masks of two class tables in one folder, redid
or refused resumable work, and deleted files the program did not own."""

from __future__ import annotations

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


@pytest.mark.slow
def test_overwrite_with_other_classes_leaves_no_mask_of_the_old_table(photos, tmp_path):
    out = tmp_path / "out"
    assert segment(str(photos), "--classes", "red,green", "--out", str(out)).exit_code == 0
    # --overwrite with a new class list on ONE image: the other masks meant the old classes.
    redo = segment(str(photos / "p0.png"), "--classes", "green,blue", "--out", str(out), "--overwrite")
    assert redo.exit_code == 0, redo.output
    assert sorted(p.name for p in out.glob("*.png")) == ["p0.png"]  # the two old masks are gone
    assert json.loads((out / "classes.json").read_text()) == {"0": "background", "1": "green", "2": "blue"}
    again = segment(str(photos), "--classes", "green,blue", "--out", str(out))
    assert again.exit_code == 0, again.output
    assert "Segmenting 2 image(s)" in again.output and "1 already done" in again.output  # never counted done
    latest = {r["key"]: r for r in records(out)}
    assert len(latest) == 3 and len({r["fingerprint"] for r in latest.values()}) == 1
    assert all(r["fingerprint"] and r["status"] == "ok" for r in latest.values())


@pytest.mark.slow
def test_every_record_carries_the_fingerprint_and_other_settings_are_refused(photos, tmp_path):
    out = tmp_path / "out"
    assert segment(str(photos), "--classes", "red,green", "--out", str(out)).exit_code == 0
    assert len({r["fingerprint"] for r in records(out)}) == 1
    other = segment(str(photos), "--classes", "red,green", "--out", str(out), "--threshold", "0.5")
    assert other.exit_code == 2 and "other settings" in other.output


LOCKER = """
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
time.sleep(120)
"""


def test_concurrent_runs_are_refused_and_a_killed_run_never_leaves_the_folder_stuck(photos, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    in_flight = out / ".pnpseg-tmp-0123abcd-p0.png"  # a temp file of the run holding the lock
    in_flight.write_bytes(b"half a png")
    holder = subprocess.Popen([sys.executable, "-c", LOCKER, str(out / ".pnpseg.lock")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        second = segment(str(photos), "--classes", "red,green", "--out", str(out))
        assert second.exit_code == 2 and "another pnpseg run" in second.output, second.output
        assert in_flight.exists()  # the second run touched nothing of the first
        assert not (out / "classes.json").exists() and not list(out.glob("p*.png"))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    after = segment(str(photos), "--classes", "red,green", "--out", str(out))
    assert after.exit_code == 0, after.output  # the OS released the dead run's lock
    assert not in_flight.exists()  # its writer is dead: cleaned up
    assert sorted(p.name for p in out.glob("p*.png")) == ["p0.png", "p1.png", "p2.png"]


@pytest.mark.slow
def test_files_that_only_look_like_temp_files_are_never_deleted(photos, tmp_path):
    out = tmp_path / "out"
    (out / "notes").mkdir(parents=True)
    mine = [out / ".draft.tmp-1.txt", out / "notes" / ".a.png.tmp-zz.png"]
    for path in mine:
        path.write_text("the user's")
    assert segment(str(photos), "--classes", "red", "--out", str(out)).exit_code == 0
    assert all(path.read_text() == "the user's" for path in mine)


def test_out_inside_the_input_folder_is_not_an_input(photos):
    out = photos / "masks"
    first = segment(str(photos), "--classes", "red,green", "--out", str(out))
    assert first.exit_code == 0, first.output
    again = segment(str(photos), "--classes", "red,green", "--out", str(out))
    assert again.exit_code == 0, again.output
    assert "Segmenting 0 image(s)" in again.output and "3 already done" in again.output
    assert sorted(p.name for p in out.glob("*.png")) == ["p0.png", "p1.png", "p2.png"]
    assert np.array(Image.open(out / "p0.png")).ndim == 2


@pytest.mark.slow
def test_the_same_folder_named_another_way_resumes(photos, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert segment(str(photos.resolve()), "--classes", "red", "--out", str(out.resolve())).exit_code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "link").symlink_to(photos, target_is_directory=True)
    monkeypatch.chdir(elsewhere)
    for inputs in ("../photos", "../link"):
        again = segment(inputs, "--classes", "red", "--out", "../out")
        assert again.exit_code == 0, again.output
        assert "Segmenting 0 image(s)" in again.output and "3 already done" in again.output
    assert len(records(out)) == 3  # no duplicated records
    assert {r["key"] for r in records(out)} == {f"../photos/p{i}.png" for i in range(3)}


@pytest.mark.slow
def test_an_output_folder_given_as_input_yields_only_its_masks(photos, tmp_path):
    """Segmenting an earlier run's masks: the lock file, manifest and classes.json are not images."""
    from pnpseg.io.images import discover
    from pnpseg.io.outputs import is_temp_name, temp_name

    assert is_temp_name(temp_name("x.png")) and temp_name("x.png").endswith("x.png")
    out = tmp_path / "o"
    assert segment(str(photos), "--classes", "red", "--out", str(out)).exit_code == 0
    assert (out / ".pnpseg.lock").exists()
    items, skipped = discover([out])
    assert {i.relative.as_posix() for i in items} == {"p0.png", "p1.png", "p2.png"}
    assert [s.path.name for s in skipped] == ["classes.json", "manifest.jsonl"]
