"""``pnpseg serve labelstudio``: the ML-backend routes, label mapping, the method flags, bad
requests, and (with ``PNPSEG_LABEL_STUDIO_URL``, as ``.ci/run`` sets it) a real Label Studio
server that connects the backend to a project and asks it for predictions."""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import pnpseg.serve.labelstudio as serving
from pnpseg.cli import app
from pnpseg.io.formats.labelstudio import labelling_config
from pnpseg.testing import COLOURS, make_scene

VOCAB = list(COLOURS)[:3]
SIZE = (48, 64)
FLAGS = ["--adapter", "synthetic", "--device", "cpu", "--image-size", f"{SIZE[0]}x{SIZE[1]}"]
LS_URL = os.environ.get("PNPSEG_LABEL_STUDIO_URL")
LS_TOKEN = os.environ.get("PNPSEG_LABEL_STUDIO_TOKEN", "")
MAKE_SERVER = serving.make_server  # the real one: backend_of() replaces it while the CLI runs


def backend_of(*args: str, monkeypatch) -> serving.Backend:
    """The Backend ``pnpseg serve labelstudio ARGS`` builds (the server is not started)."""
    made = {}

    class NotServing:
        server_port = 0

        def serve_forever(self):
            pass

        def server_close(self):
            pass

    def capture(backend, host, port, log):
        made.update(backend=backend, host=host, port=port)
        return NotServing()

    monkeypatch.setattr(serving, "make_server", capture)
    result = CliRunner().invoke(app, ["serve", "labelstudio", *args])
    assert result.exit_code == 0, result.output
    made["backend"].bound = (made["host"], made["port"])
    return made["backend"]


@contextmanager
def running(backend: serving.Backend):
    server = MAKE_SERVER(backend, "127.0.0.1", 0, lambda line: None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def file_server(folder: Path):
    """A plain HTTP server for images, standing in for Label Studio's file serving."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietFiles, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


class QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def call(url: str, route: str, body: object | bytes | None = None) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + route, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def decode_regions(result: list[dict], labels: list[str], shape: tuple[int, int]) -> np.ndarray:
    from label_studio_sdk.converter import brush

    decoded = np.zeros(shape, np.uint8)
    for region in result:
        assert (region["from_name"], region["to_name"], region["type"]) == ("tag", "image", "brushlabels")
        alpha = brush.decode_rle(region["value"]["rle"]).reshape(*shape, 4)[..., 3]
        decoded[alpha == 255] = labels.index(region["value"]["brushlabels"][0]) + 1
    return decoded


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    for i in range(2):
        make_scene(*SIZE, VOCAB[i : i + 2], seed=i)[0].save(folder / f"p{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


@pytest.fixture(scope="module")
def segmented(photos, tmp_path_factory):
    """What ``pnpseg segment`` writes for the same images and flags: what the backend must predict."""
    out = tmp_path_factory.mktemp("serve-out") / "out"
    result = CliRunner().invoke(
        app,
        [
            "segment",
            str(photos / "p0.png"),
            str(photos / "p1.png"),
            "--classes",
            ",".join(VOCAB),
            *FLAGS,
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 1 or result.exit_code == 0, result.output
    return {name: np.array(Image.open(out / f"{name}.png")) for name in ("p0", "p1")}


def test_routes_predict_the_segment_labels_under_the_projects_label_names(photos, segmented, monkeypatch):
    """health, setup, predict; the project's labels mapped to class names with
    ``predicted_values``, and the masks equal to ``pnpseg segment``'s."""
    backend = backend_of(*FLAGS, monkeypatch=monkeypatch)
    assert backend.bound == ("127.0.0.1", 9090)  # this machine only, by default
    names = ["Rouge", "Vert", "Bleu"]
    config = labelling_config(names).replace('value="Rouge"', 'value="Rouge" predicted_values="red"')
    config = config.replace('value="Vert"', 'value="Vert" predicted_values="green"').replace(
        'value="Bleu"', 'value="Bleu" predicted_values="blue"'
    )
    with file_server(photos) as files, running(backend) as url:
        assert call(url, "/health") == (
            200,
            {"status": "UP", "model_class": "pnpseg", "model_version": "pnpseg-synthetic"},
        )
        assert call(url, "/setup", {"project": "1.1", "schema": config, "hostname": files, "access_token": "t"}) == (
            200,
            {"model_version": "pnpseg-synthetic"},
        )
        tasks = [{"id": i, "data": {"image": f"/p{i}.png"}} for i in range(2)]  # Label Studio's own paths
        status, answer = call(url, "/predict", {"tasks": tasks, "label_config": config, "project": "1.1"})
    assert status == 200, answer
    assert len(answer["results"]) == 2
    for i, prediction in enumerate(answer["results"]):
        assert prediction["model_version"] == "pnpseg-synthetic" and 0 < prediction["score"] <= 1
        np.testing.assert_array_equal(decode_regions(prediction["result"], names, SIZE), segmented[f"p{i}"])


def test_bad_requests_are_error_responses_and_the_server_lives_on(photos, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # --max-image-pixels sets it process-wide
    backend = backend_of(*FLAGS, "--max-image-pixels", "1000", monkeypatch=monkeypatch)
    config = labelling_config(VOCAB)
    with file_server(photos) as files, running(backend) as url:
        call(url, "/setup", {"schema": config, "hostname": files})

        def predict(image: str) -> tuple[int, dict]:
            return call(url, "/predict", {"tasks": [{"id": 7, "data": {"image": image}}], "label_config": config})

        status, answer = predict("/broken.png")
        assert status == 422 and answer["error"] == "task 7: not a recognised image format"
        status, answer = predict("/p0.png")  # 48×64 = 3072 pixels, over the limit
        assert status == 422 and answer["error"].startswith("task 7: image too large")
        status, answer = predict("/missing.png")
        assert status == 422 and "HTTP 404" in answer["error"]
        status, answer = predict("file:///etc/passwd")
        assert status == 422 and "only http(s) images" in answer["error"]
        status, answer = call(url, "/predict", {"tasks": [{"id": 1, "data": {}}], "label_config": "<View/>"})
        assert status == 400 and "no BrushLabels" in answer["error"]
        assert call(url, "/predict", b"{not json")[0] == 400
        assert call(url, "/predict", b"[" * 100_000 + b"]" * 100_000)[0] == 400
        assert call(url, "/predict", {"tasks": "x", "label_config": config})[0] == 400
        huge = http.client.HTTPConnection(*url.removeprefix("http://").split(":"), timeout=60)
        huge.putrequest("POST", "/predict")  # announces more than the limit: refused before it is read
        huge.putheader("Content-Length", str(serving.MAX_BODY + 1))
        huge.endheaders(b"{}")
        assert huge.getresponse().status == 413
        huge.close()
        assert call(url, "/health")[0] == 200  # still serving


def test_method_flags_preset_and_class_source_are_honoured(tmp_path, monkeypatch):
    preset = tmp_path / "preset.json"
    preset.write_text(
        json.dumps(
            {"format": "pnpseg-preset", "version": 1, "adapter": "synthetic", "params": {"threshold": 0.3, "layer": 2}}
        )
    )
    backend = backend_of(
        "--preset",
        str(preset),
        "--threshold",
        "0.4",
        "--device",
        "cpu",
        "--class-source",
        "itm:top=1",
        "--port",
        "0",
        monkeypatch=monkeypatch,
    )
    params = backend.segmenter.params
    assert (params.threshold, params.layer) == (0.4, 2)  # the flag over the preset, the rest from it
    assert backend.class_source(("red", "green")).name == "itm"
    bad = CliRunner().invoke(app, ["serve", "labelstudio", *FLAGS, "--class-source", "file:x.json"])
    assert bad.exit_code == 2 and "--class-source" in bad.output
    bad = CliRunner().invoke(app, ["serve", "labelstudio", *FLAGS, "--class-source", "nope"])
    assert bad.exit_code == 2


def test_a_taken_port_is_refused_before_the_model_loads(monkeypatch):
    from pnpseg.method.segmenter import Segmenter

    monkeypatch.setattr(Segmenter, "from_pretrained", lambda *a, **k: pytest.fail("the model must not load"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = CliRunner().invoke(app, ["serve", "labelstudio", *FLAGS, "--port", str(taken.getsockname()[1])])
    assert result.exit_code == 3 and "cannot serve on 127.0.0.1:" in result.output


@pytest.mark.skipif(not LS_URL, reason="PNPSEG_LABEL_STUDIO_URL is not set: a Label Studio server (.ci/run starts one)")
def test_a_real_label_studio_server_gets_predictions_from_the_backend(photos, segmented, monkeypatch):
    """Connect the backend to a project (Settings → Model), ask for predictions of the
    imported tasks: Label Studio stores the backend's masks, equal to ``pnpseg segment``'s."""
    import requests

    http = requests.Session()
    http.headers["Authorization"] = f"Token {LS_TOKEN}"

    def api(method: str, path: str, **kwargs):
        response = http.request(method, LS_URL.rstrip("/") + path, timeout=300, **kwargs)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response.json() if response.content else None

    backend = backend_of(*FLAGS, monkeypatch=monkeypatch)
    project = api("POST", "/api/projects", json={"title": "pnpseg backend", "label_config": labelling_config(VOCAB)})[
        "id"
    ]
    try:
        api("POST", "/api/storages/localfiles", json={"project": project, "path": str(photos), "title": "photos"})
        tasks = [
            {"data": {"image": f"/data/local-files/?d={(photos / f'p{i}.png').as_posix().lstrip('/')}"}}
            for i in range(2)
        ]
        api("POST", f"/api/projects/{project}/import", json=tasks)
        with running(backend) as url:
            api("POST", "/api/ml", json={"project": project, "url": url, "title": "pnpseg"})
            api(
                "POST",
                "/api/dm/actions",
                params={"id": "retrieve_tasks_predictions", "project": project},
                json={"selectedItems": {"all": True, "excluded": []}},
            )
        stored = api("GET", "/api/tasks", params={"project": project, "fields": "all"})["tasks"]
        assert len(stored) == 2
        for task in stored:
            (prediction,) = task["predictions"]
            assert prediction["model_version"] == "pnpseg-synthetic"
            name = Path(task["data"]["image"].split("?d=")[1]).stem
            np.testing.assert_array_equal(decode_regions(prediction["result"], VOCAB, SIZE), segmented[name])
    finally:
        api("DELETE", f"/api/projects/{project}")
