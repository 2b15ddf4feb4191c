"""The ``llm`` class source at its edges (issue 12 #6): redirects, deadlines, size caps,
malformed answers, plain http and bad options. Stub servers listen on 127.0.0.1 only, serve a
bounded number of requests and stop by themselves."""

from __future__ import annotations

import http.server
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from pnpseg import PnpsegError
from pnpseg.method.segmenter import Segmenter
from pnpseg.sources.class_sources import build_class_source
from pnpseg.sources.llm import MAX_BODY, LLMClient, LLMError, parse_class_list
from pnpseg.testing import COLOURS, SyntheticAdapter, make_scene

pytest.importorskip("openai")

VOCAB = list(COLOURS)


class Stub:
    """``handler(request_handler)`` answers each POST; at most ``limit`` requests, ``deadline_s`` seconds."""

    def __init__(self, handler: Callable[[http.server.BaseHTTPRequestHandler], None], limit: int = 2, deadline_s=20.0):
        self.requests: list[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization")})
                try:
                    handler(self)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.timeout = 0.2
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        self.stop_at, self.limit = time.monotonic() + deadline_s, limit
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while len(self.requests) < self.limit and time.monotonic() < self.stop_at:
            self.server.handle_request()
        self.server.server_close()

    def close(self):
        self.stop_at = 0
        self.thread.join(timeout=5)


def reply(body: bytes, status: int = 200, headers: dict | None = None, length: int | None = None):
    def handler(h):
        h.send_response(status)
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body) if length is None else length))
        h.end_headers()
        h.wfile.write(body)

    return handler


def chat(content) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()


@pytest.fixture
def image():
    return make_scene(64, 64, ["red", "blue"], seed=0)[0]


def test_no_redirect_is_followed_and_the_key_stays_home(image, monkeypatch):
    other = Stub(reply(chat('["red"]')))
    first = Stub(reply(b"", 302, {"Location": other.url + "/chat/completions"}))
    monkeypatch.setenv("SECRET_KEY_VAR", "sk-secret")
    try:
        source = build_class_source(f"llm:url={first.url},model=m,key_env=SECRET_KEY_VAR,timeout=5", VOCAB)
        seg = Segmenter(SyntheticAdapter(), image_size=(64, 64))
        proposal = source(image, None, VOCAB, seg)
    finally:
        first.close(), other.close()
    assert first.requests[0]["auth"] == "Bearer sk-secret"
    assert other.requests == []  # the redirect target never hears from us
    assert proposal.fallback["name"] == "itm" and "HTTP 302" in proposal.fallback["reason"]


@pytest.mark.slow
def test_timeout_is_a_deadline_for_the_whole_answer(image):
    def drip(h):
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", "1000")
        h.end_headers()
        for _ in range(30):
            h.wfile.write(b" ")
            h.wfile.flush()
            time.sleep(0.4)

    server = Stub(drip, limit=1)
    try:
        client = LLMClient(server.url, "m", timeout=1.5)
        started = time.monotonic()
        with pytest.raises(LLMError, match="within 1.5 s"):
            client.ask(image, VOCAB)
        assert time.monotonic() - started < 2.5
    finally:
        server.close()


def test_the_body_is_capped(image):
    server = Stub(reply(chat("x" * (MAX_BODY + 10))), limit=1)
    try:
        with pytest.raises(LLMError, match="exceeds"):
            LLMClient(server.url, "m", timeout=10).ask(image, VOCAB)
    finally:
        server.close()


def test_parsing_is_linear_and_never_raises():
    started = time.monotonic()
    assert parse_class_list("[" * 300_000, VOCAB)[0] == []
    assert parse_class_list("[" * 300_000 + "red" + "]" * 300_000, VOCAB)[0] == ["red"]  # too deep for JSON
    assert parse_class_list("```" * 100_000, VOCAB)[0] == []
    assert time.monotonic() - started < 2.0
    assert parse_class_list(None, VOCAB) == ([], [])


@pytest.mark.parametrize(
    "answer, why",
    [
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),  # RecursionError in json
        (chat({"text": "red"}), "not text"),  # content of the wrong type
        (json.dumps({"choices": "red"}).encode(), "no choices"),  # TypeError on indexing
        (chat('["red"]')[:-5], "broken answer|not JSON"),  # IncompleteRead: shorter than Content-Length
    ],
)
def test_every_malformed_answer_falls_back_to_itm(image, answer, why):
    length = len(answer) + 50 if why.startswith("broken") else None
    server = Stub(reply(answer, length=length), limit=1)
    try:
        source = build_class_source(f"llm:url={server.url},model=m,timeout=5", VOCAB)
        proposal = source(image, None, VOCAB, Segmenter(SyntheticAdapter(), image_size=(64, 64)))
    finally:
        server.close()
    assert proposal.fallback["name"] == "itm"
    assert any(word in proposal.fallback["reason"] for word in why.split("|")), proposal.fallback
    assert proposal.scores is not None and set(proposal.scores) == set(VOCAB)  # itm's answer


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "soon"])
def test_bad_timeouts_are_refused_when_parsed(value):
    with pytest.raises(PnpsegError, match="timeout has a bad value"):
        build_class_source(f"llm:url=https://example.invalid/v1,model=m,timeout={value}", VOCAB)


def test_plain_http_to_another_host_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="pnpseg.sources.class_sources"):
        build_class_source("llm:url=https://example.invalid/v1,model=m", VOCAB)
        build_class_source("llm:url=http://127.0.0.1:9/v1,model=m", VOCAB)
        build_class_source("llm:url=http://localhost:9/v1,model=m", VOCAB)
        assert not caplog.records
        build_class_source("llm:url=http://example.invalid/v1,model=m", VOCAB)
    assert "unencrypted" in caplog.records[0].getMessage()


# -- issue 21: secrets, time and memory bounded ---------------------------------------------------
def segment_llm(folder, out, spec: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``pnpseg segment`` with the llm source in a fresh interpreter (its exit is what is tested)."""
    command = [sys.executable, "-m", "pnpseg.cli", "segment", str(folder), "--adapter", "synthetic"]
    command += ["--classes", ",".join(VOCAB[:3]), "--class-source", spec, "--out", str(out)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def folder(tmp_path, image):
    (tmp_path / "in").mkdir()
    image.save(tmp_path / "in" / "a.png")
    return tmp_path / "in"


def test_credentials_in_the_url_are_redacted_everywhere(folder, tmp_path, caplog):
    """Issue 21.17: ``url=http://user:secret@host`` reached the manifest and the log."""
    from typer.testing import CliRunner

    from pnpseg.cli import app

    server = Stub(reply(b"{}", 500), limit=1, deadline_s=60)
    host = server.url.removeprefix("http://")
    spec = f"llm:url=http://user:s3cr3t@{host},model=m,timeout=5"
    args = ["segment", str(folder), "--adapter", "synthetic", "--classes", "red,green", "--class-source", spec]
    try:
        with caplog.at_level(logging.INFO, logger="pnpseg"):
            result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out"), "--json"])
    finally:
        server.close()
    assert result.exit_code == 0, result.output
    written = "".join(p.read_text() for p in (tmp_path / "out").glob("*.json*"))
    assert "HTTP 500" in written  # the fallback's reason is there, naming the endpoint...
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for text in (written, result.output, logged):
        assert "s3cr3t" not in text  # ...but never the password
    assert "user:***@" in written and "user:***@" in logged


def test_an_endless_drip_does_not_keep_the_command_alive(folder, tmp_path):
    """Issue 21.18: the image fell back at the deadline, but the process could not exit
    until the server stopped (forever, for an endless drip)."""

    def drip(h):
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", "100000000")
        h.end_headers()
        while True:
            h.wfile.write(b" ")
            h.wfile.flush()
            time.sleep(0.2)

    server = Stub(drip, limit=1, deadline_s=150)
    try:
        started = time.monotonic()
        result = segment_llm(folder, tmp_path / "out", f"llm:url={server.url},model=m,timeout=2", timeout=90)
        assert result.returncode == 0, result.stderr
        assert time.monotonic() - started < 45  # start-up and the model, not the server, decide
    finally:
        server.close()
    record = json.loads((tmp_path / "out" / "manifest.jsonl").read_text().splitlines()[0])
    assert (
        record["class_source"]["fallback"]["name"] == "itm"
        and "within 2 s" in record["class_source"]["fallback"]["reason"]
    )


def test_parsing_many_unknown_names_is_linear_and_their_record_is_bounded(image):
    """Issue 21.19: 40 000 names outside the vocabulary took 149 s and ~200 KB per record."""
    names = [f"thing{i}" for i in range(40_000)]
    started = time.monotonic()
    classes, unknown = parse_class_list(json.dumps(["red", *names]), VOCAB)
    assert time.monotonic() - started < 2.0
    assert classes == ["red"] and len(unknown) == 40_000
    server = Stub(reply(chat(json.dumps(["red", *names]))), limit=1)
    try:
        source = build_class_source(f"llm:url={server.url},model=m,timeout=10", VOCAB)
        proposal = source(image, None, VOCAB, Segmenter(SyntheticAdapter(), image_size=(64, 64)))
    finally:
        server.close()
    assert proposal.classes == ["red"]
    note = " ".join(proposal.notes)
    assert len(json.dumps(proposal.record())) < 2000 and "40000" in note and "thing0" in note
