"""pnpseg against the PnP-OVSS authors' released code, timed in one run on the same weights and images.

    python benchmarks/released.py --authors PATH/PnP-OVSS --lavis-python PATH/venv-lavis/bin/python \\
        --images 2 --content photos,scenes,noise

Four columns, interleaved image by image (the order rotates), one image at a time:

* released — their ``PnP_OVSS_0514_updated_segmentation.py`` itself, in the LAVIS environment,
             with the flags of their ``Run_seg.sh`` for VOC (``released_lavis.py`` serves it:
             one process, the model loaded once, as ours is);
* ours     — the ``pnpseg segment`` loop (``SegmentJob``) with ``--compat authors``;
* baseline — the authors' compute pattern reproduced on our model (bench_baseline.py);
* floor    — R × (one forward + the gradient) and one dense CRF per image (bench_measure.py).

The weights are shared: ``released_lavis.py build`` makes a random BLIP ITM large from their
``blip_itm_large.yaml`` and saves it as a released checkpoint; ``pnpseg convert blip`` turns
that ``.pth`` into the folder the ``blip`` adapter loads. Every image is prompted with their
20 VOC names (their GPT-4o file is written to list all 20), so the labels of all three must
agree, and the run checks that they do (the floor makes no labels). The CRF's share of
each column's time is printed; ours then runs once more over all the images of a content
with ``--model-workers 2`` (one image's CRF beside another's model passes), the "after" of
the CRF's cost. ``--tiny`` runs the same on a tiny model in about a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_baseline import run_baseline
from bench_measure import agreement, agreement_text, cpu_name, loadavg, run_floor, run_ours, stage_table
from bench_models import BERT_BASE_SPECIALS, BERT_BASE_VOCAB_SIZE, CONTENTS, choices, make_images
from released_lavis import SCRIPT, VOC_AUTHORS
from run import compare, interleave, loaded

from pnpseg.method.params import SegmentParams

HERE = Path(__file__).resolve().parent
#: Ours with ``--model-workers 2``: one job over ``COPIES`` copies of a content's images, after the interleaved columns.
OVERLAPPED = "ours model-workers 2"
COPIES = 4
#: Spelled by word pieces rather than one token each, so that their word-piece merging runs.
PIECED = ("pottedplant", "tvmonitor")


def write_vocab(folder: Path) -> None:
    """bert-base-uncased's specials at their ids, the prompt's words, fillers up to BERT's size."""
    from pnpseg_hf.testing import wordpiece_vocab

    words = [w for w in ["a", "picture", "of", *VOC_AUTHORS] if w not in PIECED]
    vocab = wordpiece_vocab(BERT_BASE_SPECIALS, words)
    tokens = sorted(vocab, key=vocab.get) + [f"[filler{i}]" for i in range(len(vocab), BERT_BASE_VOCAB_SIZE)]
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n")


class Released:
    """``released_lavis.py serve`` in the LAVIS environment: one image id in, one JSON line out."""

    def __init__(self, python: str, authors: Path, work: Path, tiny: bool, threads: int) -> None:
        command = [python, str(HERE / "released_lavis.py"), "serve", "--authors", str(authors), "--work", str(work)]
        command += ["--threads", str(threads)] + (["--tiny"] if tiny else [])
        self.log = open(work / "released.log", "w")  # noqa: SIM115 - open for the server's lifetime
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1
        )
        self._answer()  # {"ready": true}: the model is loaded

    def __call__(self, images: list[Path], out: Path) -> dict[str, Any]:
        (path,) = images
        assert self.process.stdin is not None
        self.process.stdin.write(path.stem + "\n")
        answer = self._answer()
        return {
            "seconds": answer["seconds"],
            "stages": answer["stages"],
            "peak_mb": answer["peak_mb"],
            "labels": {path.name: np.load(answer["labels"])},
        }

    def _answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.log.flush()
            tail = Path(self.log.name).read_text().strip().splitlines()[-15:]
            raise SystemExit("the released code stopped:\n" + "\n".join(tail))
        return json.loads(line)

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(timeout=60)
        self.log.close()


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not (args.authors / f"{SCRIPT}.py").is_file():
        parser.error(f"--authors {args.authors}: no {SCRIPT}.py there; give a clone of letitiabanana/PnP-OVSS")
    if not os.access(args.lavis_python, os.X_OK):
        parser.error(f"--lavis-python {args.lavis_python}: not an executable (the LAVIS environment's bin/python)")
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"# pnpseg vs the released code — {cpu_name()}, {os.cpu_count()} cores, {threads} threads, device cpu")
    print(f"load average at start: {loadavg()}")
    with tempfile.TemporaryDirectory(prefix="pnpseg-released-") as tmp:
        work = Path(tmp)
        size = 64 if args.tiny else 336
        start = time.perf_counter()
        write_vocab(work)
        lavis = [args.lavis_python, str(HERE / "released_lavis.py"), "build", "--authors", str(args.authors)]
        subprocess.run([*lavis, "--work", str(work)] + (["--tiny"] if args.tiny else []), check=True)
        from pnpseg_blip.convert import convert_blip

        model_dir = convert_blip(work / "blip_itm_large.pth", work / "blip-hf", image_size=size)
        print(f"built and converted the shared random weights in {time.perf_counter() - start:.0f} s", flush=True)
        adapter = loaded("blip", model_dir)
        images = _voc_named(work, {c: make_images(work / c, args.images, c) for c in args.content})
        released = Released(args.lavis_python, args.authors, work, args.tiny, threads)
        try:
            reports = [
                _bench(content, adapter, model_dir, released, images[content], work, size, args) for content in images
            ]
        finally:
            released.close()
    print(f"\nload average at end: {loadavg()}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "cores": os.cpu_count(), "results": reports}, indent=2))
    return 0


def _bench(
    content: str,
    adapter: Any,
    model_dir: Path,
    released: Released,
    images: list[Path],
    work: Path,
    size: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    n = len(images)
    params = dict(image_size=size, compat="authors")  # their Run_seg.sh: layer 8, head 9 (0-based), T 0.15, R 4
    seg_params = SegmentParams.build(adapter.default_params, params)
    tag = f"{content} {size}px"
    print(f"\n## {tag}: {n} image(s), K = {len(VOC_AUTHORS)}, R = 4, blur,crf, --compat authors", flush=True)
    methods: dict[str, Callable[[list[Path], Path], dict[str, Any]]] = {
        "released": released,
        "ours": lambda imgs, out: run_ours(adapter, "blip", model_dir, imgs, out, params, 0, classes=VOC_AUTHORS),
        "baseline": lambda imgs, out: run_baseline(adapter, imgs, out, seg_params, VOC_AUTHORS),
        "floor": lambda imgs, out: run_floor(adapter, imgs, seg_params, classes=VOC_AUTHORS),
    }
    rows = interleave(methods, images, work / f"runs-{content}")
    copies = _copies(images, work / f"mw-in-{content}")  # the workers' start is paid once per job
    overlapped = run_ours(
        adapter,
        "blip",
        model_dir,
        list(copies),
        work / f"mw-{content}",
        params,
        0,
        classes=VOC_AUTHORS,
        model_workers=2,
    )
    overlapped["seconds"] /= COPIES  # per n images, as the other rows
    overlapped["stages"] = {k: v / COPIES for k, v in overlapped["stages"].items()}
    overlapped["per_image"] = [overlapped["seconds"] / n]
    serial_labels = {copy.name: rows["ours"]["labels"][original.name] for copy, original in copies.items()}
    rows[OVERLAPPED] = overlapped
    print(
        "\n| | s/image (mean) | fastest image s | peak RSS MB | crf s/image | crf share of wall |\n|---|---|---|---|---|---|"
    )
    report: dict[str, Any] = {"content": content, "size": size, "images": n}
    for key, row in rows.items():
        crf = row["stages"].get("crf", 0.0) / n
        report[key] = {
            "s_per_image": row["seconds"] / n,
            "fastest_image_s": min(row["per_image"]),
            "peak_mb": row["peak_mb"],
            "stages": {k: v / n for k, v in row["stages"].items()},
            "crf_share": crf / (row["seconds"] / n),
        }
        print(
            f"| {key} | {row['seconds'] / n:.3f} | {min(row['per_image']):.3f} | {row['peak_mb']:.0f} "
            f"| {crf:.3f} | {100 * report[key]['crf_share']:.1f}% |"
        )
    print()
    print(stage_table({k: v for k, v in rows.items() if k != OVERLAPPED}, n))
    print()
    for key in ("released", "baseline"):
        compare(report, tag, key, rows[key], rows["ours"])
    report["ours_over_floor"] = rows["ours"]["seconds"] / rows["floor"]["seconds"]
    print(f"RATIO {tag} ours/floor (whole pipeline; the floor includes the CRF): {report['ours_over_floor']:.2f}")
    classes = sorted({int(c) for labels in rows["released"]["labels"].values() for c in np.unique(labels)})
    report["released_label_values"] = classes
    print(f"CHECK {tag} the released code's label maps hold {len(classes)} distinct labels: {classes}")
    report["model_workers_agreement"] = agreement(serial_labels, overlapped["labels"])
    speedup = rows["ours"]["seconds"] / overlapped["seconds"]
    print(f"RATIO {tag} ours/{OVERLAPPED} (one image's CRF beside another's model passes): {speedup:.2f}x")
    print(f"RATIO {tag} released/{OVERLAPPED}: {rows['released']['seconds'] / overlapped['seconds']:.2f}x")
    print(f"CHECK {tag} {OVERLAPPED} vs serial labels agree on {agreement_text(serial_labels, overlapped['labels'])}")
    return report


def _copies(images: list[Path], folder: Path) -> dict[Path, Path]:
    """``COPIES`` copies of each image in ``folder`` (``name-k.jpg``), each mapped to its original."""
    folder.mkdir(parents=True)
    return {Path(shutil.copy(p, folder / f"{p.stem}-{k}{p.suffix}")): p for k in range(COPIES) for p in images}


def _voc_named(work: Path, by_content: dict[str, list[Path]]) -> dict[str, list[Path]]:
    """The images under VOC-style ids (``2001_000000``: their code takes ``int()`` of an id) in
    their ``--home_dir``'s ``JPEGImages``, which ours reads too; ``ids.txt`` lists them."""
    jpegs = work / "home" / "VOCdevkit" / "VOC2012" / "JPEGImages"
    jpegs.mkdir(parents=True)
    named = {
        content: [Path(shutil.copy(p, jpegs / f"{2001 + c}_{i:06d}.jpg")) for i, p in enumerate(paths)]
        for c, (content, paths) in enumerate(by_content.items())
    }
    (work / "ids.txt").write_text("".join(f"{p.stem}\n" for paths in named.values() for p in paths))
    return named


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--authors", type=Path, required=True, help="a clone of letitiabanana/PnP-OVSS")
    parser.add_argument("--lavis-python", required=True, help="the LAVIS environment's python (docs/lavis.md)")
    parser.add_argument("--images", type=int, default=2, help="images per content type (default 2)")
    parser.add_argument(
        "--content", type=choices(CONTENTS), default=["scenes"], help=f"comma-separated: {', '.join(CONTENTS)}"
    )
    parser.add_argument("--tiny", action="store_true", help="a tiny random model at 64 px: checks the harness")
    parser.add_argument("--threads", type=int, default=None, help="torch threads, both sides (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser


if __name__ == "__main__":
    sys.exit(main())
