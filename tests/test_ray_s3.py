"""`segment --engine ray` reading and writing a real S3-compatible server (moto's, on
127.0.0.1), through the same clients users run: pyarrow's S3 file system for inputs and
outputs, boto3 for the folder's lock. Byte-identical labels to the local engine, the
manifest, resume after a killed driver, ``--overwrite``, and two runs into one prefix."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import pytest
from typer.testing import CliRunner

pytest.importorskip("moto", reason="moto (requirements-dev.txt) runs the S3 server")
pytest.importorskip("boto3", reason="boto3 (the ray extra) locks an s3:// --out")

from s3_server import BUCKET, free_port, keys, objects, s3_server, upload

import pnpseg.io.locks as locks
from pnpseg.cli import app
from pnpseg.engines.common.folder import LOCK, OutputFolder
from pnpseg.errors import EnvironmentProblem, PnpsegError
from pnpseg.io.formats.coco import FILE as COCO
from pnpseg.io.outputs import is_temp_name
from pnpseg.io.ownership import LEDGER
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
        if p.is_file() and p.name not in ("manifest.jsonl", LOCK, LEDGER)
    }


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def stable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in VOLATILE}


def manifest(lines: bytes | str) -> list[dict]:
    text = lines.decode() if isinstance(lines, bytes) else lines
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def ray_run(s3, ray_on_s3, scenes):
    """``s3://BUCKET/same``: the Ray engine's run on ``PHOTOS``, as the local engine's ``local_run``."""
    out = f"s3://{BUCKET}/same"
    return segment(PHOTOS, *ARGS, "--out", out, "--viz", "--format", "png,cvat,coco", "--engine", "ray")


def copy_prefix(s3, source: str, target: str) -> None:
    for key in objects(s3, source):
        s3.copy_object(Bucket=BUCKET, Key=f"{target}/{key}", CopySource={"Bucket": BUCKET, "Key": f"{source}/{key}"})


def with_uris(written: dict[str, bytes], scenes: Path) -> dict[str, bytes]:
    """The local engine's files as the Ray engine writes them from ``PHOTOS``: the COCO
    document names each image by its input, there its URI."""
    return {
        k: v.replace(str(scenes).encode(), PHOTOS.encode()) if k.startswith("coco/") else v for k, v in written.items()
    }


@contextmanager
def driver_mid_run(s3, ray, prefix: str, *flags: str) -> Iterator[subprocess.Popen]:
    """A driver in another process on ``ray``'s cluster, segmenting ``PHOTOS`` into
    ``s3://BUCKET/prefix``, handed to the test mid-run: one block's records are in
    ``.pnpseg-parts/`` and the store delays the next block's part file (moto's PUT waits
    1.5 s, less than a client's request timeout), so a signal sent now reaches a run that
    has not finished, however fast the machine. On leaving, the driver is killed and the
    delayed write has landed, before the test looks at the prefix."""
    from moto.s3.models import S3Backend

    put, parts, held, landed = S3Backend.put_object, [], threading.Event(), threading.Event()

    def second_part_waits(self, bucket_name, key_name, *args, **kwargs):
        if not key_name.startswith(f"{prefix}/.pnpseg-parts/"):
            return put(self, bucket_name, key_name, *args, **kwargs)
        parts.append(key_name)
        if len(parts) != 2:
            return put(self, bucket_name, key_name, *args, **kwargs)
        held.set()
        time.sleep(1.5)
        try:
            return put(self, bucket_name, key_name, *args, **kwargs)
        finally:
            landed.set()

    command = [sys.executable, "-m", "pnpseg.cli", "segment", PHOTOS, *ARGS, "--out", f"s3://{BUCKET}/{prefix}", *flags]
    address = ray.get_runtime_context().gcs_address
    S3Backend.put_object = second_part_waits
    try:
        driver = subprocess.Popen(
            [*command, "--engine", "ray", "--ray-address", address],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Ctrl+C as a terminal delivers it, even where the test runs in the background (a
            # shell's `cmd &` without job control ignores SIGINT, and children inherit that)
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            deadline = time.monotonic() + 300
            while not held.wait(0.05):
                if driver.poll() is not None or time.monotonic() > deadline:
                    driver.kill()
                    raise AssertionError(driver.communicate()[1].decode()[-3000:])
            yield driver
        finally:
            driver.kill()
            landed.wait(30)
    finally:
        S3Backend.put_object = put


@pytest.mark.slow  # a Ray run: a few seconds, more on a busy machine
def test_labels_and_manifest_on_s3_match_the_local_engine(s3, ray_run, scenes, local_run):
    out, result = f"s3://{BUCKET}/same", ray_run
    assert result.exit_code == 1, result.output
    assert "notes.txt: not an image file" in result.output and "broken.png" in result.output
    written = objects(s3, "same")
    records = manifest(written.pop("manifest.jsonl"))
    assert written.pop(LEDGER)  # what pnpseg wrote there: its content depends on the folder's history
    # label PNGs, overlays, classes.json and the --format documents, byte for byte; no lock,
    # part or temp object left behind
    assert written == with_uris(files(local_run), scenes)
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
    with driver_mid_run(s3, ray_on_s3, "killed") as driver:
        driver.kill()
        stderr = driver.communicate()[1].decode()
    left = objects(s3, "killed")
    assert "manifest.jsonl" not in left and any(k.startswith(".pnpseg-parts/") for k in left), stderr[-3000:]
    assert json.loads(left[LOCK])["pid"] == driver.pid
    finished = [
        json.loads(line)["input"] for k, v in left.items() if k.startswith(".pnpseg-parts/") for line in v.splitlines()
    ]
    resumed = segment(PHOTOS, *ARGS, "--out", out, "--engine", "ray", "--json")
    assert resumed.exit_code == 1, resumed.output  # broken.png
    summary = one_json(resumed.output)
    assert (summary["exit_code"], summary["error"]["kind"], summary["failed"]) == (1, "inputs failed", 1), summary
    assert summary["manifest"] == f"{out}/manifest.jsonl" and summary["segmented"] + summary["already_done"] == 8
    done_before = sum(1 for i in set(finished) if not i.endswith("broken.png"))
    assert f"Segmenting {9 - done_before} image(s)" in resumed.output, resumed.output
    written = objects(s3, "killed")
    records = manifest(written.pop("manifest.jsonl"))
    assert written.pop(LEDGER)  # what pnpseg wrote there: its content depends on the folder's history
    expected = {k: v for k, v in files(local_run).items() if not k.startswith(("overlays/", "cvat/", "coco/"))}
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


# -- exit codes and --json (issue 21, E) on S3 ----------------------------------------------
@pytest.mark.slow  # a Ray run in another process
def test_ctrl_c_on_the_driver_is_exit_130_with_one_json_document_and_a_released_lock(s3, ray_on_s3, scenes):
    """SIGINT (Ctrl+C) once a block is done: exit 130, one JSON document on stdout, the lock
    object deleted and the records collected so far written, so the next run resumes them."""
    out = f"s3://{BUCKET}/interrupted"
    with driver_mid_run(s3, ray_on_s3, "interrupted", "--json") as driver:
        driver.send_signal(signal.SIGINT)
        stdout, stderr = driver.communicate(timeout=120)
    assert driver.returncode == 130, stderr.decode()[-3000:]
    documents = [json.loads(line) for line in stdout.decode().splitlines()]
    assert len(documents) == 1 and documents[0]["exit_code"] == 130, stdout
    left = objects(s3, "interrupted")
    assert LOCK not in left and not any(is_temp_name(PurePosixPath(k).name) for k in left)
    # what the next run counts done: the manifest's records, and those of the parts it merges
    written = [
        r for k, v in left.items() if k == "manifest.jsonl" or k.startswith(".pnpseg-parts/") for r in manifest(v)
    ]
    resumed = segment(PHOTOS, *ARGS, "--out", out, "--engine", "ray")
    assert resumed.exit_code == 1, resumed.output
    done = len({r["input"] for r in written if r["status"] == "ok"})
    assert done and f"{done} already done" in resumed.output, resumed.output


def one_json(output: str) -> dict:
    """The one JSON document a ``--json`` run prints on stdout (CliRunner mixes in stderr's lines)."""
    documents = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert len(documents) == 1, output
    return documents[0]


def test_a_missing_bucket_or_an_unreachable_store_is_exit_3_before_ray_starts(s3, scenes, monkeypatch, tmp_path):
    """It was exit 4 (an OSError from pyarrow) after Ray had started and the model had loaded."""
    starts = []
    monkeypatch.setattr("pnpseg.engines.ray.segment.init_ray", lambda *a, **k: starts.append(a))
    missing = segment(PHOTOS, *ARGS, "--out", "s3://no-such-bucket/out", "--engine", "ray", "--json")
    assert missing.exit_code == 3, missing.output
    document = one_json(missing.output)
    assert document["exit_code"] == 3 and document["error"]["kind"] == "environment"
    assert "no-such-bucket does not exist" in document["error"]["message"]
    file = segment(PHOTOS, *ARGS, "--out", f"{PHOTOS}/s0.png", "--engine", "ray", "--json")
    assert file.exit_code == 2 and "is a file" in one_json(file.output)["error"]["message"], file.output
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    unreachable = segment(PHOTOS, *ARGS, "--out", f"s3://{BUCKET}/never", "--engine", "ray", "--json")
    assert unreachable.exit_code == 3, unreachable.output
    assert one_json(unreachable.output)["error"]["message"].startswith(f"cannot reach --out s3://{BUCKET}/never: ")
    unreadable = segment(PHOTOS, *ARGS, "--out", str(tmp_path / "out"), "--engine", "ray", "--json")
    assert unreadable.exit_code == 3, unreadable.output
    assert one_json(unreadable.output)["error"]["message"].startswith(f"cannot read {PHOTOS}: ")
    assert starts == []
    assert s3.get_object(Bucket=BUCKET, Key="photos/s0.png")["Body"].read() == (scenes / "s0.png").read_bytes()


@pytest.mark.slow  # a Ray run
def test_overwrite_on_s3_resets_the_prefix_as_the_local_engine_resets_its_folder(
    s3, ray_run, scenes, local_run, tmp_path
):
    """From the same finished folder, ``--overwrite`` with another class list: the same files
    (the old table's labels replaced, its overlays deleted) and the same latest records."""
    local = tmp_path / "local"
    shutil.copytree(local_run, local)
    copy_prefix(s3, "same", "over")
    before = len(manifest(objects(s3, "over")["manifest.jsonl"]))
    new = ["--classes", "green,red", *ARGS[2:], "--overwrite", "--format", "png,coco"]
    assert segment(str(scenes), *new, "--out", str(local)).exit_code == 1
    result = segment(PHOTOS, *new, "--out", f"s3://{BUCKET}/over", "--engine", "ray")
    assert result.exit_code == 1, result.output
    assert "Segmenting 9 image(s)" in result.output, result.output
    written = objects(s3, "over")
    records = manifest(written.pop("manifest.jsonl"))
    assert written.pop(LEDGER)  # what pnpseg wrote there: its content depends on the folder's history
    assert written == with_uris(files(local), scenes)
    assert json.loads(written["classes.json"]) == json.loads((local / "classes.json").read_text())
    assert not any(key.startswith("overlays/") for key in written)  # the old table's overlays went too
    latest = {r["input"].removeprefix(f"{PHOTOS}/"): stable(r) for r in records}
    expected = {
        Path(r["input"]).relative_to(scenes).as_posix(): stable(r)
        for r in manifest((local / "manifest.jsonl").read_text())
    }
    assert latest == expected and len(records) == before + 9  # the old lines stay; they no longer count


@pytest.mark.slow  # starts Ray
def test_no_image_and_a_held_prefix_answer_in_json(s3, ray_on_s3, scenes):
    """Exit 1 (no image at all) and exit 2 (another host's run holds the prefix): one line and one
    JSON document; the refused run writes nothing and leaves the other run's lock alone."""
    s3.put_object(Bucket=BUCKET, Key="texts/notes.txt", Body=b"not an image")
    empty = segment(f"s3://{BUCKET}/texts", *ARGS, "--out", f"s3://{BUCKET}/nothing", "--engine", "ray", "--json")
    assert empty.exit_code == 1 and one_json(empty.output)["exit_code"] == 1, empty.output
    held = {"host": "another-host", "pid": 1, "run": "live", "since": "2026-01-01T00:00:00+00:00"}
    s3.put_object(Bucket=BUCKET, Key=f"held/{LOCK}", Body=json.dumps(held).encode())
    refused = segment(PHOTOS, *ARGS, "--out", f"s3://{BUCKET}/held", "--engine", "ray", "--json")
    assert refused.exit_code == 2, refused.output
    document = one_json(refused.output)
    assert document["error"]["kind"] == "usage" and "another pnpseg run is writing to" in document["error"]["message"]
    assert objects(s3, "held") == {LOCK: json.dumps(held).encode()}
    assert objects(s3, "nothing") == {}


@pytest.mark.slow  # Ray runs
def test_an_out_prefix_inside_the_input_prefix_is_never_read_as_input(s3, ray_on_s3, scenes):
    """As locally: the labels written to ``photos/masks/`` are not inputs of the next run (they
    were: it segmented them into ``masks/masks/``)."""
    for i in (0, 2):
        s3.put_object(Bucket=BUCKET, Key=f"nest/s{i}.png", Body=(scenes / f"s{i}.png").read_bytes())
    args = [f"s3://{BUCKET}/nest", *ARGS, "--out", f"s3://{BUCKET}/nest/masks", "--engine", "ray"]
    assert segment(*args).exit_code == 0
    again = segment(*args)
    assert again.exit_code == 0, again.output
    assert "Segmenting 0 image(s)" in again.output and "2 already done" in again.output, again.output
    assert sorted(k for k in objects(s3, "nest") if k.endswith(".png")) == [
        "masks/s0.png",
        "masks/s2.png",
        "s0.png",
        "s2.png",
    ]


# -- the output folder is pnpseg's only where it wrote (issue 21, A), on S3 -----------------
def test_a_users_object_with_an_outputs_name_is_never_replaced_on_s3(s3, scenes, monkeypatch):
    """Item 1: refused (exit 2, one line) before Ray starts; the user's object is kept and
    nothing is written."""
    monkeypatch.setattr("pnpseg.engines.ray.segment.init_ray", lambda *a, **k: pytest.fail("Ray started"))
    for prefix, name, extra in (("ua", "s0.png", []), ("ub", COCO, ["--format", "coco"])):
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{name}", Body=b"the user's")
        for again in ([], ["--overwrite"]):
            out = f"s3://{BUCKET}/{prefix}"
            result = segment(PHOTOS, *ARGS, "--out", out, *extra, *again, "--engine", "ray", "--json")
            assert result.exit_code == 2, (name, result.output)
            assert "not written by pnpseg" in one_json(result.output)["error"]["message"]
            assert objects(s3, prefix) == {name: b"the user's"}


def test_input_folders_named_like_overlays_or_cvat_are_refused_on_s3(s3, scenes, monkeypatch):
    """Item 4: an input ``overlays/s0.png`` (or ``cvat/SegmentationClass/s0.png``) whose label
    lands where the overlay (or CVAT mask) of ``s0.png`` goes: one line, exit 2, before Ray."""
    monkeypatch.setattr("pnpseg.engines.ray.segment.init_ray", lambda *a, **k: pytest.fail("Ray started"))
    png = (scenes / "s0.png").read_bytes()
    for key in ("clash/s0.png", "clash/overlays/s0.png", "clash/cvat/SegmentationClass/s0.png"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=png)
    for sub, extra in (("overlays", ["--viz"]), ("cvat/SegmentationClass", ["--format", "cvat"])):
        result = segment(f"s3://{BUCKET}/clash", *ARGS, "--out", f"s3://{BUCKET}/clashed", *extra, "--engine", "ray")
        assert result.exit_code == 2 and f"{sub}/s0.png" in result.output, result.output
    assert objects(s3, "clashed") == {}


@pytest.mark.slow  # a Ray run
def test_overwrite_on_s3_keeps_to_its_own_objects(s3, ray_run, scenes):
    """Item 2: records naming ``../victim.png`` or a bucket-rooted path never make
    ``--overwrite`` delete outside the prefix. Item 3: a subset ``--overwrite`` with another
    class table leaves no document or CVAT mask of the old one. Item 6: the in-flight temp
    object of a live run in a nested prefix (its lock object there) is kept."""
    copy_prefix(s3, "same", "owned")
    for key in ("victim.png", "elsewhere/victim.png"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"not pnpseg's")
    lines = manifest(objects(s3, "owned")["manifest.jsonl"])
    forged = [
        dict(lines[0], file="../victim.png", fingerprint="0" * 16),
        dict(lines[1], file=f"/{BUCKET}/elsewhere/victim.png", fingerprint="0" * 16),
    ]
    body = b"".join(json.dumps(r).encode() + b"\n" for r in [*lines, *forged])
    s3.put_object(Bucket=BUCKET, Key="owned/manifest.jsonl", Body=body)
    live = {"host": socket.gethostname(), "pid": os.getpid(), "run": "live", "since": "2026-01-01T00:00:00+00:00"}
    s3.put_object(Bucket=BUCKET, Key=f"owned/nested/{LOCK}", Body=json.dumps(live).encode())
    s3.put_object(Bucket=BUCKET, Key="owned/nested/.pnpseg-tmp-0123abcd-p0.png", Body=b"half a png")
    subset = ["--classes", "green,blue", *ARGS[2:], "--overwrite", "--format", "cvat"]
    result = segment(f"{PHOTOS}/s0.png", *subset, "--out", f"s3://{BUCKET}/owned", "--engine", "ray")
    assert result.exit_code == 0, result.output
    written = objects(s3, "owned")
    assert [k for k in written if k.startswith("cvat/SegmentationClass/")] == ["cvat/SegmentationClass/s0.png"]
    assert written["cvat/ImageSets/Segmentation/default.txt"] == b"s0\n"
    assert not any(k.startswith("coco/") for k in written)
    assert written["nested/.pnpseg-tmp-0123abcd-p0.png"] == b"half a png"
    assert s3.get_object(Bucket=BUCKET, Key="victim.png")["Body"].read() == b"not pnpseg's"
    assert s3.get_object(Bucket=BUCKET, Key="elsewhere/victim.png")["Body"].read() == b"not pnpseg's"


@pytest.mark.slow  # Ray runs
def test_out_equal_to_the_input_prefix_resumes_and_a_replaced_input_is_redone(s3, ray_on_s3, scenes):
    """Item 7: ``--out`` the input prefix itself: the labels written there are never the next
    run's inputs, so it resumes. Item 8: an input replaced in place (same key, new bytes) is
    redone; the others are not."""
    for i in (0, 2, 4, 6):
        s3.put_object(Bucket=BUCKET, Key=f"inplace/s{i}.jpg", Body=(scenes / f"s{i}.png").read_bytes())
    args = [f"s3://{BUCKET}/inplace", *ARGS, "--out", f"s3://{BUCKET}/inplace", "--engine", "ray"]
    first = segment(*args)
    assert first.exit_code == 0, first.output
    replacement, _ = make_scene(96, 128, list(reversed(COLOURS)), seed=11)
    s3.put_object(Bucket=BUCKET, Key="inplace/s0.jpg", Body=png_bytes(replacement))
    again = segment(*args)
    assert again.exit_code == 0, again.output
    assert "Segmenting 1 image(s)" in again.output and "3 already done" in again.output, again.output
    last = segment(*args)
    assert "Segmenting 0 image(s)" in last.output and "4 already done" in last.output, last.output


def test_a_write_to_s3_never_shows_an_object_but_its_own(s3):
    """An object appears only once its upload is complete, so a write goes straight to its
    key: no temp object that a worker killed mid-write (a driver's Ctrl+C) would leave."""
    from pnpseg.io.store import Store

    store, data = Store(f"s3://{BUCKET}/direct"), os.urandom(24 << 20)  # a multipart upload
    seen: set[str] = set()
    writer = threading.Thread(target=store.write_bytes, args=("labels/x.png", data))
    writer.start()
    while writer.is_alive():
        seen |= set(keys(s3, "direct"))
    writer.join()
    assert seen <= {"labels/x.png", "labels/"} and objects(s3, "direct") == {"labels/x.png": data}


@pytest.mark.slow  # a Ray run
def test_a_store_that_stops_taking_writes_mid_run_is_exit_3_in_one_line(s3, ray_on_s3, scenes, monkeypatch):
    """The manifest is written at the end; the store then unreachable is the environment
    (exit 3, one line), as a full or read-only local disk is, not a crash (exit 4)."""
    import pyarrow.fs as pafs

    from pnpseg.engines.common.folder import MANIFEST
    from pnpseg.io.store import Store

    write = Store.write_bytes

    def unreachable_for_the_manifest(store, rel, data):
        if rel == MANIFEST:  # nothing listens there, as if the store had gone
            store.fs = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{free_port()}", scheme="http")
        return write(store, rel, data)

    monkeypatch.setattr(Store, "write_bytes", unreachable_for_the_manifest)
    out = f"s3://{BUCKET}/gone"
    result = segment(PHOTOS, *ARGS, "--out", out, "--engine", "ray", "--json")
    assert result.exit_code == 3, result.output
    error = one_json(result.output)["error"]
    assert error["kind"] == "environment" and error["message"].startswith(f"cannot write {out}/manifest.jsonl: ")
    assert "\n" not in error["message"] and "pnpseg-crash-" not in result.output  # no traceback file: not a bug


@pytest.mark.slow  # two Ray runs
def test_a_killed_overwrite_that_changes_settings_resumes_on_s3(s3, ray_run, scenes, monkeypatch, tmp_path):
    """Issue 21 item 7 on an object store: the reset is recorded before any new label is
    written, so the labels a killed ``--overwrite`` left are never counted as the old
    settings' results. The resumed prefix equals a clean run with the new settings."""
    copy_prefix(s3, "same", "overkill")
    out, new = f"s3://{BUCKET}/overkill", [*ARGS, "--threshold", "0.5"]

    def killed(self, rows):
        raise KeyboardInterrupt  # labels written by the workers, no record appended

    with monkeypatch.context() as m:
        m.setattr(OutputFolder, "append", killed)
        assert segment(PHOTOS, *new, "--out", out, "--overwrite", "--engine", "ray").exit_code == 130
    assert LOCK not in objects(s3, "overkill")
    resumed = segment(PHOTOS, *new, "--out", out, "--engine", "ray")
    assert resumed.exit_code == 1, resumed.output  # broken.png
    clean = tmp_path / "clean"
    assert segment(str(scenes), *new, "--out", str(clean)).exit_code == 1
    written = objects(s3, "overkill")
    records = manifest(written.pop("manifest.jsonl"))
    latest = {r["input"]: r for r in records}
    fingerprints = {r["fingerprint"] for r in manifest((clean / "manifest.jsonl").read_text())}
    assert len(fingerprints) == 1 and {r["fingerprint"] for r in latest.values()} == fingerprints
    labels = {k: v for k, v in written.items() if k.endswith(".png") and not k.startswith(("overlays/", "cvat/"))}
    assert labels == {k: v for k, v in files(clean).items() if k.endswith(".png")}


def test_a_worker_whose_store_refuses_a_label_records_that_image_and_goes_on(s3, scenes, monkeypatch):
    """A Ray worker's failed upload is that image's error record (as a failed write there has
    always been); the run's own documents, written where the run stops, are exit 3."""
    import numpy as np
    import pyarrow.fs as pafs

    import pnpseg.engines.ray.actors as actors
    from pnpseg.engines.common import JobSpec, fingerprint
    from pnpseg.engines.common.folder import PARTS
    from pnpseg.io.store import Store, StoreWriteError

    spec = JobSpec(COLOURS, "synthetic", device="cpu", params={"image_size": "128"})
    _, (settings, params) = actors.describe(spec)
    folder = OutputFolder(f"s3://{BUCKET}/refused", COLOURS)
    layout = folder.layout(settings, fingerprint(folder.table, settings))
    paths = [scenes / "s0.png", scenes / "s2.png"]
    batch = {
        "idx": np.arange(2),
        "input": np.array([str(p) for p in paths], dtype=object),
        "root": np.array([""] * 2, dtype=object),
        "relative": np.array([p.name for p in paths], dtype=object),
    }
    handed_on = actors.SegmentActor(spec, layout)(batch)
    write, dead = Store.write_bytes, pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{free_port()}", scheme="http")

    def refused_but_parts(store, rel, data):
        if rel.startswith(PARTS):
            return write(store, rel, data)
        live, store.fs = store.fs, dead
        try:
            return write(store, rel, data)
        finally:
            store.fs = live

    monkeypatch.setattr(Store, "write_bytes", refused_but_parts)
    records = [json.loads(r) for r in actors.finish_and_write(handed_on, layout, params)["record"]]
    assert [r["status"] for r in records] == ["error", "error"]
    assert records[0]["error"].startswith(f"cannot write output: cannot write s3://{BUCKET}/refused/s0.png: ")
    # the block's part file refused as well: the records still reach the driver (no task error, exit 4)
    monkeypatch.setattr(Store, "write_bytes", lambda store, rel, data: refused_but_parts(store, "x/" + rel, data))
    again = [json.loads(r) for r in actors.finish_and_write(handed_on, layout, params)["record"]]
    assert [r["status"] for r in again] == ["error", "error"] and again[0]["input"] == records[0]["input"]
    monkeypatch.setattr(Store, "write_bytes", write)
    with pytest.raises(StoreWriteError, match=f"cannot write s3://{BUCKET}/refused/manifest.jsonl: "):
        Store(f"s3://{BUCKET}/refused?endpoint_override=127.0.0.1:{free_port()}&scheme=http").write_bytes(
            "manifest.jsonl", b""
        )
