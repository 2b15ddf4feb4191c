"""The resumable state of an evaluation: one record per scored image, keyed on content.

A record holds the image's confusion matrix (stored sparse) and a key: a hash of the bytes of
its ground-truth label and of every file its prediction depends on (the prediction PNG and
``classes.json``, or the image for a model). A record is reused only when the key still
matches, so regenerated predictions or edited labels are scored again, never read stale.
The whole state also carries the run's settings, which must match to resume at all.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from pnpseg.errors import PnpsegError
from pnpseg.io.jsontext import parse_json

STATE = "eval_state.npz"
FORMAT = 2  # 1: one summed matrix and the ids done, without keys (not resumable now)


def content_key(paths: Iterable[Path]) -> str:
    """sha256 over the bytes of ``paths``, in order (each length-prefixed)."""
    digest = hashlib.sha256()
    for path in paths:
        data = Path(path).read_bytes()
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


class EvalState:
    """Records by sample id: ``(key, confusion matrix)``; saved as ``STATE`` in the output folder."""

    def __init__(self, shape: tuple[int, int], settings: dict[str, Any]) -> None:
        self.shape, self.settings = shape, settings
        self.records: dict[str, tuple[str, np.ndarray]] = {}

    def get(self, sample_id: str, key: str) -> np.ndarray | None:
        """The saved matrix of ``sample_id`` if it was made from the same content, else None."""
        record = self.records.get(sample_id)
        return record[1] if record is not None and record[0] == key else None

    def put(self, sample_id: str, key: str, confusion: np.ndarray) -> None:
        self.records[sample_id] = (key, confusion.astype(np.int64))

    def load(self, folder: Path) -> None:
        """Read the saved records; raise if they belong to other settings or cannot be read."""
        path = Path(folder) / STATE
        if not path.exists():
            return
        try:
            with np.load(path, allow_pickle=False) as data:
                if "format" not in data or int(data["format"]) != FORMAT:
                    raise ValueError("written by an older pnpseg")
                previous = parse_json(str(data["settings"]))
                ids, keys = [str(x) for x in data["ids"]], [str(x) for x in data["keys"]]
                offsets, index, counts = data["offsets"], data["index"], data["counts"]
                shape = tuple(int(x) for x in data["shape"])
        except Exception as error:  # noqa: BLE001
            raise PnpsegError(f"cannot read the saved evaluation state {path}: {error}; use --overwrite") from None
        if previous != self.settings or shape != self.shape:
            raise PnpsegError(
                f"{folder} holds an evaluation with other settings ({path}); use --overwrite or another --out"
            )
        size = self.shape[0] * self.shape[1]
        for i, (sample_id, key) in enumerate(zip(ids, keys)):
            flat = np.zeros(size, np.int64)
            flat[index[offsets[i] : offsets[i + 1]]] = counts[offsets[i] : offsets[i + 1]]
            self.records[sample_id] = (key, flat.reshape(self.shape))

    def to_bytes(self) -> bytes:
        """The ``.npz`` of the records, for the output folder to write."""
        ids = list(self.records)
        sparse = [np.flatnonzero(self.records[i][1]) for i in ids]
        offsets = np.cumsum([0, *(len(s) for s in sparse)]).astype(np.int64)
        index = np.concatenate(sparse) if sparse else np.zeros(0, np.int64)
        counts = (
            np.concatenate([self.records[i][1].ravel()[s] for i, s in zip(ids, sparse)])
            if sparse
            else np.zeros(0, np.int64)
        )
        buffer = io.BytesIO()
        np.savez(
            buffer,
            format=FORMAT,
            settings=json.dumps(self.settings),
            shape=np.array(self.shape, np.int64),
            ids=np.array(ids, dtype=str),
            keys=np.array([self.records[i][0] for i in ids], dtype=str),
            offsets=offsets,
            index=index.astype(np.int64),
            counts=counts.astype(np.int64),
        )
        return buffer.getvalue()
