"""The worker side of ``segment --engine ray``: model actors and step-4 tasks.

Both run the shared parts of :mod:`pnpseg.engines.common` (the job spec, the batch step,
the output layout); the driver (:mod:`pnpseg.engines.ray.segment`) is the record sink.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pickle
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pnpseg.engines.common import BatchStep, DiskFull, JobSpec, OutputLayout, Unfinished, complete
from pnpseg.engines.common.folder import PARTS
from pnpseg.engines.ray.storage import load_item
from pnpseg.errors import PnpsegError
from pnpseg.io.images import InputItem, set_max_image_pixels
from pnpseg.io.outputs import manifest_line
from pnpseg.io.ownership import write_owned


def describe(spec: JobSpec) -> tuple[str, Any]:
    """Build the job once, as a worker would: ``("ok", (settings, params))`` or ``("error", message)``."""
    try:
        built = spec.build()
    except PnpsegError as error:
        return "error", str(error)
    return "ok", (built.settings, built.segmenter.params)


class SegmentActor:
    """One Segmenter per actor: decoding, class source and model passes (the shared
    :class:`~pnpseg.engines.common.BatchStep`) for a batch of paths."""

    def __init__(self, spec: JobSpec, layout: OutputLayout, max_image_pixels: int | None = None):
        set_max_image_pixels(max_image_pixels)  # PIL's limit is per process: this actor decodes
        built = spec.build()
        self.step = BatchStep(built.segmenter, built.class_source, layout)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = list(zip(batch["input"].tolist(), batch["root"].tolist(), batch["relative"].tolist()))
        # A URI input keeps its URI as the item's path: that is what its record names.
        loaded = [
            (item, load_item(item, root))
            for item, root in ((InputItem(inp if root else Path(inp), Path(rel)), root) for inp, root, rel in rows)
        ]
        payloads: dict[str, bytes] = {}
        for outcome in self.step(loaded):
            if isinstance(outcome, Unfinished):
                cpu = dataclasses.replace(outcome, saliency=outcome.saliency.detach().float().cpu())
                payloads[str(outcome.item.path)] = pickle.dumps(cpu)
            else:
                payloads[outcome["input"]] = pickle.dumps(outcome)
        return {"idx": batch["idx"], "payload": np.array([payloads[inp] for inp, _, _ in rows], dtype=object)}


@functools.cache
def chain_for(names: Sequence[str]) -> list[Any]:
    """The postprocessor chain, built once per worker process and chain."""
    from pnpseg.method.postprocess import build_chain

    return build_chain(names)


def finish_and_write(batch: dict[str, np.ndarray], layout: OutputLayout, params: Any) -> dict[str, np.ndarray]:
    """CPU task: step 4 (blur, CRF, argmax), the outputs, and the block's records as one part
    file ``OUT/.pnpseg-parts/<block>.jsonl`` that the driver merges if it dies before appending them."""
    import torch

    from pnpseg.method.segmenter import finish_image

    torch.set_num_threads(1)
    chain = chain_for(tuple(params.postprocess))
    records = []
    for payload in batch["payload"].tolist():
        outcome = pickle.loads(payload)
        if not isinstance(outcome, Unfinished):
            records.append(outcome)
            continue
        start, labels, error = time.perf_counter(), None, None
        try:
            labels = finish_image(outcome.image, outcome.saliency, outcome.names, params, chain).labels
        except Exception as caught:  # recorded per image by complete(), which re-raises setup problems
            error = caught
        try:
            records.append(complete(layout, outcome, labels, time.perf_counter() - start, error))
        except DiskFull as stop:  # under Ray a full disk is recorded per image; the run goes on
            records.append(stop.record)
    name = hashlib.sha1("\n".join(r["key"] for r in records).encode()).hexdigest()[:16]
    try:
        write_owned(layout.store, f"{PARTS}/{name}.jsonl", b"".join(manifest_line(r) for r in records))
    except OSError:  # a store refusing writes, a full disk: the records still reach the driver, whose
        pass  # manifest write decides (exit 3 if it fails too); only a dead driver's copy of them is lost
    return {"idx": batch["idx"], "record": np.array([json.dumps(r, ensure_ascii=False) for r in records], dtype=object)}
