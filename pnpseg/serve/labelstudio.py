"""``pnpseg serve labelstudio``: a Label Studio ML backend, the interactive loop of SAM backends.

Label Studio calls three routes (its ML-backend HTTP API): ``GET /health``, ``POST /setup``
(when the backend is connected to a project, with the project's labelling config, its own
address and an access token) and ``POST /predict`` (tasks, and the labelling config). The
model is loaded once, before the server listens, and every request is answered from that warm
process; one prediction runs at a time.

The project's labels are the class names: each ``Label`` of the config's first
``BrushLabels`` is prompted as its ``value``, or as the names in its ``predicted_values``
attribute (``<Label value="Car" predicted_values="car,truck"/>``, the attribute Label
Studio's own backends read), whose masks then all become that label. An image is fetched
from Label Studio (its ``/data/...`` paths, with the token) or from an ``http(s)`` URL, at
most ``max_bytes`` and ``--max-image-pixels``; a bad, huge or unreachable image is an error
response naming the task, never a crash.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urljoin, urlsplit
from xml.etree import ElementTree

import numpy as np

from pnpseg.errors import ImageError, PnpsegError
from pnpseg.io.formats.labelstudio import brush_regions
from pnpseg.io.images import decode_image

#: Largest request body (tasks and config) and largest image download, in bytes.
MAX_BODY = 16 * 2**20
MAX_IMAGE_BYTES = 64 * 2**20
FETCH_TIMEOUT = 30.0


class RequestError(PnpsegError):
    """A request the backend answers with ``status`` and a one-line ``error``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Target:
    """What the project's labelling config asks for: the ``BrushLabels`` control
    (``from_name``), the ``Image`` it labels (``to_name``) and the task data key of the image
    (``value``); ``classes[i]`` is prompted and becomes label ``labels[label_of[i]]``."""

    from_name: str
    to_name: str
    value: str
    labels: tuple[str, ...]
    classes: tuple[str, ...]
    label_of: tuple[int, ...]


def parse_config(xml: str) -> Target:
    """The :class:`Target` of a labelling config; a config without ``BrushLabels`` on an
    ``Image``, or without labels, is a request error."""
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as error:
        raise RequestError(f"the labelling config is not XML: {error}") from None
    brush = next(iter(root.iter("BrushLabels")), None)
    if brush is None:
        raise RequestError("the labelling config has no BrushLabels: pnpseg predicts brush masks")
    to_name = brush.get("toName", "")
    image = next((e for e in root.iter("Image") if e.get("name") == to_name), None)
    if image is None or not image.get("value", "").startswith("$"):
        raise RequestError(f"the BrushLabels' toName {to_name!r} names no Image with a $data value")
    labels, classes, label_of = [], [], []
    for label in brush.iter("Label"):
        value = label.get("value", "")
        if not value:
            continue
        labels.append(value)
        names = [n.strip() for n in (label.get("predicted_values") or value).split(",") if n.strip()]
        for name in names:
            if name not in classes:
                classes.append(name)
                label_of.append(len(labels) - 1)
    if not classes:
        raise RequestError("the BrushLabels have no Label")
    return Target(
        brush.get("name", ""), to_name, image.get("value", "")[1:], tuple(labels), tuple(classes), tuple(label_of)
    )


class Fetcher:
    """Downloads a task's image: Label Studio's own paths (``/data/...``) from its address with
    its token (both from ``/setup``, unless given on the command line), other ``http(s)`` URLs
    as they are, anything else refused."""

    def __init__(self, url: str | None = None, token: str | None = None, max_bytes: int = MAX_IMAGE_BYTES):
        self.fixed_url, self.fixed_token = url, token
        self.url, self.token, self.max_bytes = url, token, max_bytes

    def setup(self, hostname: str | None, token: str | None) -> None:
        self.url = self.fixed_url or hostname or self.url
        self.token = self.fixed_token or token or self.token

    def __call__(self, location: str) -> bytes:
        scheme = urlsplit(location).scheme
        if not scheme and location.startswith("/"):
            if not self.url:
                raise RequestError(f"{location}: Label Studio's address is unknown (give --label-studio-url)", 422)
            location = urljoin(self.url.rstrip("/") + "/", location.lstrip("/"))
        elif scheme not in ("http", "https"):
            raise RequestError(f"{location[:200]}: only http(s) images and Label Studio's own paths are fetched", 422)
        request = urllib.request.Request(location)
        same_origin = self.url and urlsplit(location)[:2] == urlsplit(self.url)[:2]
        if same_origin and self.token:
            request.add_header("Authorization", f"Token {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as response:
                data = response.read(self.max_bytes + 1)
        except urllib.error.HTTPError as error:
            raise RequestError(f"{location[:200]}: HTTP {error.code} fetching the image", 422) from None
        except (OSError, ValueError) as error:
            raise RequestError(f"{location[:200]}: cannot fetch the image ({error})", 422) from None
        if len(data) > self.max_bytes:
            raise RequestError(f"{location[:200]}: image larger than {self.max_bytes} bytes", 413)
        return data


def decode(data: bytes, name: str) -> Any:
    """The RGB image of downloaded bytes, read as ``segment`` reads a file (EXIF, modes, the
    pixel limit); a bad or too large image is a request error."""
    try:
        return decode_image(data, name)
    except ImageError as error:
        raise RequestError(f"{name}: {error.reason}", 422) from None


class Backend:
    """The warm model and what each route answers (JSON-ready dicts); thread-safe."""

    def __init__(
        self, segmenter: Any, class_source: Callable[[Sequence[str]], Any], model_version: str, fetch: Fetcher
    ):
        self.segmenter, self.class_source, self.model_version, self.fetch = (
            segmenter,
            class_source,
            model_version,
            fetch,
        )
        self._lock = threading.Lock()
        self._source_of: tuple[tuple[str, ...], Any] | None = None  # the last labels' class source

    def health(self) -> dict[str, Any]:
        return {"status": "UP", "model_class": "pnpseg", "model_version": self.model_version}

    def setup(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("schema"):
            parse_config(str(body["schema"]))  # a project pnpseg cannot serve fails at connection
        self.fetch.setup(body.get("hostname"), body.get("access_token"))
        return {"model_version": self.model_version}

    def predict(self, body: dict[str, Any]) -> dict[str, Any]:
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise RequestError("predict: 'tasks' must be a list of tasks")
        target = parse_config(str(body.get("label_config") or ""))
        return {"results": [self._predict(task, target) for task in tasks]}

    def _predict(self, task: dict[str, Any], target: Target) -> dict[str, Any]:
        from pnpseg.engines.common.layout import to_vocabulary
        from pnpseg.sources.class_sources import ClassSourceImageError, propose

        name = f"task {task.get('id', '?')}"
        location = (task.get("data") or {}).get(target.value)
        if not isinstance(location, str) or not location:
            raise RequestError(f"{name}: no image in data.{target.value}")
        image = decode(self.fetch(location), name)
        with self._lock:  # one model pass at a time
            try:
                proposal = propose(self._source(target.classes), image, None, list(target.classes), self.segmenter)
            except ClassSourceImageError as error:
                raise RequestError(f"{name}: class source: {error}", 422) from None
            result = self.segmenter(image, proposal.classes)
        classes = to_vocabulary(result.labels, proposal.classes, target.classes)  # 0, or 1 + a class
        labels = np.asarray([0, *(label + 1 for label in target.label_of)])[classes]  # 0, or 1 + a label
        present = list(result.class_scores().values())
        return {
            "result": brush_regions(labels, target.labels, target.from_name, target.to_name),
            "score": float(np.mean(present)) if present else 0.0,
            "model_version": self.model_version,
        }

    def _source(self, classes: tuple[str, ...]) -> Any:
        """The class source for a project's labels. Only the last is kept: a ``clip`` source
        holds a CLIP model, and one per label set ever seen would pile up in memory."""
        if self._source_of is None or self._source_of[0] != classes:
            self._source_of = (classes, self.class_source(classes))
        return self._source_of[1]


class Handler(BaseHTTPRequestHandler):
    """JSON in, JSON out; every failure is a JSON ``{"error": ...}`` response."""

    backend: Backend
    log: Callable[[str], None]

    def do_GET(self) -> None:
        if self.path.split("?")[0].rstrip("/") in ("/health", ""):
            self._answer(200, self.backend.health())
        else:
            self._answer(404, {"error": f"no route GET {self.path[:100]}"})

    def do_POST(self) -> None:
        route = self.path.split("?")[0].rstrip("/")
        try:
            body = self._body()
            if route == "/setup":
                self._answer(200, self.backend.setup(body))
            elif route == "/predict":
                self._answer(200, self.backend.predict(body))
            elif route == "/webhook":  # training events: pnpseg does not train
                self._answer(200, {"status": "ignored"})
            else:
                self._answer(404, {"error": f"no route POST {self.path[:100]}"})
        except RequestError as error:
            self._answer(error.status, {"error": str(error)})
        except Exception as error:  # the server outlives any request
            self._answer(500, {"error": f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"})

    def _body(self) -> dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise RequestError("bad Content-Length") from None
        if length > MAX_BODY:
            self.close_connection = True
            raise RequestError(f"request larger than {MAX_BODY} bytes", 413)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except (ValueError, RecursionError):
            raise RequestError("the request is not JSON") from None
        if not isinstance(body, dict):
            raise RequestError("the request is not a JSON object")
        return body

    def _answer(self, status: int, document: dict[str, Any]) -> None:
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        if status >= 400:
            self.log(f"{self.command} {self.path[:100]}: {status} {document.get('error', '')}")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        """Quiet: errors are logged by :meth:`_answer`."""


def make_server(backend: Backend, host: str, port: int, log: Callable[[str], None]) -> ThreadingHTTPServer:
    """The HTTP server for ``backend`` bound to ``host:port`` (0: a free port); call
    ``serve_forever()`` on it."""
    handler = type("BoundHandler", (Handler,), {"backend": backend, "log": staticmethod(log)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
