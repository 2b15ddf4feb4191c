"""`segment --engine ray` reading and writing a real S3-compatible server (moto's, on
127.0.0.1), through the same clients users run: pyarrow's S3 file system for inputs and
outputs, boto3 for the folder's lock. Byte-identical labels to the local engine, the
manifest, resume after a killed driver, ``--overwrite``, and two runs into one prefix."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("moto", reason="moto (requirements-dev.txt) runs the S3 server")
pytest.importorskip("boto3", reason="boto3 (the ray extra) locks an s3:// --out")

from s3_server import BUCKET, objects, s3_server, upload

import pnpseg.io.locks as locks
from pnpseg.cli import app
from pnpseg.engines.common.folder import LOCK, OutputFolder
from pnpseg.errors import EnvironmentProblem, PnpsegError
from pnpseg.testing import make_scene

COLOURS = ["red", "green", "blue"]
ARGS = ["--classes", ",".join(COLOURS), "--adapter", "synthetic", "--device", "cpu", "--image-size", "128"]
PHOTOS = f"s3://{BUCKET}/photos"
VOLATILE = ("seconds", "output", "key", "input", "error")  # these name each run's own locations


def segment(*args: str):
    return CliRunner().invoke(app, ["segment", *args])


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with s3_server(tmp_path_factory.mktemp("aws")) as client:
        yield client


@pytest.fixture(scope="module")
def ray_on_s3(s3):
    """A 2-CPU local Ray whose workers inherit the server's environment (set by ``s3``)."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, s3):
    """8 scenes (half in ``sub/``), a broken PNG and a text file, on disk and under ``s3://BUCKET/photos``."""
    root = tmp_path_factory.mktemp("scenes")
    for i in range(8):
        image, _ = make_scene(96 + 8 * i, 128, COLOURS, seed=i)
        path = root / ("sub" if i % 2 else "") / f"s{i}.png"
        path.parent.mkdir(exist_ok=True)
        image.save(path)
    (root / "sub" / "broken.png").write_bytes(b"not a png")
    (root / "notes.txt").write_text("not an image")
    upload(s3, root, "photos")
    return root


@pytest.fixture(scope="module")
def local_run(scenes, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    result = segment(str(scenes), *ARGS, "--out", str(out), "--viz", "--format", "png,cvat,coco")
    assert result.exit_code == 1, result.output  # broken.png
    return out


def files(out: Path) -> dict[str, bytes]:
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in ("manifest.jsonl", LOCK)
    }


def stable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in VOLATILE}


def manifest(lines: bytes | str) -> list[dict]:
    text = lines.decode() if isinstance(lines, bytes) else lines
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.slow  # a Ray run: a few seconds, more on a busy machine
def test_labels_and_manifest_on_s3_match_the_local_engine(s3, ray_on_s3, scenes, local_run):
    out = f"s3://{BUCKET}/same"
    result = segment(PHOTOS, *ARGS, "--out", out, "--viz", "--format", "png,cvat,coco", "--engine", "ray")
    assert result.exit_code == 1, result.output
    assert "notes.txt: not an image file" in result.output and "broken.png" in result.output
    written = objects(s3, "same")
    records = manifest(written.pop("manifest.jsonl"))
    # label PNGs, overlays, classes.json and the --format documents, byte for byte; no lock,
    # part or temp object left behind
    expected = files(local_run)  # coco.json names each image by its input: here its URI
    expected["coco.json"] = expected["coco.json"].replace(str(scenes).encode(), PHOTOS.encode())
    assert written == expected
    local = manifest((local_run / "manifest.jsonl").read_text())
    assert [stable(r) for r in records] == [stable(r) for r in local]  # same records, same (input) order
    relative = [r["input"].removeprefix(f"{PHOTOS}/") for r in records]
    assert relative == [Path(r["input"]).relative_to(scenes).as_posix() for r in local]
    ok = [r for r in records if r["status"] == "ok"]
    assert len(ok) == 8 and all(r["output"] == f"{out}/{r['file']}" for r in ok)
    assert all(r["key"] == r["input"] for r in records)  # a URI input is keyed on its URI
    again = segment(PHOTOS, *ARGS, "--out", out, "--engine", "ray")
    assert "8 already done" in again.output and objects(s3, "same")["manifest.jsonl"].count(b"\n") == 10, again.output


# -- one run per prefix: the lock object, created with If-None-Match: * -----------------------
def lock_object(s3, prefix: str) -> dict | None:
    try:
        return json.loads(s3.get_object(Bucket=BUCKET, Key=f"{prefix}/{LOCK}")["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


def test_of_racing_runs_exactly_one_holds_an_s3_prefix(s3):
    barrier, outcomes = threading.Barrier(6), []

    def run() -> None:
        folder = OutputFolder(f"s3://{BUCKET}/race", COLOURS)
        barrier.wait()
        try:
            with folder._lock():
                outcomes.append("held")
                barrier.wait()  # everyone has tried while it is held
        except PnpsegError as refused:
            outcomes.append(str(refused))
            barrier.wait()

    threads = [threading.Thread(target=run) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert outcomes.count("held") == 1, outcomes
    refusals = [o for o in outcomes if o != "held"]
    assert all(o.startswith(f"another pnpseg run is writing to s3://{BUCKET}/race (it holds ") for o in refusals)
    assert f"s3://{BUCKET}/race/{LOCK}: host {socket.gethostname()}, process {os.getpid()}" in refusals[0]
    assert lock_object(s3, "race") is None  # released by its holder
    with OutputFolder(f"s3://{BUCKET}/race", COLOURS)._lock():  # free again
        assert lock_object(s3, "race")["pid"] == os.getpid()


def test_a_killed_runs_lock_is_taken_over_on_its_host_and_refused_from_another(s3):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for prefix, host in (("stale", socket.gethostname()), ("elsewhere", "another-host")):
        held = {"host": host, "pid": dead.pid, "run": "killed", "since": "2026-01-01T00:00:00+00:00"}
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{LOCK}", Body=json.dumps(held).encode())
    with OutputFolder(f"s3://{BUCKET}/stale", COLOURS)._lock():
        assert lock_object(s3, "stale")["pid"] == os.getpid()  # its process is gone: taken over
    with pytest.raises(PnpsegError) as refused:
        with OutputFolder(f"s3://{BUCKET}/elsewhere", COLOURS)._lock():
            pass
    assert f"host another-host, process {dead.pid}" in str(refused.value)
    assert "if that run is dead, delete that object" in str(refused.value)
    assert lock_object(s3, "elsewhere")["run"] == "killed"  # never deleted by the refused run


def test_a_store_without_conditional_writes_is_refused_clearly(s3, monkeypatch):
    from botocore.exceptions import ClientError

    def without_conditions(fs):  # a server that answers conditional writes with 501
        client = real(fs)

        def put_object(**kwargs):
            if "IfNoneMatch" in kwargs or "IfMatch" in kwargs:
                raise ClientError({"Error": {"Code": "NotImplemented", "Message": "If-None-Match"}}, "PutObject")
            return client_put(**kwargs)

        client_put, client.put_object = client.put_object, put_object
        return client

    real = locks.s3_client
    monkeypatch.setattr(locks, "s3_client", without_conditions)
    with pytest.raises(EnvironmentProblem, match="does not support conditional writes"):
        with OutputFolder(f"s3://{BUCKET}/plain", COLOURS)._lock():
            pass


@pytest.mark.slow  # a Ray run: a few seconds, more on a busy machine
def test_a_killed_driver_is_resumed_without_redoing_finished_images(s3, ray_on_s3, scenes, local_run):
    """SIGKILL the driver (another process on the same Ray) once a block's records are in
    ``.pnpseg-parts/``: no manifest yet (an object store's is written at the end), its lock
    left behind. The next run takes the dead run's lock over, merges the parts, does only the
    rest, and leaves the local engine's labels and one record per input."""
    out = f"s3://{BUCKET}/killed"
    address = ray_on_s3.get_runtime_context().gcs_address
    command = [sys.executable, "-m", "pnpseg.cli", "segment", PHOTOS, *ARGS, "--out", out]
    driver = subprocess.Popen(
        [*command, "--engine", "ray", "--ray-address", address],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 300
        while driver.poll() is None and time.monotonic() < deadline:
            if any(k.startswith(".pnpseg-parts/") for k in objects(s3, "killed")):
                break
            time.sleep(0.1)
        assert driver.poll() is None, driver.stderr.read().decode()[-3000:]  # still running: kill it
    finally:
        driver.kill()
        stderr = driver.communicate()[1].decode()
    left = objects(s3, "killed")
    assert "manifest.jsonl" not in left and any(k.startswith(".pnpseg-parts/") for k in left), stderr[-3000:]
    assert json.loads(left[LOCK])["pid"] == driver.pid
    finished = [
        json.loads(line)["input"] for k, v in left.items() if k.startswith(".pnpseg-parts/") for line in v.splitlines()
    ]
    resumed = segment(PHOTOS, *ARGS, "--out", out, "--engine", "ray")
    assert resumed.exit_code == 1, resumed.output  # broken.png
    done_before = sum(1 for i in set(finished) if not i.endswith("broken.png"))
    assert f"Segmenting {9 - done_before} image(s)" in resumed.output, resumed.output
    written = objects(s3, "killed")
    records = manifest(written.pop("manifest.jsonl"))
    expected = {k: v for k, v in files(local_run).items() if not k.startswith(("overlays/", "cvat/", "coco.json"))}
    assert written == expected  # no lock, part or temp object left
    latest = {r["input"]: r for r in records}
    assert len(latest) == 9 and sum(r["status"] == "ok" for r in latest.values()) == 8
    local = {
        Path(r["input"]).relative_to(scenes).as_posix(): stable(r)
        for r in manifest((local_run / "manifest.jsonl").read_text())
    }
    assert {i.removeprefix(f"{PHOTOS}/"): stable(r) for i, r in latest.items()} == local


def test_an_endpoint_given_in_the_uri_reaches_the_data_and_the_lock(s3, monkeypatch):
    """docs/scale-out.md: pyarrow's ``?endpoint_override=`` works without ``AWS_ENDPOINT_URL``,
    and the lock (boto3) talks to the same endpoint."""
    endpoint = os.environ["AWS_ENDPOINT_URL"].removeprefix("http://")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    folder = OutputFolder(f"s3://{BUCKET}/query?endpoint_override={endpoint}&scheme=http", COLOURS)
    with folder._lock():
        assert lock_object(s3, "query")["pid"] == os.getpid()
        folder.store.write_bytes("a/b.txt", b"data")
    assert objects(s3, "query") == {"a/b.txt": b"data"}
    assert folder.store.uri("a/b.txt") == f"s3://{BUCKET}/query/a/b.txt"  # the option is not repeated
