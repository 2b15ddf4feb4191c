"""``pnpseg.tune``: annotation-free hyper-parameter search with the CLIP reward (paper §3.4;
docs/method.md §5; docs/tuning.md).

Capture every labelled image once (:mod:`pnpseg.tuning.capture`), score stage 1
(layer, head, threshold) and stage 2 (blur σ) trials on the captures
(:mod:`pnpseg.tuning.stages`), and return a :class:`~pnpseg.tuning.result.TuneResult`.
Nothing is printed; ``progress(stage, done, total)`` is called as work completes, and the
preset and heat-map are written only when ``out`` is given (:mod:`pnpseg.tuning.write`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pnpseg.errors import ClassNameError, PnpsegError
from pnpseg.io.image_classes import ImageClassesError
from pnpseg.io.images import discover
from pnpseg.method.defaults import DEFAULT_ADAPTER
from pnpseg.method.params import SegmentParams
from pnpseg.tuning.capture import Capturer, LabelledImage, read_labels
from pnpseg.tuning.result import MIN_MARGIN, TuneResult, heatmap_grid, reward_margin
from pnpseg.tuning.space import (
    DEFAULT_BLUR_SCALES,
    DEFAULT_THRESHOLDS,
    parse_float_range,
    parse_int_range,
    sample_grid,
    stage1_grid,
)
from pnpseg.tuning.stages import RewardEvaluator, Trial, best_trial, gradcam_masks, make_blur_masks, run_trials
from pnpseg.tuning.write import check_out, write_outputs

#: ``progress(stage, done, total)``; stages: "capture", "stage 1", "stage 2".
Progress = Callable[[str, int, int], None]


class TuningError(PnpsegError):
    """Labels that give the reward nothing to choose by."""


def tune(
    inputs: Sequence[str | Path],
    labels: str | Path,
    *,
    adapter: str = DEFAULT_ADAPTER,
    model: str | None = None,
    scorer: str = "clip",
    scorer_model: str | None = None,
    trials: int = 200,
    seed: int = 0,
    layers: str | None = None,
    heads: str | None = None,
    thresholds: str = DEFAULT_THRESHOLDS,
    blur_scales: str = DEFAULT_BLUR_SCALES,
    image_size: str | None = None,
    device: str = "auto",
    cache: str | Path | None = None,
    out: str | Path | None = None,
    min_margin: float = MIN_MARGIN,
    progress: Progress | None = None,
) -> TuneResult:
    """Search layer, head, threshold (stage 1) and blur σ (stage 2) by the CLIP reward.

    ``labels`` lists the classes present in each image (docs/tuning.md); ``cache`` is a
    folder for the captured maps (``None``: memory only); ``out`` a preset path to write,
    with its heat-map beside it, checked before any work. Raises :class:`PnpsegError` for
    bad input, and :class:`TuningError` when no image lists two or more classes.
    """
    from pnpseg.method.segmenter import Segmenter, resolve_device
    from pnpseg.tuning.scorers import build_scorer

    started = time.perf_counter()
    report = progress or (lambda stage, done, total: None)
    if trials < 1:
        raise PnpsegError(f"trials must be at least 1, got {trials}")
    items, skipped = discover([Path(p) for p in inputs])
    if out is not None:
        check_out(Path(out), [*(item.path for item in items), *(s.path for s in skipped), Path(labels)])
    labelled, unlabelled = read_labels(Path(labels), items)
    if not labelled:
        raise ImageClassesError(f"none of the inputs is listed in {labels}")
    single = sum(len(entry.classes) < 2 for entry in labelled)
    if single == len(labelled):
        raise TuningError(
            f"no image in {labels} lists two or more classes: the reward compares each class with the "
            "others present, so an image with one class never wins and every trial would score 0 "
            "(docs/tuning.md, 'The reward'); list every class present in each image"
        )
    threshold_values = parse_float_range(thresholds, "thresholds")
    blur_values = parse_float_range(blur_scales, "blur scales")
    SegmentParams.build({"image_size": image_size})  # the one set of bounds, checked before the model loads
    for value in threshold_values:
        SegmentParams(threshold=value)
    for value in blur_values:
        SegmentParams(blur_sigma=value)

    dev = resolve_device(device)
    segmenter = Segmenter.from_pretrained(model, adapter=adapter, device=dev, layer=1, head=1, image_size=image_size)
    vlm = segmenter.adapter
    layer_values = parse_int_range(layers or f"1-{vlm.num_layers}", 1, vlm.num_layers, "layers")
    head_values = parse_int_range(heads or f"1-{vlm.num_heads}", 1, vlm.num_heads, "heads")
    for entry in labelled:  # tokenizer-level checks before any pass
        with _naming(entry):
            segmenter.plan(entry.classes)
    score = build_scorer(scorer, model=scorer_model, device=dev)
    evaluator = RewardEvaluator(score)
    capturer = Capturer(segmenter, adapter, model, Path(cache) if cache is not None else None)

    images = []
    report("capture", 0, len(labelled))
    for done, entry in enumerate(labelled, 1):
        with _naming(entry):  # the scorer may refuse a class too
            images.append(capturer.capture(entry, evaluator.black_logits))
        report("capture", done, len(labelled))
    capture_seconds = time.perf_counter() - started

    grid1 = stage1_grid(layer_values, head_values, threshold_values)
    stage1 = [Trial(layer, head, t) for layer, head, t in sample_grid(grid1, trials, seed)]
    run_trials(evaluator, images, stage1, gradcam_masks, _counter(report, "stage 1", len(stage1) * len(images)))
    best1 = best_trial(stage1)
    stage2 = [
        Trial(best1.layer, best1.head, best1.threshold, b)
        for (b,) in sample_grid([(b,) for b in blur_values], trials, seed)
    ]
    blur_masks = make_blur_masks(segmenter.params)
    run_trials(evaluator, images, stage2, blur_masks, _counter(report, "stage 2", len(stage2) * len(images)))
    best2 = best_trial(stage2)

    margin = reward_margin(stage1, best1)
    warnings = []
    if margin["margin"] < min_margin:
        warnings.append(
            f"the best stage-1 reward ({margin['best']}/{margin['possible']}) beats the median trial "
            f"({margin['median']:g}) by {100 * margin['margin']:.1f}% of the possible wins, less than "
            f"{100 * min_margin:g}%: the reward hardly tells the trials apart, so the preset is close to a guess "
            "(more images with two or more classes help; docs/tuning.md)"
        )
    result = TuneResult(
        adapter=adapter,
        model=model,
        params={
            "layer": best2.layer,
            "head": best2.head,
            "threshold": best2.threshold,
            "blur_sigma": best2.blur_sigma,
            "image_size": list(segmenter.input_size),
        },
        input_size=(segmenter.input_size[0], segmenter.input_size[1]),
        stage1=stage1,
        stage2=stage2,
        best_stage1=best1,
        best=best2,
        heatmap=heatmap_grid(stage1, vlm.num_layers, vlm.num_heads),
        space={
            "layers": layer_values,
            "heads": head_values,
            "thresholds": threshold_values,
            "blur_scales": blur_values,
        },
        grid_size=len(grid1),
        images=len(labelled),
        ignored=len(unlabelled),
        single_class=single,
        vlm_passes=capturer.vlm_passes,
        cache_hits=capturer.cache_hits,
        scored_images=evaluator.images_scored,
        capture_seconds=capture_seconds,
        seconds=time.perf_counter() - started,
        scorer={"name": scorer, "model": scorer_model or getattr(score, "name", None)},
        seed=seed,
        trials=trials,
        device=str(dev),
        margin=margin,
        warnings=warnings,
    )
    if out is not None:
        write_outputs(result, Path(out))
    return result


@contextmanager
def _naming(entry: LabelledImage) -> Iterator[None]:
    """A class-name error, said with the image whose labels hold the name."""
    try:
        yield
    except ClassNameError as error:
        raise ImageClassesError(f"labels for {entry.item.relative.as_posix()!r}: {error}") from None


def _counter(report: Progress, stage: str, total: int) -> Callable[[int], None]:
    """An ``advance(n)`` that reports the running count of ``stage``."""
    report(stage, 0, total)
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        report(stage, done, total)

    return advance
