"""``pnpseg eval --engine ray``: per-image confusion matrices from actors, summed by the driver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pnpseg.engines.ray.cluster import import_ray, init_ray
from pnpseg.errors import PnpsegError
from pnpseg.evaluation.evaluate import Evaluation, spec_folder
from pnpseg.evaluation.spec import EvalSpec


def describe_eval(spec: EvalSpec) -> tuple[str, Any]:
    """Build the predictor once, as a worker would: ``("ok", settings)`` or ``("error", message)``."""
    try:
        return "ok", spec.build()[1]
    except PnpsegError as error:
        return "error", str(error)


class EvalActor:
    """One predictor (model) per actor; returns each sample's confusion matrix, and writes its
    prediction into ``save_into`` (the driver claimed those files before the run)."""

    def __init__(self, spec: EvalSpec, save_into: str | None):
        from pnpseg.io.store import Store

        self.data, (self.predictor, _) = spec.data, spec.build()
        self.samples = {s.id: s for s in self.data.samples()}
        self.store = Store(save_into) if save_into is not None else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from pnpseg.evaluation.folder import prediction_file
        from pnpseg.evaluation.metrics import confusion_matrix
        from pnpseg.evaluation.report import prediction_png
        from pnpseg.io.ownership import write_owned

        ids, matrices = [], []
        data = self.data
        for sample_id in batch["id"].tolist():
            sample = self.samples[sample_id]
            label = data.load_label(sample)
            pred = self.predictor(sample, label)
            matrices.append(confusion_matrix(label, pred, data.num_classes).astype(np.int64).tobytes())
            if self.store is not None:
                write_owned(self.store, prediction_file(sample), prediction_png(data, pred))
            ids.append(sample_id)
        return {"id": np.array(ids, dtype=object), "confusion": np.array(matrices, dtype=object)}


class RayPredictions:
    """A :class:`~pnpseg.evaluation.evaluate.BulkPredictor`: confusion matrices from Ray actors
    (which write the label PNGs into the output folder ``save_into`` when it is given)."""

    def __init__(self, spec: EvalSpec, save_into: str | None = None, *, workers: int = 1, gpus_per_worker: float = 0.0):
        self.spec, self.save_into = spec, save_into
        self.workers, self.gpus = max(1, int(workers)), gpus_per_worker
        self.inputs = spec.inputs()  # what each sample's prediction depends on (resume keys)

    def confusions(self, todo: list[Any]) -> Iterator[tuple[str, np.ndarray]]:
        if not todo:
            return
        ray = import_ray()
        total = float(ray.cluster_resources().get("CPU", 1.0))
        cpus = 1.0 if total >= self.workers else max(0.1, total / self.workers)
        blocks = max(1, min(len(todo), 4 * self.workers))
        ds = ray.data.from_items([{"id": s.id} for s in todo], override_num_blocks=blocks)
        ds = ds.map_batches(
            EvalActor,
            fn_constructor_kwargs={"spec": self.spec, "save_into": self.save_into},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=self.workers),
            num_cpus=cpus,
            num_gpus=self.gpus or None,
        )
        n = self.spec.data.num_classes
        for row in ds.iter_rows():
            yield str(row["id"]), np.frombuffer(row["confusion"], dtype=np.int64).reshape(n, n + 1)


def ray_evaluate(
    spec: EvalSpec,
    out: str | Path,
    *,
    address: str | None = None,
    workers: int = 1,
    gpus_per_worker: float = 0.0,
    save_predictions: bool = False,
    **options: Any,
) -> Any:
    """``pnpseg eval --engine ray``: per-image confusion matrices from the actors, summed (and
    checkpointed in the local engine's ``eval_state.npz``, so either engine resumes the other)
    by the driver. ``options``: :class:`~pnpseg.evaluation.evaluate.Evaluation`'s keywords.
    ``out`` is checked before Ray starts."""
    folder = spec_folder(spec, out, {**options, "save_predictions": save_predictions})
    ray = init_ray(address)
    task = ray.remote(num_cpus=min(1.0, float(ray.cluster_resources().get("CPU", 1.0))), num_gpus=gpus_per_worker)
    status, settings = ray.get(task(describe_eval).remote(spec))
    if status != "ok":
        raise PnpsegError(settings)
    return Evaluation(
        spec.data,
        RayPredictions(spec, str(out) if save_predictions else None, workers=workers, gpus_per_worker=gpus_per_worker),
        Path(out),
        protocol=spec.protocol,
        settings=settings,
        save_predictions=save_predictions,
        folder=folder,
        **options,
    ).run()
