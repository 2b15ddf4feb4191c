"""The edges of ``pnpseg segment``: odd input trees, bad --out paths, a full disk,
killed runs with workers, and the decompression-bomb limit."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pnpseg.cli import app
from pnpseg.io.images import discover
from pnpseg.testing import make_scene


def run(*args: str):
    return CliRunner().invoke(app, ["segment", *args])


def scenes(folder: Path, count: int, size: tuple[int, int] = (120, 160)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for seed in range(count):
        make_scene(*size, ["red", "blue"], seed=seed)[0].save(folder / f"{seed:02d}.png")
    return folder


def children(pid: int) -> set[int]:
    """Live processes whose parent is ``pid`` (from /proc; Linux only)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.slow
@pytest.mark.parametrize("workers", ["--workers", "--model-workers"])
def test_workers_exit_when_the_run_is_killed(tmp_path, workers):
    folder = scenes(tmp_path / "in", 150)  # more than the run can finish while we watch
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pnpseg.cli", "segment", str(folder), "--classes", "red,blue"]
    cmd += ["--adapter", "synthetic", "--out", str(out), "--image-size", "96", workers, "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    workers: set[int] = set()
    while time.time() < deadline and proc.poll() is None and (len(workers) < 2 or not list(out.glob("*.png"))):
        workers |= {pid for pid in children(proc.pid) if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()}
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    assert len(workers) >= 2, "the run never started its workers"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(alive(pid) for pid in workers):
        time.sleep(0.1)
    left = [pid for pid in workers if alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, "workers outlived their killed parent"


def test_decompression_bomb_limit_is_an_option_and_the_path_is_named_once(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # the CLI sets it process-wide
    folder = scenes(tmp_path / "in", 1, size=(120, 160))  # 19 200 pixels
    common = [str(folder), "--classes", "red,blue", "--adapter", "synthetic", "--image-size", "96", "--device", "cpu"]
    refused = run(*common, "--out", str(tmp_path / "a"), "--max-image-pixels", "5000")
    assert refused.exit_code == 1
    failed = [line for line in refused.output.splitlines() if line.startswith("failed")]
    assert len(failed) == 1 and failed[0].count("00.png") == 1, refused.output
    assert "--max-image-pixels" in failed[0]
    allowed = run(*common, "--out", str(tmp_path / "b"), "--max-image-pixels", "20000")
    assert allowed.exit_code == 0, allowed.output
    assert run(*common, "--out", str(tmp_path / "c"), "--max-image-pixels", "-1").exit_code == 2


# -- odd input trees (issue 12 item 7) ----------------------------------------------------


def test_unlistable_subfolder_is_reported_and_fails_the_run(tmp_path, monkeypatch):
    folder = scenes(tmp_path / "in", 1)
    scenes(folder / "locked", 1)
    real_scandir = os.scandir

    def scandir(path="."):  # chmod 000 does not stop root, so refuse the listing here
        if Path(path) == folder / "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    items, skipped = discover([folder])
    assert [i.relative.as_posix() for i in items] == ["00.png"]
    assert [(s.path, s.unreadable) for s in skipped] == [(folder / "locked", True)]
    assert "Permission denied" in skipped[0].reason
    out = tmp_path / "out"
    result = run(
        str(folder), "--classes", "red,blue", "--adapter", "synthetic", "--out", str(out), "--image-size", "96"
    )
    assert result.exit_code == 1, result.output
    assert f"skipping {folder / 'locked'}" in result.output and "Permission denied" in result.output
    assert (out / "00.png").exists()


def test_zero_images_is_exit_1_with_a_message(tmp_path, monkeypatch):
    folder = scenes(tmp_path / "in", 1)
    real_scandir = os.scandir
    monkeypatch.setattr(
        os,
        "scandir",
        lambda path=".": (
            (_ for _ in ()).throw(PermissionError(13, "Permission denied", str(path)))
            if Path(path) == folder
            else real_scandir(path)
        ),
    )
    result = run(str(folder), "--classes", "red,blue", "--adapter", "synthetic", "--out", str(tmp_path / "out"))
    assert result.exit_code == 1, result.output
    assert "no images" in result.output and "Permission denied" in result.output
    assert not (tmp_path / "out").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    result = run(str(empty), "--classes", "red,blue", "--adapter", "synthetic", "--out", str(tmp_path / "out"))
    assert result.exit_code == 1 and "no images" in result.output, result.output


@pytest.mark.slow
def test_directory_symlinks_are_followed_once_and_loops_are_skipped(tmp_path):
    folder = scenes(tmp_path / "in", 1)
    elsewhere = scenes(tmp_path / "elsewhere", 2)
    (folder / "linked").symlink_to(elsewhere, target_is_directory=True)
    (folder / "again").symlink_to(elsewhere, target_is_directory=True)  # the same folder twice
    (folder / "sub").mkdir()
    (folder / "sub" / "up").symlink_to(folder, target_is_directory=True)  # a loop
    (folder / "self.png").symlink_to(folder / "self.png")  # a symlink-loop file
    (folder / "gone.png").symlink_to(tmp_path / "missing.png")
    items, skipped = discover([folder])
    assert [i.relative.as_posix() for i in items] == ["00.png", "again/00.png", "again/01.png"]
    reasons = {s.path.relative_to(folder).as_posix(): (s.reason, s.unreadable) for s in skipped}
    assert set(reasons) == {"linked", "sub/up", "self.png", "gone.png"}
    assert "again" in reasons["linked"][0] and not reasons["linked"][1]
    assert "loop" in reasons["sub/up"][0] and not reasons["sub/up"][1]
    assert reasons["self.png"] == ("symlink loop", True)
    assert reasons["gone.png"] == ("broken symlink", True)
    result = run(str(folder), "--classes", "red,blue", "--adapter", "synthetic", "--out", str(tmp_path / "out"))
    assert result.exit_code == 1, result.output  # two inputs could not be read
    assert "Traceback" not in result.output and len(list((tmp_path / "out").rglob("*.png"))) == 3
    assert "skipping" in result.output and "self.png: symlink loop" in result.output


# -- --out that cannot be written, and a full disk (issue 12 item 10) ---------------------

ARGS = ["--classes", "red,blue", "--adapter", "synthetic", "--image-size", "96", "--device", "cpu"]


def one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip() and not line.startswith("skipping")]
    assert len(lines) == 1 and lines[0].startswith("error:"), output
    return lines[0]


def test_out_that_is_a_file_or_an_input_is_a_usage_error_before_the_model(tmp_path):
    folder = scenes(tmp_path / "in", 2)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    for out in (a_file, folder / "00.png", a_file / "sub"):
        before = Path(str(out).split("/sub")[0]).read_bytes()
        result = run(str(folder), *ARGS, "--adapter", "no-such-adapter", "--out", str(out))
        assert result.exit_code == 2, result.output
        assert "not a folder" in one_error_line(result.output)
        assert Path(str(out).split("/sub")[0]).read_bytes() == before


def test_read_only_out_is_an_environment_error(tmp_path, readonly):
    folder = scenes(tmp_path / "in", 1)
    for out in (readonly, readonly / "new" / "deeper"):
        result = run(str(folder), *ARGS, "--adapter", "no-such-adapter", "--out", str(out))
        assert result.exit_code == 3, result.output
        assert "cannot write" in one_error_line(result.output)


def test_full_disk_out_is_an_environment_error_before_the_model(tmp_path, monkeypatch):
    folder = scenes(tmp_path / "in", 1)

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    result = run(str(folder), *ARGS, "--adapter", "no-such-adapter", "--out", str(tmp_path / "out"))
    assert result.exit_code == 3, result.output
    assert "No space left" in one_error_line(result.output)
    assert not (tmp_path / "out").exists()


def manifest_lines(out: Path) -> list[dict]:
    lines = (out / "manifest.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b""  # ends with a newline: no cut line
    return [json.loads(line) for line in lines[:-1]]  # every line parses


def test_full_disk_mid_run_stops_cleanly_and_keeps_the_manifest_whole(tmp_path, monkeypatch):
    from pnpseg.engines.common import OutputLayout

    folder = scenes(tmp_path / "in", 6)
    out = tmp_path / "out"
    real_write, saved = OutputLayout.write, []

    def write(layout, item, image, labels):
        if len(saved) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(layout.label_file(item)))
        saved.append(item)
        return real_write(layout, item, image, labels)

    monkeypatch.setattr(OutputLayout, "write", write)
    result = run(str(folder), *ARGS, "--out", str(out))
    assert result.exit_code == 3, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: stopped: No space left") and "resume" in last, result.output
    records = manifest_lines(out)
    assert [r["status"] for r in records] == ["ok", "ok", "error"]
    assert "No space left" in records[-1]["error"]
    assert sorted(p.name for p in out.glob("*.png")) == ["00.png", "01.png"]
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_full_disk_while_appending_to_the_manifest_leaves_no_cut_line(tmp_path, monkeypatch):
    folder = scenes(tmp_path / "in", 6)
    out = tmp_path / "out"
    real_write, appended = os.write, []

    def write(fd, data):
        if b'"input"' in bytes(data):
            if len(appended) == 2:
                real_write(fd, bytes(data)[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")
            appended.append(data)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    result = run(str(folder), *ARGS, "--out", str(out))
    assert result.exit_code == 3, result.output
    assert [r["status"] for r in manifest_lines(out)] == ["ok", "ok"]


def test_checking_out_leaves_no_trace(tmp_path):
    from pnpseg.io.folders import check_output_folder

    check_output_folder(tmp_path / "new" / "deeper")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    check_output_folder(tmp_path / "kept")
    assert list((tmp_path / "kept").iterdir()) == []
