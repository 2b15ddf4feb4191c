"""Writing results so that an interrupted run never leaves a half-written file behind.

Every file is written to a hidden temp file next to its destination, fsynced, then renamed
over it (``os.replace`` is atomic on POSIX and Windows). Temp files carry the recognisable
prefix :data:`TEMP_PREFIX`, so a later run can tell this program's leftovers from a user's
files. Progress is recorded in an append-only JSON-lines manifest so a rerun can skip
finished images.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pnpseg.errors import ClassNameError
from pnpseg.io.jsontext import parse_json
from pnpseg.labelmaps import check_labels, label_name

#: Every temp file this program writes starts with this (see :func:`temp_name`).
TEMP_PREFIX = ".pnpseg-tmp-"


def temp_name(name: str) -> str:
    """The hidden temp name for a file called ``name``: ``.pnpseg-tmp-<random>-<name>``.

    It ends with ``name``, so writers that pick a format by suffix (PIL, ``np.save``) still work.
    """
    return f"{TEMP_PREFIX}{secrets.token_hex(4)}-{name}"


_TEMP = re.compile(re.escape(TEMP_PREFIX) + r"[0-9a-f]{8}-(.+)", re.DOTALL)


def is_temp_name(name: str) -> bool:
    """True for a name :func:`temp_name` could have made."""
    return temp_target(name) is not None


def temp_target(name: str) -> str | None:
    """The name of the file a temp file called ``name`` was to become, or None if
    :func:`temp_name` cannot have made ``name`` (``.pnpseg-tmp-x.png`` is not a temp name)."""
    match = _TEMP.fullmatch(name)
    return match.group(1) if match else None


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable; not possible (nor needed) on some platforms."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success fsync it and rename it over ``path``.

    The temp file is :func:`temp_name` of ``path``'s name, in the same folder. On any
    exception it is deleted and ``path`` is left as it was. Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temp_name(path.name))
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` all-or-nothing."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def _json_default(obj: Any) -> Any:
    """Let callers pass Paths and numpy scalars/arrays without converting them first."""
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def json_bytes(obj: Any) -> bytes:
    """Pretty UTF-8 JSON and a final newline. NaN/inf raise ValueError (they are not valid JSON)."""
    text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False, default=_json_default)
    return (text + "\n").encode("utf-8")


def write_json(path: Path, obj: Any) -> None:
    """:func:`json_bytes`, atomically."""
    atomic_write_bytes(path, json_bytes(obj))


def palette(num_classes: int = 256) -> list[int]:
    """PASCAL VOC colour map as a flat ``[r, g, b, r, g, b, ...]`` list of ``num_classes`` colours.

    Index 0 is black (background/unlabelled), 1 is (128, 0, 0), 2 is (0, 128, 0), ...; the
    bit-interleaving gives 256 distinct colours, so pass 256 for a full PIL palette.
    """
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")
    flat: list[int] = []
    for i in range(num_classes):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        flat += [r, g, b]
    return flat


_PALETTE = np.array(palette(256), dtype=np.uint8).reshape(256, 3)


def label_colour(value: int) -> tuple[int, int, int]:
    """The colour of label value ``value`` in a label PNG: what the annotation tools show."""
    red, green, blue = (int(c) for c in _PALETTE[value])
    return red, green, blue


def label_colour_hex(value: int) -> str:
    """:func:`label_colour` as ``#rrggbb``."""
    return "#" + bytes(label_colour(value)).hex()


#: Classes a label PNG holds: its values are 8-bit and 0 is background.
MAX_CLASSES = 255


def check_class_count(names: Sequence[str]) -> None:
    """Refuse more classes than a label PNG holds, before any model runs (CLI and demo alike)."""
    if len(names) > MAX_CLASSES:
        raise ClassNameError(f"{len(names)} classes given; label PNGs hold at most {MAX_CLASSES}")


def save_label_png(path: Path, labels: np.ndarray) -> None:
    """Save labels as a palette ('P') PNG: pixel values are the label ids, colours are VOC's.

    Tools read the ids back with ``np.array(Image.open(p))``; viewers show colours.
    """
    atomic_write_bytes(path, encode_label_png(labels))


def encode_label_png(labels: np.ndarray) -> bytes:
    """The bytes :func:`save_label_png` writes (for writers to other file systems)."""
    im = Image.fromarray(check_labels(labels))
    im.putpalette(_PALETTE.ravel().tolist())
    buffer = io.BytesIO()
    im.save(buffer, format="PNG")
    return buffer.getvalue()


def class_table(classes: Sequence[str]) -> dict[str, str]:
    """``classes.json``: label value → name, 0 being background (``segment`` and ``eval``'s
    saved predictions alike)."""
    return {"0": "background", **{str(i + 1): name for i, name in enumerate(classes)}}


def class_fractions(labels: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """Fraction of pixels per label present (label 0 as "background"), rounded to 4 places."""
    lab = check_labels(labels)
    counts = np.bincount(lab.ravel(), minlength=1)
    out: dict[str, float] = {}
    for label in np.flatnonzero(counts):
        name = label_name(int(label), class_names)
        out[name] = out.get(name, 0.0) + counts[label] / lab.size
    return {name: round(float(frac), 4) for name, frac in out.items()}


def record_key(record: Mapping[str, Any]) -> str:
    """What identifies a record's input: its ``"key"`` (the resolved input, see
    :mod:`pnpseg.engines.common.folder`), else its ``"input"``."""
    key = record.get("key")
    return key if isinstance(key, str) else record["input"]


def parse_manifest(data: bytes) -> dict[str, dict]:
    """``manifest.jsonl`` bytes → ``{key: latest record}``; malformed or partial lines are ignored."""
    result: dict[str, dict] = {}
    for line in data.splitlines():
        try:
            rec = parse_json(line)
        except ValueError:  # includes UnicodeDecodeError and a line cut by a crash
            continue
        if isinstance(rec, dict) and isinstance(rec.get("input"), str):
            result[record_key(rec)] = rec
    return result


def manifest_line(record: Mapping[str, Any]) -> bytes:
    """One record as the manifest stores it (UTF-8 JSON, newline-terminated)."""
    line = json.dumps(dict(record), ensure_ascii=False, allow_nan=False, default=_json_default)
    return line.encode("utf-8") + b"\n"


class Manifest:
    """Append-only ``manifest.jsonl``: one JSON record per processed input, latest wins.

    Each record must have an ``"input"`` string key (the CLI's name for the input; an
    optional ``"key"`` identifies it instead, see :func:`record_key`) and should have a
    ``"status"`` (``"ok"`` marks success). Appends are one ``os.write``
    on an ``O_APPEND`` descriptor followed by fsync, so a crash can lose at most the line
    being written; unreadable lines are skipped on reading. Assumes a single writer.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._cache: dict[str, dict] | None = None

    def records(self) -> dict[str, dict]:
        """Re-read the file: ``{key: latest record}``. Malformed or partial lines are ignored."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        result = parse_manifest(data)
        self._cache = dict(result)
        return result

    def append(self, record: Mapping[str, Any]) -> None:
        """Durably append one record (one line)."""
        if not isinstance(record.get("input"), str):
            raise ValueError("manifest record needs a string 'input' key")
        data = manifest_line(record)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            size = os.fstat(fd).st_size
            if size:
                os.lseek(fd, size - 1, os.SEEK_SET)  # reads only; O_APPEND writes go to the end
                if os.read(fd, 1) != b"\n":
                    data = b"\n" + data  # a crash left a partial line: don't glue onto it
            view = memoryview(data)
            try:
                while view:  # one write in practice; loop only if the OS writes short
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:  # a full disk: take back the part written, never leave a cut line
                os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)
        if self._cache is not None:
            self._cache[record_key(record)] = json.loads(data)

    def latest(self, key: str) -> dict | None:
        """The latest record for ``key``: reads the file once, then trusts this object's own appends."""
        records = self._cache if self._cache is not None else self.records()
        return records.get(key)

    def is_done(self, key: str, output_path: Path, require: Mapping[str, Any] | None = None) -> bool:
        """True if the latest record for ``key`` is ``status == "ok"``, its output
        exists, and (optionally) the record has every key/value in ``require`` (e.g. the
        same classes), so a rerun with other settings is not skipped. Reads the file once,
        then trusts this object's own appends.
        """
        rec = self.latest(key)
        if rec is None or rec.get("status") != "ok" or not Path(output_path).exists():
            return False
        wanted = json.loads(json.dumps(dict(require or {}), default=_json_default))
        return all(rec.get(k) == v for k, v in wanted.items())
