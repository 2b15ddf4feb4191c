"""`segment --engine ray` and `eval --engine ray` on a local 2-CPU Ray instance with the synthetic
adapter: byte-identical outputs and the same manifest as the local engine, URIs, resume, a
worker killed mid-run, and confusion matrices summed across workers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytestmark = pytest.mark.slow  # a few seconds each: not in the quick loop

ray = pytest.importorskip("ray", reason="the ray extra is not installed")

import pnpseg.engines.ray.actors as actors
from pnpseg.cli import app
from pnpseg.engines.common import JobSpec
from pnpseg.engines.common.folder import LOCK
from pnpseg.engines.ray import RaySegmentJob, ray_evaluate
from pnpseg.evaluation.datasets import folder_dataset
from pnpseg.evaluation.evaluate import Evaluation
from pnpseg.evaluation.predictors import ModelPredictor
from pnpseg.evaluation.spec import EvalSpec
from pnpseg.io.ownership import LEDGER
from pnpseg.method.segmenter import Segmenter
from pnpseg.testing import make_scene

COLOURS = ["red", "green", "blue"]
ARGS = ["--classes", ",".join(COLOURS), "--adapter", "synthetic", "--device", "cpu", "--image-size", "128"]
#: Fields allowed to differ between engines: timing, and "output" and "key", which name each
#: run's own --out (the key is the input relative to it).
VOLATILE = ("seconds", "output", "key")


def segment(*args: str):
    return CliRunner().invoke(app, ["segment", *args])


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    for i in range(8):
        image, _ = make_scene(96 + 8 * i, 128, COLOURS, seed=i)
        path = root / ("sub" if i % 2 else "") / f"s{i}.png"
        path.parent.mkdir(exist_ok=True)
        image.save(path)
    (root / "sub" / "broken.png").write_bytes(b"not a png")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def local_run(scenes, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    result = segment(str(scenes), *ARGS, "--out", str(out), "--viz", "--format", "png,cvat,coco")
    assert result.exit_code == 1, result.output  # broken.png
    return out


def outputs(out: Path) -> dict[str, bytes]:
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in ("manifest.jsonl", LOCK, LEDGER)  # a file:// URI is locked too
    }


def records(out: Path, strip: str = "") -> list[dict]:
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    for record in lines:
        record["input"] = record["input"].removeprefix(strip)
        record["error"] = record["error"] and record["error"].removeprefix(strip)  # it names the input
        for key in VOLATILE:
            record.pop(key)
    return lines


def test_ray_engine_matches_the_local_engine(scenes, local_run, tmp_path):
    out = tmp_path / "ray"
    result = segment(
        str(scenes), *ARGS, "--out", str(out), "--viz", "--format", "png,cvat,coco", "--engine", "ray", "--workers", "2"
    )
    assert result.exit_code == 1, result.output
    assert "notes.txt: not an image file" in result.output and "broken.png" in result.output
    # label PNGs, overlays, classes.json and the --format documents, byte for byte
    assert (
        outputs(out) == outputs(local_run)
        and (out / "coco" / "annotations" / "instances_default.json").is_file()
        and (out / "cvat").is_dir()
    )
    owned = json.loads((out / LEDGER).read_text())["files"]
    assert set(outputs(out)) | {"manifest.jsonl"} <= set(owned)  # the ledger names every file written
    assert records(out) == records(local_run)  # same records in the same (input) order
    assert [r["status"] for r in records(out)].count("error") == 1
    assert not (out / ".pnpseg-parts").exists()


def test_uris_and_resume(scenes, local_run, tmp_path):
    out = tmp_path / "uri"
    args = [f"file://{scenes}", *ARGS, "--out", f"file://{out}", "--engine", "ray", "--workers", "2"]
    first = segment(*args)
    assert first.exit_code == 1, first.output
    assert {k: v for k, v in outputs(out).items()} == {
        k: v for k, v in outputs(local_run).items() if not k.startswith(("overlays/", "cvat/", "coco/"))
    }
    assert records(out, strip="file://") == records(local_run)
    assert json.loads((out / "manifest.jsonl").read_text().splitlines()[0])["output"].startswith(f"file://{out}/")
    (out / "sub" / "s3.png").unlink()
    again = segment(*args)
    assert "Segmenting 2 image(s)" in again.output and "7 already done" in again.output, again.output
    assert (out / "sub" / "s3.png").read_bytes() == (local_run / "sub" / "s3.png").read_bytes()
    other = segment(f"file://{scenes}", *ARGS[:-1], "160", "--out", f"file://{out}", "--engine", "ray")
    assert other.exit_code == 2 and "other settings" in other.output


def test_a_worker_killed_mid_run_still_does_every_image_once(scenes, local_run, tmp_path, monkeypatch):
    out, marker = tmp_path / "killed", tmp_path / "killed-once"

    class DiesOnce(actors.SegmentActor):  # defined here, so Ray ships it to the workers by value
        """The first actor to pass 2 images dies (os._exit), once."""

        seen = 0

        def __call__(self, batch):
            self.seen += len(batch["input"])
            if self.seen > 2:
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    pass
                else:
                    os._exit(1)
            return super().__call__(batch)

    monkeypatch.setattr(actors, "SegmentActor", DiesOnce)
    job = RaySegmentJob(
        JobSpec(COLOURS, "synthetic", device="cpu", params={"image_size": "128"}), [scenes], out, workers=2
    )
    summary = job.run()
    assert marker.exists()  # an actor did die (os._exit) after its first images
    assert (summary.done, summary.failed) == (8, 1)
    inputs = [json.loads(line)["input"] for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(inputs) == len(set(inputs)) == 9  # exactly one record per image
    assert records(out) == records(local_run)
    assert {k: v for k, v in outputs(out).items()} == {
        k: v for k, v in outputs(local_run).items() if not k.startswith(("overlays/", "cvat/", "coco/"))
    }


def test_the_pixel_limit_reaches_the_actors_that_decode(scenes, tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # the CLI sets it process-wide
    limit = ["--max-image-pixels", "15000"]  # s3–s7 (≥ 120×128 = 15 360 pixels) are over it
    local = segment(str(scenes), *ARGS, "--out", str(tmp_path / "local"), *limit)
    on_ray = segment(str(scenes), *ARGS, "--out", str(tmp_path / "ray"), *limit, "--engine", "ray", "--workers", "2")
    assert local.exit_code == on_ray.exit_code == 1, on_ray.output
    assert records(tmp_path / "ray") == records(tmp_path / "local")
    too_large = [r for r in records(tmp_path / "ray") if "--max-image-pixels" in (r["error"] or "")]
    assert len(too_large) == 5
    bad = segment(str(scenes), *ARGS, "--out", str(tmp_path / "bad"), "--max-image-pixels", "-1", "--engine", "ray")
    assert bad.exit_code == 2 and "--max-image-pixels" in bad.output


def test_interrupted_driver_leaves_parts_that_the_next_run_merges(scenes, local_run, tmp_path):
    out = tmp_path / "parts"
    RaySegmentJob(JobSpec(COLOURS, "synthetic", device="cpu", params={"image_size": "128"}), [scenes], out).run()
    lines = (out / "manifest.jsonl").read_text().splitlines(keepends=True)
    (out / "manifest.jsonl").write_text("".join(lines[:3]))  # the driver died after 3 records...
    (out / ".pnpseg-parts").mkdir()
    (out / ".pnpseg-parts" / "left.jsonl").write_text("".join(lines[2:]))  # ...the workers had written these
    job = RaySegmentJob(JobSpec(COLOURS, "synthetic", device="cpu", params={"image_size": "128"}), [scenes], out)
    summary = job.run()
    assert summary.skipped_done == 8 and summary.done == 0 and summary.failed == 1  # only broken.png is retried
    assert [r for r in records(out) if r["status"] == "ok"] == [r for r in records(local_run) if r["status"] == "ok"]


def test_eval_on_ray_sums_the_same_confusion_matrix(tmp_path):
    root = tmp_path / "colours"
    for i, (h, w) in enumerate([(96, 128), (112, 96), (80, 128), (96, 96)]):
        image, labels = make_scene(h, w, COLOURS, seed=20 + i)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "labels").mkdir(exist_ok=True)
        image.save(root / "images" / f"s{i}.png")
        from PIL import Image

        Image.fromarray(labels.astype(np.uint8)).save(root / "labels" / f"s{i}.png")
    (root / "classes.txt").write_text("background\nred\ngreen\nblue\n")
    data = folder_dataset(
        name="colours",
        img_dir="images",
        ann_dir="labels",
        classes=root / "classes.txt",
        img_suffix=".png",
        has_background=True,
        pnp_background="always",
    )(root)
    segmenter = Segmenter.from_pretrained(adapter="synthetic", device="cpu", image_size="128")
    settings = {"adapter": "synthetic", "model": None, "preset": None}
    predictor = ModelPredictor(segmenter, data, "pnp")
    local = Evaluation(data, predictor, tmp_path / "local", settings={**settings, **predictor.settings()}).run()
    spec = EvalSpec.make(data, adapter="synthetic", device="cpu", params={"image_size": "128"})
    result = ray_evaluate(spec, tmp_path / "ray", save_predictions=True, workers=2, checkpoint_every=1)
    np.testing.assert_array_equal(result.confusion, local.confusion)
    assert result.images == 4 and result.miou == local.miou and local.miou > 0.85
    assert (tmp_path / "ray" / "results.json").read_text() == (tmp_path / "local" / "results.json").read_text().replace(
        str(tmp_path / "local"), str(tmp_path / "ray")
    )
    assert len(list((tmp_path / "ray" / "predictions").glob("*.png"))) == 4
    again = ray_evaluate(spec, tmp_path / "ray", save_predictions=True, workers=2)  # resumes: nothing left to predict
    np.testing.assert_array_equal(again.confusion, local.confusion)


def test_eval_command_on_ray_scores_predictions_like_the_local_engine(tmp_path):
    from test_eval import png, write_layout

    root, preds = tmp_path / "ade", tmp_path / "preds"
    write_layout("ade20k", root, [0, 1, 2, 3, 150], count=5)
    rng = np.random.default_rng(0)
    for name in sorted(p.stem for p in (root / "images" / "validation").glob("*.jpg")):
        png(preds / f"{name}.png", rng.integers(0, 5, (12, 16)))
    common = ["eval", "--dataset", "ade20k", "--root", str(root), "--predictions", str(preds)]
    local = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    on_ray = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2"])
    assert on_ray.exit_code == 0, on_ray.output
    for name in ("results.json", "per_class_iou.csv", "results.md"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()


def test_a_step4_task_builds_the_postprocessor_chain_once(scenes, tmp_path, monkeypatch):
    """It once rebuilt the chain for every image (``dict.setdefault(key, build_chain(...))``)."""
    import numpy as np

    import pnpseg.method.postprocess as postprocess
    from pnpseg.engines.common import JobSpec, OutputFolder, fingerprint

    spec = JobSpec(COLOURS, "synthetic", device="cpu", params={"image_size": "128"})
    status, (settings, params) = actors.describe(spec)
    folder = OutputFolder(tmp_path / "out", COLOURS)
    layout = folder.layout(settings, fingerprint(folder.table, settings))
    paths = [scenes / f"s{i}.png" for i in (0, 2, 4)]
    batch = {
        "idx": np.arange(3),
        "input": np.array([str(p) for p in paths], dtype=object),
        "root": np.array([""] * 3, dtype=object),
        "relative": np.array([p.name for p in paths], dtype=object),
    }
    handed_on = actors.SegmentActor(spec, layout)(batch)
    built = []
    monkeypatch.setattr(postprocess, "build_chain", lambda names: built.append(names) or [])
    actors.chain_for.cache_clear()
    try:
        result = actors.finish_and_write(handed_on, layout, params)
    finally:
        actors.chain_for.cache_clear()  # forget the stand-in chain
    assert [json.loads(r)["status"] for r in result["record"]] == ["ok"] * 3
    assert built == [("blur", "crf")]
