"""``pnpseg eval --engine ray``: per-image confusion matrices from actors, summed by the driver."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pnpseg.engines.ray.cluster import import_ray, init_ray
from pnpseg.errors import PnpsegError
from pnpseg.evaluation.evaluate import Evaluation
from pnpseg.method.defaults import DEFAULT_ADAPTER


@dataclass
class EvalConfig:
    """How a worker rebuilds the dataset and the predictor of ``pnpseg eval`` (picklable)."""

    data: Any  # the pnpseg.evaluation.datasets.Dataset (shipped as is, so plugin datasets need no plugin on workers)
    out: str
    protocol: str
    predictions: str | None = None
    adapter: str = DEFAULT_ADAPTER
    model: str | None = None
    preset: str | None = None
    device: str = "auto"
    params: dict[str, Any] | None = None
    predictor_options: dict[str, Any] | None = None
    save_predictions: bool = False

    def build(self) -> tuple[Any, Any, dict[str, Any]]:
        """(dataset, predictor, settings) exactly as ``pnpseg eval`` builds them locally."""
        from pnpseg.evaluation.predictors import ModelPredictor, PredictionFolder

        data = self.data
        if self.predictions is not None:
            folder = PredictionFolder(Path(self.predictions), data)
            return data, folder, folder.settings()
        from pnpseg.method.segmenter import Segmenter

        segmenter = Segmenter.from_pretrained(
            self.model, adapter=self.adapter, device=self.device, **(self.params or {})
        )
        predictor = ModelPredictor(segmenter, data, self.protocol, **(self.predictor_options or {}))
        return (
            data,
            predictor,
            {"adapter": self.adapter, "model": self.model, "preset": self.preset, **predictor.settings()},
        )

    def inputs(self) -> Any:
        """What the driver hashes to key each resumed record (the predictor's ``inputs``)."""
        from pnpseg.evaluation.predictors import PredictionFolder, image_inputs

        if self.predictions is not None:
            return PredictionFolder(Path(self.predictions), self.data).inputs
        return image_inputs


def describe_eval(config: EvalConfig) -> tuple[str, Any]:
    try:
        return "ok", config.build()[2]
    except PnpsegError as error:
        return "error", str(error)


class EvalActor:
    """One predictor (model) per actor; returns each sample's confusion matrix."""

    def __init__(self, config: EvalConfig):
        self.data, self.predictor, _ = config.build()
        self.samples = {s.id: s for s in self.data.samples()}
        self.predictions = Path(config.out) / "predictions" if config.save_predictions else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from pnpseg.evaluation.metrics import confusion_matrix
        from pnpseg.evaluation.report import save_prediction

        ids, matrices = [], []
        data = self.data
        for sample_id in batch["id"].tolist():
            sample = self.samples[sample_id]
            label = data.load_label(sample)
            pred = self.predictor(sample, label)
            matrices.append(confusion_matrix(label, pred, data.num_classes).astype(np.int64).tobytes())
            if self.predictions is not None:
                save_prediction(self.predictions, data, sample, pred)
            ids.append(sample_id)
        return {"id": np.array(ids, dtype=object), "confusion": np.array(matrices, dtype=object)}


class RayPredictions:
    """A :class:`~pnpseg.evaluation.evaluate.BulkPredictor`: confusion matrices from Ray actors."""

    def __init__(self, config: EvalConfig, *, workers: int = 1, gpus_per_worker: float = 0.0):
        self.config, self.workers, self.gpus = config, max(1, int(workers)), gpus_per_worker
        self.inputs = config.inputs()  # what each sample's prediction depends on (resume keys)

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
            fn_constructor_kwargs={"config": self.config},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=self.workers),
            num_cpus=cpus,
            num_gpus=self.gpus or None,
        )
        n = self.config.data.num_classes
        for row in ds.iter_rows():
            yield str(row["id"]), np.frombuffer(row["confusion"], dtype=np.int64).reshape(n, n + 1)


def ray_evaluate(
    config: EvalConfig, *, address: str | None = None, workers: int = 1, gpus_per_worker: float = 0.0, **kwargs: Any
) -> Any:
    """``pnpseg eval --engine ray``: per-image confusion matrices from the actors, summed (and
    checkpointed in the local engine's ``eval_state.npz``, so either engine resumes the other)
    by the driver. ``kwargs``: :class:`~pnpseg.evaluation.evaluate.Evaluation`'s options."""
    ray = init_ray(address)
    task = ray.remote(num_cpus=min(1.0, float(ray.cluster_resources().get("CPU", 1.0))), num_gpus=gpus_per_worker)
    status, settings = ray.get(task(describe_eval).remote(config))
    if status != "ok":
        raise PnpsegError(settings)
    return Evaluation(
        config.data,
        RayPredictions(config, workers=workers, gpus_per_worker=gpus_per_worker),
        Path(config.out),
        protocol=config.protocol,
        settings=settings,
        save_predictions=config.save_predictions,
        **kwargs,
    ).run()
