"""``pnpseg.evaluate``: score predictions on a dataset (mIoU, per-class IoU, pixel accuracy).

:class:`Evaluation` is the loop: predict what its saved state does not already hold for the
same content (:mod:`pnpseg.evaluation.state`), sum the confusion matrices, checkpoint, and
write the reports (:mod:`pnpseg.evaluation.report`). Nothing is printed; ``progress(done,
total, miou)`` is called as images are scored. :func:`evaluate` builds an :class:`~pnpseg.evaluation.spec.EvalSpec` from plain arguments,
for notebooks; the spec makes the predictor (:mod:`pnpseg.evaluation.predictors`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pnpseg.errors import PnpsegError
from pnpseg.evaluation.datasets import Dataset, Sample
from pnpseg.evaluation.folder import PREDICTIONS, EvalFolder, checked_folder, prediction_file
from pnpseg.evaluation.metrics import confusion_matrix, scores
from pnpseg.evaluation.predictors import Predictor, image_inputs
from pnpseg.evaluation.protocols import averaging
from pnpseg.evaluation.report import EvalResult, prediction_classes, prediction_png, write_reports
from pnpseg.evaluation.spec import EvalSpec
from pnpseg.evaluation.state import STATE, EvalState, content_key
from pnpseg.io.outputs import json_bytes

#: ``progress(done, total, miou)``: images scored so far of those to do, and the running mIoU.
Progress = Callable[[int, int, float], None]


@runtime_checkable
class BulkPredictor(Protocol):
    """Predicts many samples elsewhere (the Ray engine's workers, which also save the
    predictions when asked to) and returns their confusion matrices, in order."""

    def confusions(self, todo: list[Sample]) -> Iterator[tuple[str, np.ndarray]]: ...

    def inputs(self, sample: Sample) -> list[Path]: ...


class Evaluation:
    """One evaluation run; with ``out``, resumable through ``out/eval_state.npz`` and reported there."""

    def __init__(
        self,
        dataset: Dataset,
        predictor: Predictor | BulkPredictor,
        out: Path | None,
        *,
        protocol: str = "pnp",
        settings: dict[str, Any] | None = None,
        limit: int | None = None,
        save_predictions: bool = False,
        checkpoint_every: int = 20,
        overwrite: bool = False,
        inputs: Callable[[Sample], list[Path]] | None = None,
        progress: Progress | None = None,
        folder: EvalFolder | None = None,
    ):
        self.rule = averaging(protocol)
        if save_predictions and out is None:
            raise PnpsegError("saving predictions needs an output folder")
        self.dataset, self.predictor, self.protocol = dataset, predictor, protocol
        self.out = Path(out) if out is not None else None
        self.save_predictions = save_predictions
        self.checkpoint_every = max(1, checkpoint_every)
        self.overwrite = overwrite
        if inputs is None:
            inputs = getattr(predictor, "inputs", image_inputs)
        self.inputs: Callable[[Sample], list[Path]] = inputs
        self.progress = progress or (lambda done, total, miou: None)
        self.settings = json.loads(
            json.dumps(
                {
                    "dataset": dataset.name,
                    "root": str(Path(dataset.root).resolve()),
                    "protocol": protocol,
                    **(settings or {}),
                },
                default=str,
            )
        )
        self.samples = chosen_samples(dataset, limit)
        #: ``out``'s files, checked now (``folder``: already checked, before a model loaded)
        self.folder = folder
        if self.out is not None and self.folder is None:
            self.folder = checked_folder(self.out, self.samples, save_predictions, self.inputs)

    @classmethod
    def of(cls, spec: EvalSpec, out: str | Path | None, **options: Any) -> Evaluation:
        """The evaluation of ``spec`` in this process (``options``: this class's keywords);
        ``out`` is checked before the model loads."""
        folder = spec_folder(spec, out, options)
        predictor, settings = spec.build()
        out = Path(out) if out is not None else None
        return cls(spec.data, predictor, out, protocol=spec.protocol, settings=settings, folder=folder, **options)

    def key(self, sample: Sample) -> str | None:
        """The content key of a sample's record: its label and its prediction's inputs; None
        when one cannot be read (the sample is then predicted, and fails in its turn)."""
        try:
            return content_key([sample.label, *self.inputs(sample)])
        except (OSError, PnpsegError):
            return None

    def run(self) -> EvalResult:
        n = self.dataset.num_classes
        state = EvalState((n, n + 1), self.settings)
        if self.folder is not None:
            self.folder.claim(overwrite=self.overwrite)
            if not self.overwrite:
                state.load(self.folder.out)
        keys = {sample.id: self.key(sample) for sample in self.samples}
        saved = {s.id: state.get(s.id, key) if (key := keys[s.id]) else None for s in self.samples}
        todo = [s for s in self.samples if saved[s.id] is None]
        reused = len(self.samples) - len(todo)
        by_id = {s.id: s for s in todo}
        cm = sum((m for m in saved.values() if m is not None), np.zeros((n, n + 1), np.int64))
        if self.folder is not None and self.save_predictions:
            self.folder.write(f"{PREDICTIONS}/classes.json", json_bytes(prediction_classes(self.dataset)))
        start = time.perf_counter()
        since_save, done = 0, 0
        self.progress(0, len(todo), scores(cm, self.rule).miou)
        try:
            for sample_id, sample_cm in self.confusions(todo):
                cm += sample_cm
                state.put(sample_id, keys[sample_id] or self.key(by_id[sample_id]) or "", sample_cm)
                since_save, done = since_save + 1, done + 1
                if self.folder is not None and since_save >= self.checkpoint_every:
                    self.folder.write(STATE, state.to_bytes())
                    since_save = 0
                self.progress(done, len(todo), scores(cm, self.rule).miou)
        finally:
            if self.folder is not None and (since_save or not (self.folder.out / STATE).exists()):
                self.folder.write(STATE, state.to_bytes())  # cm and the records are always consistent here
        return self._finish(cm, reused, time.perf_counter() - start)

    def confusions(self, todo: list[Sample]) -> Iterator[tuple[str, np.ndarray]]:
        """(sample id, its confusion matrix) for each sample, in order: from a
        :class:`BulkPredictor` (the Ray engine's workers), else predicted here."""
        if isinstance(self.predictor, BulkPredictor):
            yield from self.predictor.confusions(todo)
            return
        for sample in todo:
            label = self.dataset.load_label(sample)
            pred = self.predictor(sample, label)
            if self.folder is not None and self.save_predictions:
                self.folder.write(prediction_file(sample), prediction_png(self.dataset, pred))
            yield sample.id, confusion_matrix(label, pred, self.dataset.num_classes)

    def _finish(self, cm: np.ndarray, reused: int, seconds: float) -> EvalResult:
        s = scores(cm, self.rule)
        names = self.dataset.class_names
        per_class = {name: (None if not s.evaluated[i] else float(s.iou[i])) for i, name in enumerate(names)}
        result = EvalResult(
            self.dataset.name,
            self.protocol,
            self.rule,
            len(self.samples),
            s.miou,
            s.aacc,
            per_class,
            cm,
            seconds,
            reused=reused,
            out=self.out,
        )
        if self.folder is not None:
            write_reports(self.folder, result, s, names, self.settings)
        return result


def chosen_samples(dataset: Dataset, limit: int | None) -> list[Sample]:
    """The samples an evaluation scores: the dataset's, the first ``limit`` of them if given."""
    samples = dataset.samples()
    return samples if limit is None else samples[: max(0, limit)]


def spec_folder(spec: EvalSpec, out: str | Path | None, options: Mapping[str, Any]) -> EvalFolder | None:
    """``out``'s files for ``spec`` with :class:`Evaluation`'s ``options``, checked before
    any model loads (either engine): None without ``out``."""
    if out is None:
        return None
    samples = chosen_samples(spec.data, options.get("limit"))
    return checked_folder(Path(out), samples, bool(options.get("save_predictions")), spec.inputs())


def evaluate(
    dataset: str | Dataset,
    root: str | Path | None = None,
    *,
    protocol: str = "pnp",
    predictions: str | Path | None = None,
    adapter: str | None = None,
    model: str | None = None,
    preset: str | Path | None = None,
    device: str = "auto",
    params: Mapping[str, Any] | None = None,
    synonyms: bool | None = None,
    pnp_background: str | None = None,
    bg_threshold: float = 0.0,
    slide: tuple[int, int] | str | None = None,
    short_side: int | None = None,
    limit: int | None = None,
    out: str | Path | None = None,
    save_predictions: bool = False,
    checkpoint_every: int = 20,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> EvalResult:
    """Evaluate label PNGs (``predictions``) or a model on ``dataset`` under ``protocol``.

    ``dataset`` is a registered name (with its ``root`` folder) or a
    :class:`~pnpseg.evaluation.datasets.Dataset`. ``params`` are :class:`~pnpseg.SegmentParams`
    fields (``layer``, ``head``, ``threshold``, ...; ``None`` values are ignored); a ``preset``
    fills those not given. With ``out`` the run resumes from and writes its reports into that
    folder; without, nothing is written. Nothing is printed.
    """
    spec = EvalSpec.make(
        dataset,
        root,
        protocol=protocol,
        predictions=predictions,
        adapter=adapter,
        model=model,
        preset=preset,
        params=params,
        device=device,
        synonyms=synonyms,
        pnp_background=pnp_background,
        bg_threshold=bg_threshold,
        slide=slide,
        short_side=short_side,
    )
    return Evaluation.of(
        spec,
        out,
        limit=limit,
        save_predictions=save_predictions,
        checkpoint_every=checkpoint_every,
        overwrite=overwrite,
        progress=progress,
    ).run()
