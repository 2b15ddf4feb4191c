"""A real S3-compatible server on 127.0.0.1 for the tests: moto's standalone server, in a
thread of the test process, on a free loopback port.

pnpseg reaches it exactly as a user reaches a custom endpoint (docs/scale-out.md): through
``AWS_ENDPOINT_URL`` and the usual ``AWS_*`` credentials in the environment, which both
pyarrow's S3 file system (the data) and boto3 (the lock) read. Set them before Ray starts,
so that Ray's workers inherit them.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BUCKET = "pnpseg-test"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def s3_server(home: Path) -> Iterator[Any]:
    """Start the server, point the environment at it and create :data:`BUCKET`; yield a boto3
    client (the tests' own view of the bucket). Stops the server and restores the environment."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "pnpseg-test",
        "AWS_SECRET_ACCESS_KEY": "pnpseg-test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(home / "aws-config"),  # never the user's own profiles
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    saved = {key: os.environ.get(key) for key in env}
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    server.start()
    os.environ.update(env)
    try:
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


def upload(client: Any, folder: Path, prefix: str) -> None:
    """Every file under ``folder`` to ``s3://BUCKET/prefix/<relative path>``."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.put_object(
                Bucket=BUCKET, Key=f"{prefix}/{path.relative_to(folder).as_posix()}", Body=path.read_bytes()
            )


def objects(client: Any, prefix: str) -> dict[str, bytes]:
    """``{relative key: bytes}`` of every object under ``s3://BUCKET/prefix/`` (directory markers left out)."""
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/"):
        for entry in page.get("Contents", []):
            if not entry["Key"].endswith("/"):
                body = client.get_object(Bucket=BUCKET, Key=entry["Key"])["Body"].read()
                found[entry["Key"][len(prefix) + 1 :]] = body
    return found


def keys(client: Any, prefix: str) -> list[str]:
    """The relative keys under ``s3://BUCKET/prefix/``, listed only: safe to poll while a run writes."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/")
    return [e["Key"][len(prefix) + 1 :] for page in pages for e in page.get("Contents", [])]
