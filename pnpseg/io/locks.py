"""One run per output folder: an OS lock on a local disk, a conditional write on S3.

A local folder (or a ``file://`` URI) is locked with ``filelock``: the OS releases it when
the run dies. An object store has no OS locks; on S3 (and S3-compatible stores) the lock is
an object created with ``If-None-Match: *``, which the store creates for exactly one of
several writers. The object names its holder (host, process id, run id). A killed run
cannot delete it, so a later run on the *same host* takes it over once that process is gone
(with ``If-Match`` on the object it read, so only one of several resumers wins); a lock of
another host is refused, with the object's name to delete if its run is known dead. Other
``scheme://`` stores are not locked (docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from pnpseg.errors import EnvironmentProblem, MissingDependencyError, PnpsegError
from pnpseg.io.jsontext import parse_json
from pnpseg.io.store import Store

#: S3 error codes of a conditional write that lost (412, or 409 on concurrent conditional writes).
LOST = ("PreconditionFailed", "ConditionalRequestConflict")


def held_elsewhere(location: str, lock_uri: str, holder: str = "") -> PnpsegError:
    return PnpsegError(
        f"another pnpseg run is writing to {location} (it holds {lock_uri}{holder}); "
        "wait for it to finish or use another --out"
    )


@contextmanager
def hold(store: Store, name: str) -> Iterator[None]:
    """Hold the lock ``name`` inside ``store`` for the block, or raise a one-line
    :class:`~pnpseg.errors.PnpsegError` (exit 2) if another run holds it."""
    local = store.local
    if local is None and store.fs.type_name == "local":
        from pathlib import Path

        local = Path(store.root)  # a file:// URI is a local folder: the OS lock works
    if local is not None:
        with _os_lock(str(local / name), store.location, store.uri(name)):
            yield
    elif store.fs.type_name == "s3":
        lock = S3Lock(store, name)
        lock.acquire()
        try:
            yield
        finally:
            lock.release()
    else:  # no conditional writes through this file system: see the module docstring
        yield


@contextmanager
def _os_lock(path: str, location: str, lock_uri: str) -> Iterator[None]:
    from filelock import FileLock, Timeout

    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise held_elsewhere(location, lock_uri) from None
    try:
        yield
    finally:
        lock.release()


def s3_client(fs: Any) -> Any:
    """A boto3 S3 client with the endpoint, region and credentials of the pyarrow S3 file
    system ``fs`` (set by ``AWS_ENDPOINT_URL`` etc. or the URI's ``?endpoint_override=``)."""
    try:
        import boto3
    except ImportError:
        raise MissingDependencyError(
            "an s3:// --out is locked with a conditional write, which needs boto3: pip install 'pnpseg[ray]'"
        ) from None
    options = fs.__reduce__()[1][0]  # pyarrow's own constructor arguments
    endpoint = options.get("endpoint_override") or None
    if endpoint and "://" not in endpoint:
        endpoint = f"{options.get('scheme') or 'https'}://{endpoint}"
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=options.get("region") or None,
        aws_access_key_id=options.get("access_key"),
        aws_secret_access_key=options.get("secret_key"),
        aws_session_token=options.get("session_token"),
    )


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class S3Lock:
    """The lock object ``<prefix>/<name>``, created with ``If-None-Match: *``."""

    def __init__(self, store: Store, name: str):
        self.location, self.uri = store.location, store.uri(name)
        bucket, _, prefix = store.root.partition("/")
        self.bucket, self.key = bucket, f"{prefix.rstrip('/')}/{name}" if prefix else name
        self.client = s3_client(store.fs)
        self.me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "run": uuid.uuid4().hex,
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    def _error(self, error: Exception, doing: str) -> EnvironmentProblem:
        response = getattr(error, "response", None) or {}
        code = response.get("Error", {}).get("Code", "")
        if code in ("NotImplemented", "501"):
            return EnvironmentProblem(
                f"cannot lock {self.location}: the object store does not support conditional writes "
                "(If-None-Match), so two runs could overwrite each other; use a store that does (AWS S3, MinIO, ...)"
            )
        return EnvironmentProblem(f"cannot {doing} {self.uri}: {code or type(error).__name__}: {error}")

    def _read(self) -> tuple[dict[str, Any] | None, str | None]:
        """The holder named by the lock object and its ETag, or (None, None) if there is none."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            found = self.client.get_object(Bucket=self.bucket, Key=self.key)
            body = found["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None, None
            raise self._error(error, "read") from None
        except BotoCoreError as error:
            raise self._error(error, "read") from None
        try:
            holder = parse_json(body)
        except ValueError:
            holder = {}
        return holder if isinstance(holder, dict) else {}, found.get("ETag")

    def _put(self, **condition: str) -> bool:
        """Write the lock object under ``condition``: True if written, False if the condition failed."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=json.dumps(self.me).encode(), **condition)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in LOST:
                return False
            raise self._error(error, "write") from None
        except BotoCoreError as error:
            raise self._error(error, "write") from None
        return True

    def acquire(self) -> None:
        for _ in range(3):  # the holder may release it between our write and our read
            holder, etag = self._read()  # read first: also catches stores that ignore If-None-Match
            if holder is None:
                if self._put(IfNoneMatch="*"):
                    return
                continue
            if self._stale(holder) and etag is not None:
                if self._put(IfMatch=etag):  # only one of several resumers replaces what it read
                    return
                continue
            raise held_elsewhere(self.location, self.uri, self._describe(holder))
        raise held_elsewhere(self.location, self.uri)

    def _stale(self, holder: dict[str, Any]) -> bool:
        """A lock of this host whose process is gone: its run was killed."""
        pid = holder.get("pid")
        return holder.get("host") == self.me["host"] and isinstance(pid, int) and not process_alive(pid)

    def _describe(self, holder: dict[str, Any]) -> str:
        who = f": host {holder.get('host')}, process {holder.get('pid')}, since {holder.get('since')}"
        return f"{who}; if that run is dead, delete that object" if holder.get("host") != self.me["host"] else who

    def release(self) -> None:
        """Delete the lock object if it is still ours."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            holder, _ = self._read()
            if holder is not None and holder.get("run") == self.me["run"]:
                self.client.delete_object(Bucket=self.bucket, Key=self.key)
        except (ClientError, BotoCoreError, EnvironmentProblem):
            pass  # the run's outcome stands; a lock left behind is taken over as a dead run's
