"""The pure batch step: decode → propose → saliency, then step 4's labels → outputs and record.

Nothing here appends to a manifest: each function returns records, and the engine hands
them to its sink (:class:`~pnpseg.engines.common.folder.OutputFolder`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pnpseg.engines.common.layout import OutputLayout, to_vocabulary
from pnpseg.errors import EnvironmentProblem, ImageError, PnpsegError
from pnpseg.io.folders import stops_the_run, storage_advice
from pnpseg.io.images import InputItem, load_image
from pnpseg.method.profiling import stage
from pnpseg.method.prompts import validate_names
from pnpseg.sources.class_sources import ClassSourceImageError, Proposal, propose

Loaded = tuple[InputItem, Any]  # (item, decoded RGB image or the ImageError to record)


def decode(batch: Sequence[InputItem], load: Callable[[InputItem], Any] | None = None) -> list[Loaded]:
    """Read and decode a batch: an image or an ImageError each (``load`` defaults to the local disk)."""
    loaded: list[Loaded] = []
    with stage("I/O"):
        for item in batch:
            try:
                loaded.append((item, load(item) if load is not None else load_image(item.path)))
            except ImageError as error:
                loaded.append((item, error))
    return loaded


@dataclass
class Unfinished:
    """An image whose model passes are done: step 4 (blur, CRF, argmax) is left."""

    item: InputItem
    image: Any
    saliency: Any  # torch.Tensor (K, grid_h, grid_w)
    names: list[str]  # the image's own classes, in vocabulary order
    class_source: dict[str, Any]  # the manifest's class_source entry
    seconds: float  # model time per image of its batch


class BatchStep:
    """Steps 1–3 for a batch, shared by both engines; returns records and :class:`Unfinished`
    images, in the order the local engine has always recorded them."""

    def __init__(self, segmenter: Any, class_source: Any, layout: OutputLayout):
        self.segmenter, self.class_source, self.layout = segmenter, class_source, layout

    def __call__(self, loaded: Sequence[Loaded]) -> list[dict[str, Any] | Unfinished]:
        started = time.perf_counter()
        outcomes: list[dict[str, Any] | Unfinished] = []
        images = []
        for item, image in loaded:
            if isinstance(image, ImageError):
                outcomes.append(self.failed(item, image.reason))  # the record names the input
            else:
                images.append((item, image))
        proposed = []
        for item, image in images:
            proposal = self._propose(item, image)
            if isinstance(proposal, Proposal):
                proposed.append((item, image, proposal))
            else:
                outcomes.append(proposal)
        return outcomes + self._saliency(proposed, started)

    def _saliency(self, proposed: list[tuple[InputItem, Any, Proposal]], started: float) -> list[Any]:
        """Model passes for the images whose classes are known; a failing batch is retried
        image by image (the class source is not asked again) to isolate the culprit."""
        if not proposed:
            return []
        try:
            saliency = self.segmenter.saliency([image for _, image, _ in proposed], [p.classes for *_, p in proposed])
        except PnpsegError:
            raise  # a setup problem (model, adapter, parameters): the same for every image
        except Exception as error:  # one bad batch must not stop the run
            if len(proposed) > 1:
                return [outcome for one in proposed for outcome in self._saliency([one], time.perf_counter())]
            item, _, proposal = proposed[0]
            return [self.failed(item, f"{type(error).__name__}: {error}", proposal)]
        seconds = (time.perf_counter() - started) / len(proposed)
        return [
            Unfinished(item, image, maps, validate_names(proposal.classes), proposal.record(), seconds)
            for (item, image, proposal), maps in zip(proposed, saliency)
        ]

    def _propose(self, item: InputItem, image: Any) -> Proposal | dict[str, Any]:
        """Which classes to segment in ``image``, or the record of why the class source failed."""
        name = self.class_source.name
        try:
            with stage("class source"):
                return propose(self.class_source, image, item, list(self.layout.classes), self.segmenter)
        except ClassSourceImageError as error:
            return self.failed(item, f"class source {name}: {error}")
        except PnpsegError:
            raise  # a setup problem, the same for every image
        except Exception as error:  # one bad image must not stop the run
            return self.failed(item, f"class source {name}: {type(error).__name__}: {error}")

    def failed(self, item: InputItem, error: str, proposal: Proposal | None = None) -> dict[str, Any]:
        return self.layout.record(
            item, proposal.record() if proposal is not None else {"name": self.class_source.name}, error=error
        )


class DiskFull(EnvironmentProblem):
    """No output can be written any more (a full disk or quota, a folder turned read-only or
    forbidden): every later image would fail the same way, so the run stops. ``record`` is the image that failed, for the sink
    to record before stopping."""

    def __init__(self, message: str, record: dict[str, Any]):
        super().__init__(message)
        self.record = record


def complete(
    layout: OutputLayout, unfinished: Unfinished, labels: Any, seconds: float, error: BaseException | None
) -> dict[str, Any]:
    """Step 4's result for one image (``labels`` in the image's own class indices, or the
    ``error`` it raised) → the written outputs and the record. Raises :class:`DiskFull`
    (carrying the record) when the outputs cannot be written for lack of space."""
    item, source = unfinished.item, unfinished.class_source
    if error is not None:
        if isinstance(error, PnpsegError):
            raise error  # a setup problem, the same for every image
        return layout.record(item, source, error=f"{type(error).__name__}: {error}")
    labels = to_vocabulary(labels, unfinished.names, layout.classes)
    try:
        with stage("I/O"):
            output = layout.write(item, unfinished.image, labels)
    except OSError as failure:
        record = layout.record(item, source, error=f"cannot write output: {failure}")
        if stops_the_run(failure):
            raise DiskFull(
                f"stopped: {failure.strerror} writing {layout.store.uri(layout.label_file(item))}; "
                f"{storage_advice(failure)} and run the same command again to resume",
                record,
            ) from None
        return record
    return layout.record(
        item, source, output=output, image=unfinished.image, labels=labels, seconds=unfinished.seconds + seconds
    )
