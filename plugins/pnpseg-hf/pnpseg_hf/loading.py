"""Where a model comes from, and ``from_pretrained`` calls that fail in one line."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pnpseg
from pnpseg import first_line, hub_quiet, hub_reachable


def looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything path-shaped is meant as a folder."""
    return (
        name.startswith((".", "/", "~"))
        or (os.altsep is not None and os.altsep in name)
        or "\\" in name
        or name.count("/") > 1
    )


def resolve_source(name: str) -> Path | None:
    """The local folder ``name`` refers to, or None for a hub id; errors for bad paths."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise pnpseg.ModelLoadError(f"{name!r} is a file, not a model folder")
    if looks_like_path(name):
        raise pnpseg.ModelLoadError(f"no model folder at {name!r}")
    return None


def load_pretrained(
    loader: Callable[..., Any],
    name: str,
    source: Path | None,
    adapter_name: str,
    *,
    model_description: str = "suitable model",
    require_config: bool = False,
    **kwargs: Any,
) -> Any:
    """Call a ``from_pretrained`` (``loader``) turning failures into one-line :class:`ModelLoadError`.

    ``source`` is :func:`resolve_source`'s answer for ``name``. A folder that ``loader``
    rejects gives ``folder NAME is not a <model_description> (<first line of the error>)``;
    with ``require_config`` a folder without ``config.json`` is refused before the call.
    Hub ids try the local cache first (a cached model needs no network at all), then the
    hub only if its host answers (:func:`pnpseg.hub_reachable`: no 30 s of retries on an offline
    machine), quietly; a hub id that is neither cached nor downloadable gives
    :func:`pnpseg.model_unavailable` for ``adapter_name``. ``kwargs`` go to ``loader``.
    """
    if source is not None:
        if require_config and not (source / "config.json").is_file():
            raise pnpseg.ModelLoadError(f"folder {name!r} has no config.json: not a Hugging Face model folder")
        try:
            return loader(str(source), **kwargs)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise pnpseg.ModelLoadError(f"folder {name!r} is not a {model_description} ({first_line(exc)})") from None
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return loader(name, local_files_only=True, **kwargs)
    except OSError:  # not (completely) in the cache
        pass
    if not hub_reachable():
        raise pnpseg.model_unavailable(name, adapter_name) from None
    try:
        with hub_quiet():
            return loader(name, **kwargs)
    except (OSError, HfHubHTTPError):
        raise pnpseg.model_unavailable(name, adapter_name) from None


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Hide transformers' "Loading weights" bar, load report and tied-weight warnings: the
    CLI has its own output, and a checkpoint that lacks a weight the adapter needs is one
    line of pnpseg's (:attr:`HFAdapter.required_weights`), not 40 lines of transformers'."""
    from transformers.utils import logging as hf_logging

    was_enabled, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if was_enabled:
            hf_logging.enable_progress_bar()
