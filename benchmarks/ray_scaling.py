"""Throughput of ``pnpseg segment --engine ray`` from 1 to N CPU workers, synthetic adapter.

    python benchmarks/ray_scaling.py --images 64 --size 224 --workers 1,2

Writes ``--images`` synthetic scenes (``size``×``size``), starts one local Ray instance with
all the machine's CPUs (or ``--cpus``), runs the local engine once for reference and then the
Ray engine for each worker count into a fresh output folder, and prints a Markdown table:
images/s over the whole run (Ray start-up excluded; job set-up, actor start-up and model
loading included). Every run's label PNGs are checked to be
byte-identical to the local engine's. See docs/scale-out.md for measured numbers.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console

from pnpseg.engines.common import JobSpec
from pnpseg.engines.local import SegmentJob
from pnpseg.testing import make_scene

COLOURS = ["red", "green", "blue", "yellow"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    parser.add_argument("--drop-rounds", type=int, default=4)
    args = parser.parse_args()

    import ray

    from pnpseg.engines.ray import RaySegmentJob

    quiet = Console(file=io.StringIO())
    params = {"image_size": str(args.size), "drop_rounds": args.drop_rounds}
    with tempfile.TemporaryDirectory(prefix="pnpseg-bench-") as tmp:
        root = Path(tmp) / "images"
        root.mkdir()
        seed = 0
        for i in range(args.images):
            while True:
                seed += 1
                try:
                    make_scene(args.size, args.size, COLOURS, seed=seed)[0].save(root / f"{i:05d}.png")
                    break
                except ValueError:  # the colours did not fit with this seed
                    continue

        start = time.perf_counter()
        spec = JobSpec(COLOURS, "synthetic", device="cpu", params=params)
        SegmentJob(spec, [root], Path(tmp) / "local", console=quiet).run()
        rows = [("local engine (reference)", "-", args.images / (time.perf_counter() - start))]
        reference = {p.name: p.read_bytes() for p in (Path(tmp) / "local").glob("*.png")}

        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            for workers in [int(w) for w in args.workers.split(",")]:
                out = Path(tmp) / f"ray-{workers}"
                start = time.perf_counter()
                job = RaySegmentJob(spec, [root], out, workers=workers, console=quiet)
                summary = job.run()
                seconds = time.perf_counter() - start
                assert summary.done == args.images, summary
                assert {p.name: p.read_bytes() for p in out.glob("*.png")} == reference, "outputs differ"
                rows.append((f"ray, {workers} worker(s)", f"{job.cpu_shares()[0]:g}", args.images / seconds))
        finally:
            ray.shutdown()

    print(
        f"\n{args.images} images of {args.size}x{args.size}, synthetic adapter, {len(COLOURS)} classes, "
        f"blur+CRF, {os.cpu_count()} CPU cores, Ray CPUs {args.cpus}\n"
    )
    print("| engine | CPUs per model worker | images/s | vs 1 worker |")
    print("|---|---|---|---|")
    base = rows[1][2] if len(rows) > 1 else rows[0][2]
    for name, cpus, rate in rows:
        print(f"| {name} | {cpus} | {rate:.2f} | {rate / base:.2f}× |")


if __name__ == "__main__":
    main()
