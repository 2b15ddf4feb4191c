"""The dense CRF alone, per content type: its time, and what the label-changing knobs buy.

    python benchmarks/crf.py --images 2 --content photos,scenes,noise --iterations 5,8 --sides 250

Scores are step 4's on random saliency (as random weights give): K = 20 classes on a
24×32 grid, through the pipeline's own step 4 (``finish_image``: threshold, upsample to
500×375 with the background channel, blur, CRF, argmax). The CRF (pydensecrf, the CutLER
settings) runs at its default 10 iterations and at each opt-in alternative: ``--iterations``
(``crf_iterations``) and ``--sides`` (``max_postprocess_side``: blur and CRF at that longest
side, labels upsampled), with the share of label pixels equal to the default's. The content
matters because the bilateral kernel's lattice grows with the number of distinct colours:
noise is the worst case. Channel pruning ("only the channels that can win") is measured
too: the channels that are the argmax of the blurred scores somewhere.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from bench_measure import loadavg
from bench_models import CONTENTS, VOC, choices, counts, make_images
from PIL import Image

from pnpseg.method import profiling
from pnpseg.method.params import SegmentParams
from pnpseg.method.postprocess import build_chain
from pnpseg.method.segmenter import finish_image

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
    parser.add_argument(
        "--sides", type=counts, default=[], help="alternative longest sides for blur and CRF, comma-separated"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the CRF is single-threaded; so is the blur here, for comparable numbers
    variants = {f"{n} it": {"crf_iterations": n} for n in args.iterations}
    variants.update({f"side {n}": {"max_postprocess_side": n} for n in args.sides})
    print(f"load average at start: {loadavg()}")
    print(
        "\n| content | winners / channels | crf s/image (10 it) | "
        + " | ".join(f"{name}: crf s/image, labels equal" for name in variants)
        + " |"
    )
    print("|---|---|---|" + "---|" * len(variants))
    with tempfile.TemporaryDirectory(prefix="pnpseg-crf-") as tmp:
        for content in args.content:
            paths = make_images(Path(tmp) / content, args.images, content)
            rows = [_measure(Image.open(p).convert("RGB"), i, variants) for i, p in enumerate(paths)]
            winners = np.mean([r["winners"] for r in rows])
            cells = [
                f"{np.mean([r[name][0] for r in rows]):.2f}, {100 * np.mean([r[name][1] for r in rows]):.2f}%"
                for name in variants
            ]
            base = np.mean([r["default"][0] for r in rows])
            print(f"| {content} | {winners:.1f} / {CLASSES + 1} | {base:.2f} | " + " | ".join(cells) + " |", flush=True)
    print(f"\nload average at end: {loadavg()}")
    return 0


def _measure(image: Image.Image, seed: int, variants: dict[str, dict]) -> dict:
    """Step 4 on random saliency at the defaults and at each variant: CRF seconds, labels equal."""
    generator = torch.Generator().manual_seed(seed)
    saliency = torch.rand(CLASSES, 24, 32, generator=generator)
    names = VOC[:CLASSES]
    default = SegmentParams()
    blurred: dict[str, torch.Tensor] = {}

    def keep_blurred(spec: str, scores: torch.Tensor) -> None:
        blurred.setdefault(spec, scores)

    result: dict = {}
    reference = None
    for name, update in {"default": {}, **variants}.items():
        params = default.model_copy(update=update)
        profiling.reset()
        profiling.enable(True)
        labels = finish_image(image, saliency, names, params, build_chain(params.postprocess), keep_blurred).labels
        profiling.enable(False)
        reference = labels if reference is None else reference
        result[name] = (profiling.totals()["crf"], float((labels == reference).mean()))
    result["winners"] = len(torch.unique(blurred["blur"].argmax(0)))
    return result


if __name__ == "__main__":
    sys.exit(main())
