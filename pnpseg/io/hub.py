"""Model hubs seen from a machine that may be offline: fail fast, in one line, quietly.

huggingface_hub retries an unreachable host five times with back-off (about 30 s) and logs
every retry. Before going online, the loaders here check that the hub's host answers at
all (a DNS lookup and a TCP connect with a short timeout), and silence the retry chatter:
the user gets pnpseg's one-line error instead. huggingface_hub is imported only inside the
functions that use it (:func:`cache_only`, :func:`hub_file`), which only their users reach.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from pnpseg.errors import EnvironmentProblem, PnpsegError

DEFAULT_ENDPOINT = "https://huggingface.co"
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def offline() -> bool:
    """True when the user told huggingface_hub to stay offline."""
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def reachable(endpoint: str | None = None, timeout: float = 3.0) -> bool:
    """Whether the hub's host accepts a TCP connection (assumed yes behind a proxy)."""
    if offline():
        return False
    if any(os.environ.get(v) for v in _PROXY_VARIABLES):
        return True  # the proxy, not us, reaches the hub: let the client try
    url = urlparse(endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


class _NotFrom(logging.Filter):
    """Drop records emitted from the source files of the given packages.

    open_clip logs through the root logger (``logging.warning(...)``), so its chatter can
    only be told apart by where it comes from; raising the root level would silence the
    application too.
    """

    def __init__(self, *packages: str):
        super().__init__()
        self.parts = tuple(f"{os.sep}{package}{os.sep}" for package in packages)

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(part in record.pathname for part in self.parts)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence huggingface_hub's and open_clip's retry warnings, and nothing else, for the duration."""
    loggers = [logging.getLogger(name) for name in ("huggingface_hub", "open_clip")]
    levels = [logger.level for logger in loggers]
    root_filter = _NotFrom("open_clip", "huggingface_hub")
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    logging.getLogger().addFilter(root_filter)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(root_filter)
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextlib.contextmanager
def cache_only(enabled: bool = True) -> Iterator[None]:
    """Make huggingface_hub answer from its cache alone (as ``HF_HUB_OFFLINE=1`` would) for the
    duration, for libraries such as open_clip that offer no ``local_files_only`` switch."""
    if not enabled:
        yield
        return
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def hub_file(repo_id: str, filename: str, what: str = "file") -> Path:
    """A file of a hub repository: from the local cache, else downloaded if the hub answers.

    Offline (``HF_HUB_OFFLINE=1``) or unreachable and not cached: one-line
    :class:`EnvironmentProblem` (exit 3). A repository or file the hub does not have, or a
    malformed id: :class:`PnpsegError` (exit 2).
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

    where = f"{what} {filename!r} of {repo_id!r}"
    try:
        return Path(hf_hub_download(repo_id, filename, local_files_only=True))
    except ValueError as error:  # HFValidationError: not a hub id
        raise PnpsegError(f"{where}: {str(error).splitlines()[0]}") from None
    except (OSError, EntryNotFoundError):  # not in the cache
        pass
    if not reachable():
        raise EnvironmentProblem(f"{where} is not in the local cache and the hub cannot be reached (offline?)")
    try:
        with quiet():
            return Path(hf_hub_download(repo_id, filename))
    except (RepositoryNotFoundError, EntryNotFoundError):
        raise PnpsegError(f"{where} does not exist on the hub (or is private)") from None
    except (OSError, HfHubHTTPError) as error:
        raise EnvironmentProblem(f"{where} could not be downloaded: {str(error).splitlines()[0][:160]}") from None


HF_SCHEME = "hf://"


def hf_uri_file(uri: str, what: str = "file") -> Path:
    """``hf://org/repo/path/in/repo.json`` → the local (cached) copy of that file (:func:`hub_file`)."""
    parts = uri[len(HF_SCHEME) :].strip("/").split("/")
    if len(parts) < 3 or not all(parts):
        raise PnpsegError(f"{uri!r}: expected hf://ORG/REPO/PATH/IN/REPO (e.g. hf://org/presets/blip.json)")
    return hub_file("/".join(parts[:2]), "/".join(parts[2:]), what)
