"""What an evaluation predicts with, built in one place and used by both engines.

:class:`EvalSpec` holds the dataset, the protocol, the method choice (preset already merged
below the explicit choices) and the predictor's options. :meth:`EvalSpec.build` makes the
predictor and the settings the saved state must match, the same way in this process and
on a Ray worker (the spec is picklable).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pnpseg.errors import PnpsegError
from pnpseg.evaluation.datasets import Dataset, Sample, get_dataset
from pnpseg.evaluation.predictors import ModelPredictor, PredictionFolder, Predictor, image_inputs, parse_slide
from pnpseg.evaluation.protocols import averaging


@dataclass
class EvalSpec:
    """A dataset, a protocol and either label PNGs (``predictions``) or a model (``method``)."""

    #: The dataset, shipped as is to Ray workers (so plugin datasets need no plugin there).
    data: Dataset
    protocol: str = "pnp"
    predictions: str | None = None
    method: Any = None  # a pnpseg.io.preset.MethodChoice; None with predictions
    device: str = "auto"
    #: :class:`~pnpseg.evaluation.predictors.ModelPredictor`'s keyword options
    #: (synonyms, pnp_background, bg_threshold, slide, short_side).
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def make(
        cls,
        dataset: str | Dataset,
        root: str | Path | None = None,
        *,
        protocol: str = "pnp",
        predictions: str | Path | None = None,
        method: Any = None,
        adapter: str | None = None,
        model: str | None = None,
        preset: str | Path | None = None,
        params: Mapping[str, Any] | None = None,
        device: str = "auto",
        **options: Any,
    ) -> EvalSpec:
        """Check the protocol and ``slide`` (``"CROP:STRIDE"`` or a pair), find the dataset and
        resolve the preset (unless a ready ``method`` is given): the one place an evaluation's choices are turned into a spec.
        Dataset problems are found before any model loads."""
        from pnpseg.io.preset import choose_method

        averaging(protocol)
        if isinstance(options.get("slide"), str):
            options["slide"] = parse_slide(options["slide"])
        if isinstance(dataset, str):
            if root is None:
                raise PnpsegError(f"dataset {dataset!r} needs its root folder")
            dataset = get_dataset(dataset, Path(root))
        if predictions is not None:
            return cls(dataset, protocol, str(predictions), device=device, options=options)
        if method is None:
            method = choose_method(preset, adapter, model, params or {})
        dataset.samples()  # dataset problems before any model loads
        return cls(dataset, protocol, None, method, device, options)

    def build(self) -> tuple[Predictor, dict[str, Any]]:
        """(predictor, settings), exactly as either engine builds them."""
        if self.predictions is not None:
            folder = PredictionFolder(Path(self.predictions), self.data)
            return folder, folder.settings()
        from pnpseg.method.segmenter import Segmenter

        method = self.method
        segmenter = Segmenter.from_pretrained(method.model, adapter=method.adapter, device=self.device, **method.params)
        predictor = ModelPredictor(segmenter, self.data, self.protocol, **self.options)
        return predictor, {
            "adapter": method.adapter,
            "model": method.model,
            "preset": method.preset,
            **predictor.settings(),
        }

    def inputs(self) -> Callable[[Sample], list[Path]]:
        """What a sample's prediction depends on (its content keys a resumed record)."""
        if self.predictions is not None:
            return PredictionFolder(Path(self.predictions), self.data).inputs
        return image_inputs
