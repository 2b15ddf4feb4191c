"""bf16 against fp32 where the answer is known: the synthetic model's scenes.

    python benchmarks/bf16_agreement.py --scenes 24

Random weights make maps near-ties, so agreement measured on them says little. The
synthetic VLM has one planted head whose maps are clear, and its scenes come with the true
labels, so here the question "does bf16 change the answer?" has a meaning. For each scene
this segments at fp32 and under ``--precision bf16`` (autocast for the model passes) and
prints the share of equal label pixels, the mIoU of each against the truth, and the time of
the model passes, all measured in this one run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pnpseg.method.segmenter import Segmenter
from pnpseg.testing import COLOURS, make_scene, miou


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=24)
    parser.add_argument("--size", type=int, default=448, help="model input side (the synthetic patch is 16 px)")
    args = parser.parse_args(argv)
    names = list(COLOURS)[:6]
    segmenters = {
        precision: Segmenter.from_pretrained(
            "synthetic", device="cpu", precision=precision, image_size=args.size, postprocess="blur,crf"
        )
        for precision in ("fp32", "bf16")
    }
    agree, scores, seconds = [], {"fp32": [], "bf16": []}, {"fp32": 0.0, "bf16": 0.0}
    for seed in range(args.scenes):
        chosen = [names[(seed + i) % len(names)] for i in range(3)]
        image, truth = make_scene(300, 400, chosen, seed=seed)
        labels = {}
        for precision, segmenter in segmenters.items():
            start = time.perf_counter()
            saliency = segmenter.saliency([image], [chosen])[0]
            seconds[precision] += time.perf_counter() - start
            labels[precision] = segmenter.finish(image, saliency, chosen).labels
            scores[precision].append(miou(labels[precision], truth, len(chosen) + 1))
        agree.append(float((labels["fp32"] == labels["bf16"]).mean()))
    print(f"scenes: {args.scenes}, model input {args.size}px, classes per scene: 3 of {len(names)}")
    print(f"label pixels equal, bf16 vs fp32: mean {np.mean(agree):.4%}, worst scene {min(agree):.4%}")
    for precision in ("fp32", "bf16"):
        print(f"mIoU vs truth, {precision}: {np.mean(scores[precision]):.4f}")
    print(f"RATIO model passes fp32/bf16 (synthetic model): {seconds['fp32'] / seconds['bf16']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
