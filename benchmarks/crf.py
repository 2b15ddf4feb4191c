"""The dense CRF alone, per content type: its time, and what the label-changing knobs buy.

    python benchmarks/crf.py --images 2 --content photos,scenes,noise

Scores are step 4's on random saliency (as random weights give): K = 20 classes on a
24×32 grid, thresholded, upsampled to 500×375 with the background channel, blurred; then
the CRF (pydensecrf, the CutLER settings) at its default 10 iterations and at each
``--iterations`` alternative, with the share of label pixels equal to the default's. The
content matters because the bilateral kernel's lattice grows with the number of distinct
colours: noise is the worst case. Channel pruning ("only the channels that can win") is
measured too: the channels that are the argmax of the incoming scores somewhere.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_measure import loadavg
from bench_models import CONTENTS, choices, counts, make_images
from PIL import Image

from pnpseg.method.labels import labels_from_scores, scores_from_saliency
from pnpseg.method.params import SegmentParams
from pnpseg.method.postprocess.blur import GaussianBlur
from pnpseg.method.postprocess.crf import DenseCRF

CLASSES = 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2, help="images per content type (default 2)")
    parser.add_argument(
        "--content", type=choices(CONTENTS), default=list(CONTENTS), help="comma-separated: " + ", ".join(CONTENTS)
    )
    parser.add_argument(
        "--iterations", type=counts, default=[5], help="alternative iteration counts, comma-separated (default 5)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the CRF is single-threaded; so is the blur here, for comparable numbers
    alternatives = args.iterations
    print(f"load average at start: {loadavg()}")
    print(
        "\n| content | winners / channels | crf s/image (10 it) | "
        + " | ".join(f"{n} it: s/image, labels equal" for n in alternatives)
        + " |"
    )
    print("|---|---|---|" + "---|" * len(alternatives))
    with tempfile.TemporaryDirectory(prefix="pnpseg-crf-") as tmp:
        for content in args.content:
            paths = make_images(Path(tmp) / content, args.images, content)
            rows = [_measure(np.asarray(Image.open(p).convert("RGB")), i, alternatives) for i, p in enumerate(paths)]
            winners = np.mean([r["winners"] for r in rows])
            cells = [
                f"{np.mean([r[n][0] for r in rows]):.2f}, {100 * np.mean([r[n][1] for r in rows]):.2f}%"
                for n in alternatives
            ]
            base = np.mean([r[10][0] for r in rows])
            print(f"| {content} | {winners:.1f} / {CLASSES + 1} | {base:.2f} | " + " | ".join(cells) + " |", flush=True)
    print(f"\nload average at end: {loadavg()}")
    return 0


def _measure(rgb: np.ndarray, seed: int, alternatives: list[int]) -> dict:
    """Step 4's scores on random saliency, then the CRF at 10 and each alternative count."""
    generator = torch.Generator().manual_seed(seed)
    saliency = torch.rand(CLASSES, 24, 32, generator=generator)
    params = SegmentParams()
    scores = scores_from_saliency(saliency, rgb.shape[:2], params.threshold, True)
    scores = GaussianBlur()(scores, rgb, params)
    result: dict = {"winners": len(torch.unique(scores.argmax(0)))}
    reference = None
    for n in [10, *alternatives]:
        start = time.perf_counter()
        labels = labels_from_scores(DenseCRF()(scores, rgb, params.model_copy(update={"crf_iterations": n})), True)
        seconds = time.perf_counter() - start
        reference = labels if reference is None else reference
        result[n] = (seconds, float((labels == reference).float().mean()))
    return result


if __name__ == "__main__":
    sys.exit(main())
