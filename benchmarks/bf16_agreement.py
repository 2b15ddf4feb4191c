"""bf16 against fp32 where the answer is known: the synthetic model and a planted tiny BLIP.

    python benchmarks/bf16_agreement.py --scenes 24

Random weights make maps near-ties, so agreement measured on them says little. Here both
models have one planted head whose maps are clear, and the scenes come with the true
labels, so the question "does bf16 change the answer?" has a meaning:

- the synthetic VLM (``pnpseg.testing``): no real layers, only the planted head;
- a tiny real ``BlipForImageTextRetrieval`` (``pnpseg_blip.testing.build_planted_blip``,
  built offline into a temporary folder in seconds and loaded by path through the ``blip``
  adapter): a 4-layer ViT and a 3-layer BERT whose one cross-attention head finds colours.

For each model and scene this segments at fp32 and at every other precision the model
supports (``bf16``: autocast for all model passes; ``bf16-vision``: the vision tower alone)
and prints the share of label pixels equal to fp32 (mean and worst scene), the mIoU of
each against the truth, and the time of the model passes, all measured in this one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pnpseg.errors import PnpsegError
from pnpseg.method.precision import PRECISIONS, check_precision
from pnpseg.method.segmenter import Segmenter
from pnpseg.testing import COLOURS, make_scene, miou

#: The precisions compared with fp32 (each where the model supports it on the CPU).
CANDIDATES = ("bf16", "bf16-vision")


@dataclass
class Tally:
    """One precision's results over the scenes."""

    agree: list[float] = field(default_factory=list)
    miou: list[float] = field(default_factory=list)
    seconds: float = 0.0


def precisions_for(segmenter: Segmenter) -> list[str]:
    """fp32, then each of :data:`CANDIDATES` this pnpseg has and the model can run."""
    usable = ["fp32"]
    for precision in CANDIDATES:
        try:
            if precision in PRECISIONS:
                usable.append(check_precision(precision, segmenter.adapter))
        except PnpsegError:
            pass
    return usable


def measure(make: dict[str, Segmenter], scenes: int) -> dict[str, Tally]:
    """Segment ``scenes`` scenes (3 of 6 colours each) with every segmenter in ``make``
    (keyed by precision, fp32 first); the model passes are timed after one warm-up."""
    names = list(COLOURS)[:6]
    warm, _ = make_scene(300, 400, names[:3], seed=10_000)
    for segmenter in make.values():
        segmenter.saliency([warm], [names[:3]])  # loads lazy weights; not timed
    tallies = {precision: Tally() for precision in make}
    for seed in range(scenes):
        chosen = [names[(seed + i) % len(names)] for i in range(3)]
        image, truth = make_scene(300, 400, chosen, seed=seed)
        labels = {}
        for precision, segmenter in make.items():
            start = time.perf_counter()
            saliency = segmenter.saliency([image], [chosen])[0]
            tallies[precision].seconds += time.perf_counter() - start
            labels[precision] = segmenter.finish(image, saliency, chosen).labels
            tallies[precision].miou.append(miou(labels[precision], truth, len(chosen) + 1))
            tallies[precision].agree.append(float((labels[precision] == labels["fp32"]).mean()))
    return tallies


def report(title: str, tallies: dict[str, Tally]) -> None:
    fp32 = tallies["fp32"]
    print(f"\n{title}")
    print(
        "| precision | label pixels equal to fp32 (mean, worst scene) | mIoU vs truth | change | model passes fp32 / this |"
    )
    print("|---|---|---|---|---|")
    for precision, tally in tallies.items():
        score = float(np.mean(tally.miou))
        if precision == "fp32":
            print(f"| fp32 | — | {score:.4f} | | |")
            continue
        agree = f"{np.mean(tally.agree):.4%}, {min(tally.agree):.4%}"
        change = score - float(np.mean(fp32.miou))
        print(f"| {precision} | {agree} | {score:.4f} | {change:+.4f} | {fp32.seconds / tally.seconds:.2f}× |")


def segmenters(model: str | None, **params: Any) -> dict[str, Segmenter]:
    """One segmenter per usable precision, all on the one adapter (weights loaded once)."""
    fp32 = Segmenter.from_pretrained(model, device="cpu", postprocess="blur,crf", **params)
    made = {"fp32": fp32}
    for precision in precisions_for(fp32)[1:]:
        made[precision] = Segmenter(fp32.adapter, fp32.params, precision=precision)
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=24)
    parser.add_argument("--size", type=int, default=448, help="model input side (both models' patch is 16 px)")
    args = parser.parse_args(argv)
    print(f"scenes: {args.scenes}, model input {args.size}px, classes per scene: 3 of 6, postprocess blur,crf")
    report("synthetic model", measure(segmenters(None, adapter="synthetic", image_size=args.size), args.scenes))

    from pnpseg_blip.testing import build_planted_blip

    with tempfile.TemporaryDirectory() as folder:
        path, layer, head = build_planted_blip(folder)
        made = segmenters(str(path), adapter="blip", layer=layer, head=head, image_size=args.size)
        report(f"planted tiny BLIP (layer {layer}, head {head})", measure(made, args.scenes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
