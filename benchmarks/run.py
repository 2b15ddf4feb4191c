"""Speed and memory of pnpseg against the authors' way of computing, on the same model.

    python benchmarks/run.py --images 2 --sizes 336,768
    python benchmarks/run.py --images 1 --content photos,scenes,noise --workers 0,1

Builds a full-size, randomly initialised BLIP ITM large (the numbers of
Salesforce/blip-itm-large-flickr's config; nothing is downloaded), saves it to a temp folder
and loads it through the real ``blip`` adapter (bench_models.py). Then, in this one
process, on the same model, images and classes (the 20 VOC names), interleaved image by
image:

* ours        — ``SegmentJob`` (the ``pnpseg segment`` loop: prefetch, model passes,
                blur+CRF in ``--workers`` processes, PNG output), with per-stage timers on;
                with ``--workers 0,1`` also "ours workers 1" (the CRF overlapped);
* baseline    — the authors' compute pattern, reproduced on our model (bench_baseline.py);
* floor       — R × (one forward + the gradient w.r.t. the chosen layer's attention) and one
                dense CRF per image, with fused attention wherever nothing is captured;
* floor eager — the same with eager attention everywhere (the floor before fusion);
* bf16, bf16-vision — ours at those precisions: share of label pixels equal to fp32.

``--tiny`` runs the same on a tiny model in seconds (the test suite does, so the harness
cannot rot). Results are printed as tables (bench_measure.py) and, with ``--json PATH``,
written as JSON. See docs/performance.md for the measured numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from bench_baseline import run_baseline
from bench_measure import MODEL_STAGES, agreement, agreement_text, cpu_name, loadavg, run_floor, run_ours, stage_table
from bench_models import CONTENTS, VOC, build_blip, build_bridgetower, choices, counts, make_images

from pnpseg.method.params import SegmentParams
from pnpseg.plugins import lookup

#: The precisions ours also runs at (``--bf16``), each against fp32.
LOWER_PRECISIONS = ("bf16", "bf16-vision")


def loaded(adapter_name: str, model_dir: Path) -> Any:
    """The adapter with its weights loaded: loading is not part of the per-image cost, and
    one load serves every content type and size."""
    adapter = lookup("adapters", adapter_name)(model=str(model_dir), device="cpu")
    _ = adapter.model
    return adapter


def bench_size(
    name: str,
    adapter: Any,
    model_dir: Path,
    adapter_name: str,
    images: list[Path],
    work: Path,
    size: int,
    args: argparse.Namespace,
    baseline: bool,
    content: str = "scenes",
) -> dict[str, Any]:
    """All methods on the same adapter object, interleaved image by image (the order rotates),
    so that load from other processes on a shared machine hits every column alike."""
    params = dict(image_size=size, drop_rounds=args.rounds, postprocess=args.postprocess)  # layer/head: the adapter's
    n = len(images)
    serial, *overlapped = args.workers
    tag = f"{name} {size}px"
    print(
        f"\n## {tag}, {content}: {n} image(s), K = {len(VOC)}, R = {args.rounds}, {args.postprocess}, workers {serial}",
        flush=True,
    )
    seg_params = SegmentParams.build(adapter.default_params, params)
    methods: dict[str, Callable[[list[Path], Path], dict[str, Any]]] = {
        "ours": lambda imgs, out: run_ours(adapter, adapter_name, model_dir, imgs, out, params, serial),
    }
    if baseline:
        methods["baseline"] = lambda imgs, out: run_baseline(adapter, imgs, out, seg_params)
    methods["floor"] = lambda imgs, out: run_floor(adapter, imgs, seg_params)
    methods["floor eager"] = lambda imgs, out: run_floor(adapter, imgs, seg_params, fused=False)
    if args.bf16:
        for precision in LOWER_PRECISIONS:
            methods[f"ours {precision}"] = lambda imgs, out, precision=precision: run_ours(
                adapter, adapter_name, model_dir, imgs, out, params, serial, precision
            )
    rows = interleave(methods, images, work / f"{adapter_name}-{size}-{content}")
    together = _own_folder(images, work / f"{adapter_name}-{size}-{content}" / "all") if overlapped else []
    extra = {}
    for workers in overlapped:  # one job over all images: the CRF of one overlaps the next one's model passes
        result = run_ours(adapter, adapter_name, model_dir, together, work / f"out-workers-{workers}", params, workers)
        result["per_image"] = [result["seconds"] / n]
        extra[f"ours workers {workers}"] = result
    rows = {"ours": rows["ours"], **extra, **rows}
    ours, floor, floor_eager = rows["ours"], rows["floor"], rows["floor eager"]
    report: dict[str, Any] = {"model": name, "size": size, "content": content, "images": n}
    for key, row in rows.items():
        report[key] = {
            "s_per_image": row["seconds"] / n,
            "images_per_s": n / row["seconds"],
            "fastest_image_s": min(row["per_image"]),
            "peak_mb": row["peak_mb"],
            "stages": {k: v / n for k, v in row["stages"].items()},
        }
    print("\n| | s/image (mean) | images/s | fastest image s | peak RSS MB |\n|---|---|---|---|---|")
    for key, row in rows.items():
        print(
            f"| {key} | {row['seconds'] / n:.3f} | {n / row['seconds']:.3f} | {min(row['per_image']):.3f} "
            f"| {row['peak_mb']:.0f} |"
        )
    print()
    print(stage_table(rows, n))
    print()
    if "baseline" in rows:
        compare(report, tag, "baseline", rows["baseline"], ours)
    ours_model = sum(ours["stages"].get(s, 0.0) for s in MODEL_STAGES)
    floor_model = floor["seconds"] - floor["stages"].get("crf", 0.0)
    report["ours_over_floor"] = ours["seconds"] / floor["seconds"]
    report["ours_model_over_floor"] = ours_model / floor_model
    print(f"RATIO {tag} ours/floor (whole pipeline; the floor includes the CRF): {report['ours_over_floor']:.2f}")
    print(f"RATIO {tag} ours/floor (model stages only): {report['ours_model_over_floor']:.2f}")
    report["ours_over_floor_fastest"] = min(ours["per_image"]) / min(floor["per_image"])
    print(f"RATIO {tag} ours/floor (fastest image of each): {report['ours_over_floor_fastest']:.2f}")
    report["floor_eager_over_fused"] = floor_eager["seconds"] / floor["seconds"]
    print(f"RATIO {tag} floor eager/fused (what fused attention saves): {report['floor_eager_over_fused']:.2f}x")
    report["ours_over_floor_eager"] = ours["seconds"] / floor_eager["seconds"]
    print(f"RATIO {tag} ours/floor eager (whole pipeline): {report['ours_over_floor_eager']:.2f}")
    for key, row in rows.items():
        share = row["stages"].get("crf", 0.0) / row["seconds"]
        report[key]["crf_share"] = share
        print(
            f"SHARE {tag} {content} {key}: crf {row['stages'].get('crf', 0.0) / n:.3f} s/image, {100 * share:.1f}% of wall"
        )
    for workers in overlapped:
        key = f"ours workers {workers}"
        report[f"{key}_agreement"] = agreement(ours["labels"], rows[key]["labels"])
        print(
            f"RATIO {tag} ours workers {serial}/workers {workers} (the CRF overlapped): {ours['seconds'] / rows[key]['seconds']:.2f}x"
        )
        print(
            f"CHECK {tag} workers {workers} vs workers {serial} label agreement: {100 * report[f'{key}_agreement']:.2f}%"
        )
    if args.bf16:
        for precision in LOWER_PRECISIONS:
            report[f"{precision}_agreement"] = agreement(ours["labels"], rows[f"ours {precision}"]["labels"])
            speedup = ours["seconds"] / rows[f"ours {precision}"]["seconds"]
            print(f"RATIO {tag} ours fp32/{precision}: {speedup:.2f}x")
            if "baseline" in rows:
                base = rows["baseline"]["seconds"]
                print(f"RATIO {tag} baseline/ours {precision}: {base / rows[f'ours {precision}']['seconds']:.2f}x")
            print(f"CHECK {tag} {precision} vs fp32 label agreement: {100 * report[f'{precision}_agreement']:.2f}%")
    return report


def interleave(
    methods: dict[str, Callable[[list[Path], Path], dict[str, Any]]], images: list[Path], work: Path
) -> dict[str, dict[str, Any]]:
    """Run every method on every image, image by image, rotating the order; sum the results."""
    rows: dict[str, dict[str, Any]] = {
        key: {"seconds": 0.0, "stages": {}, "peak_mb": 0.0, "labels": {}, "per_image": []} for key in methods
    }
    order = list(methods)
    for i, path in enumerate(images):
        single = _own_folder([path], work / f"in-{i}")
        for key in order[i % len(order) :] + order[: i % len(order)]:
            result = methods[key](single, work / f"out-{key.replace(' ', '-')}")
            row = rows[key]
            row["seconds"] += result["seconds"]
            row["per_image"].append(result["seconds"])
            row["peak_mb"] = max(row["peak_mb"], result["peak_mb"])
            row["labels"].update(result.get("labels", {}))
            for stage_name, value in result["stages"].items():
                row["stages"][stage_name] = row["stages"].get(stage_name, 0.0) + value
            print(f"  image {i + 1}/{len(images)} {key}: {result['seconds']:.1f} s", flush=True)
    return rows


def compare(report: dict[str, Any], tag: str, key: str, other: dict[str, Any], ours: dict[str, Any]) -> None:
    """Print (and record) ``key``/ours: per image, fastest image, peak memory, label agreement."""
    ratio = other["seconds"] / ours["seconds"]
    fastest = min(other["per_image"]) / min(ours["per_image"])
    report[f"speedup_vs_{key}"], report[f"speedup_vs_{key}_fastest"] = ratio, fastest
    report[f"labels_agree_{key}"] = agreement(ours["labels"], other["labels"])
    print(f"RATIO {tag} {key}/ours (per image): {ratio:.2f}x")
    print(f"RATIO {tag} {key}/ours (fastest image of each, less load noise): {fastest:.2f}x")
    if other["peak_mb"]:
        print(f"RATIO {tag} peak memory ours/{key}: {ours['peak_mb'] / other['peak_mb']:.2f}")
    print(f"CHECK {tag} label maps ours vs {key} agree on {agreement_text(ours['labels'], other['labels'])}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.tiny:
        sizes = [64 if s == sizes[0] else 128 for s in sizes]
    print(
        f"# pnpseg benchmark — {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device cpu"
    )
    print(f"load average at start: {loadavg()}")
    if os.getloadavg()[0] >= (os.cpu_count() or 1):
        print(
            "WARNING: the machine is loaded: torch's threads are oversubscribed, and every method slows, those of "
            "many small operations (the baseline's autograd over all parameters) far more than the rest; the "
            "ratios are not comparable with a quiet machine's (--threads 1 suffers least)"
        )
    reports = []
    with tempfile.TemporaryDirectory(prefix="pnpseg-bench-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        model_dir = build_blip(work / "blip", args.tiny)
        print(
            f"built {'tiny' if args.tiny else 'BLIP ITM large'} (random weights) in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        blip = loaded("blip", model_dir)
        for content in args.content:
            images = make_images(work / f"images-{content}", max(args.images, args.large_images), content)
            for i, size in enumerate(sizes):
                few = images[: args.images] if i == 0 else images[: args.large_images]
                with _args_override(args, bf16=args.bf16 and i == 0):
                    name = "BLIP-L" if not args.tiny else "tiny-BLIP"
                    baseline = not (i and args.no_baseline_large)
                    reports.append(bench_size(name, blip, model_dir, "blip", few, work, size, args, baseline, content))
            print(f"load average after {content}: {loadavg()}", flush=True)
        reports.extend(_bench_bridgetower(work, args, sizes[0]))
    print(f"\nload average at end: {loadavg()} (other processes on this machine slow every column alike)")
    if args.json:
        args.json.write_text(
            json.dumps({"cpu": cpu_name(), "cores": os.cpu_count(), "results": reports}, indent=2, default=float)
        )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2, help="images at the first size (default 2)")
    parser.add_argument("--large-images", type=int, default=1, help="images at every further size (default 1)")
    parser.add_argument("--sizes", default="336", help="comma-separated input sizes, e.g. 336,768")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--postprocess", default="blur,crf")
    parser.add_argument(
        "--content",
        type=choices(CONTENTS),
        default=["scenes"],
        help=f"comma-separated image content types, each its own tables: {', '.join(CONTENTS)} (default scenes; "
        "photos need scikit-image)",
    )
    parser.add_argument(
        "--workers",
        type=counts,
        default=[0],
        help="CRF worker processes for ours (default 0: on 2 cores the model already uses both); "
        "a list such as 0,1 adds a column per further count, to measure the CRF overlapped",
    )
    parser.add_argument("--no-baseline-large", action="store_true", help="skip the baseline at sizes after the first")
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run ours in bf16 and bf16-vision at the first size and report label agreement",
    )
    parser.add_argument(
        "--bridgetower",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also benchmark BridgeTower (default: if its adapter is installed)",
    )
    parser.add_argument("--tiny", action="store_true", help="tiny random model: checks the harness in seconds")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser


def _bench_bridgetower(work: Path, args: argparse.Namespace, size: int) -> list[dict[str, Any]]:
    """Ours and the floor for BridgeTower large on scenes (no baseline: its reference code is
    BLIP-only); skipped when not asked for or its adapter is not installed."""
    has_bt = _has_adapter("bridgetower")
    want_bt = has_bt if args.bridgetower is None else args.bridgetower
    if not want_bt:
        print("\nBridgeTower: skipped" + ("" if has_bt else " (no `bridgetower` adapter installed)"))
        return []
    if not has_bt:
        print("\nBridgeTower: no `bridgetower` adapter installed; skipped")
        return []
    try:
        model_dir = build_bridgetower(work / "bridgetower", args.tiny)
    except Exception as error:  # noqa: BLE001 - report, do not fail the BLIP numbers
        print(f"\nBridgeTower: could not build the model ({type(error).__name__}: {error}); skipped")
        return []
    images = make_images(work / "images-bridgetower", args.images)
    name = "BridgeTower-L" if not args.tiny else "tiny-BridgeTower"
    with _args_override(args, bf16=False):
        adapter = loaded("bridgetower", model_dir)
        return [
            bench_size(name, adapter, model_dir, "bridgetower", images, work, 64 if args.tiny else size, args, False)
        ]


def _own_folder(paths: list[Path], folder: Path) -> list[Path]:
    """Copy a subset of images into a folder of their own (SegmentJob reads folders)."""
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(p, folder / p.name)) for p in paths]


@contextlib.contextmanager
def _args_override(args: argparse.Namespace, **values: Any) -> Iterator[None]:
    old = {k: getattr(args, k) for k in values}
    vars(args).update(values)
    try:
        yield
    finally:
        vars(args).update(old)


def _has_adapter(name: str) -> bool:
    try:
        lookup("adapters", name)
        return True
    except Exception:
        return False


if __name__ == "__main__":
    sys.exit(main())
