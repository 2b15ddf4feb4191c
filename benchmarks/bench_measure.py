"""Measurement: timers, peak memory, the runs of ours and the floor, and the printed tables.

Per-stage times come from :mod:`pnpseg.method.profiling`; peak memory is the process's
peak RSS (``VmHWM``, reset before each measurement) or, on a GPU, the allocator's peak.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_models import VOC
from PIL import Image

from pnpseg.engines.common import JobSpec
from pnpseg.engines.local import SegmentJob
from pnpseg.method import profiling
from pnpseg.method.gradcam import capture
from pnpseg.method.params import SegmentParams
from pnpseg.method.postprocess.crf import DenseCRF
from pnpseg.method.prompts import plan_prompts

STAGES = [
    "model passes",  # the released code's forward + backward, timed as one (benchmarks/released.py)
    "vision forward",
    "text forward",
    "multimodal forward",
    "gradient",
    "backward",
    "dropout bookkeeping",
    "resize",
    "blur",
    "crf",
    "I/O",
]
#: The stages that run the model (ours' time beyond them is step 4 and I/O).
MODEL_STAGES = ("vision forward", "text forward", "multimodal forward", "gradient", "dropout bookkeeping")


# -- memory ---------------------------------------------------------------------------------


def rss_mb() -> float:
    return _status_kb("VmRSS") / 1024


def reset_peak() -> None:
    """Reset VmHWM (peak RSS) of this process; Linux ≥ 4.0 (ignored elsewhere)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_mb() -> float:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    return _status_kb("VmHWM") / 1024


def _status_kb(key: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    import resource

    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


# -- timing ---------------------------------------------------------------------------------


@contextlib.contextmanager
def measured() -> Iterator[dict[str, Any]]:
    """Wall time, per-stage totals and peak memory (above nothing: absolute) of a block."""
    result: dict[str, Any] = {}
    profiling.reset()
    profiling.enable(True)
    reset_peak()
    start = time.perf_counter()
    try:
        yield result
    finally:
        result["seconds"] = time.perf_counter() - start
        result["stages"] = profiling.totals()
        result["peak_mb"] = peak_mb()
        profiling.enable(False)


# -- ours and the floor ----------------------------------------------------------------------


def run_ours(
    adapter: Any,
    adapter_name: str,
    model_dir: Path,
    images: list[Path],
    out: Path,
    params: dict,
    workers: int,
    precision: str = "fp32",
    classes: list[str] = VOC,
    model_workers: int = 0,
) -> dict[str, Any]:
    """The ``pnpseg segment`` loop (SegmentJob) on ``images``' folder, on the shared ``adapter``
    (``model_workers`` processes load their own copy of ``model_dir``)."""
    from rich.console import Console

    spec = JobSpec(classes, adapter_name, str(model_dir), "cpu", params, precision)
    quiet = Console(stderr=True, quiet=True)
    job = SegmentJob(
        spec, [images[0].parent], out, workers=workers, model_workers=model_workers, overwrite=True, console=quiet
    )
    job.segmenter.adapter = adapter  # the very model object the baseline and floor use (weights loaded)
    with measured() as result:
        summary = job.run()
    assert summary.done == len(images), f"ours segmented {summary.done} of {len(images)} images"
    result["labels"] = {p.name: np.asarray(Image.open(out / f"{p.stem}.png")) for p in images}
    return result


def run_floor(
    adapter: Any, images: list[Path], params: SegmentParams, fused: bool = True, classes: list[str] = VOC
) -> dict[str, Any]:
    """R × (one forward + the gradient w.r.t. the chosen layer's attention), plus one dense
    CRF per image on scores of the pipeline's shape (its cost depends on the image and the
    channel count, not on the values): the work no implementation of the method avoids.
    ``fused=False`` runs every attention eager."""
    from pnpseg.io.images import load_image
    from pnpseg.method.resize import fit_longest_side
    from pnpseg_hf import eager

    size = tuple(s // adapter.patch_size * adapter.patch_size for s in params.image_size)
    chunks = plan_prompts(classes, adapter.tokenize, adapter.max_text_length)
    text = adapter.tokenize([c.prompt for c in chunks])
    loaded = [load_image(p) for p in images]
    pixels = [adapter.preprocess([image], size) for image in loaded]
    channels = len(classes) + int(params.background_for(len(classes)))
    crf = DenseCRF() if "crf" in params.postprocess else None
    modules = () if fused else list(adapter.model.modules())
    with eager(modules), measured() as result:
        for image, px in zip(loaded, pixels):
            for _ in range(params.drop_rounds):
                capture(adapter, px.expand(len(chunks), -1, -1, -1), text, [params.layer - 1])
            if crf is not None:
                rgb = np.asarray(fit_longest_side(image, params.max_postprocess_side), dtype=np.uint8)
                scores = torch.rand(channels, *rgb.shape[:2], generator=torch.Generator().manual_seed(0))
                with profiling.stage("crf"):
                    crf(scores, rgb, params)
    return result


# -- report ---------------------------------------------------------------------------------


def agreement(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    equal = sum(int((a[k] == b[k]).sum()) for k in a)
    return equal / sum(a[k].size for k in a)


def agreement_text(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> str:
    """``"99.9992% of pixels (3 of 375000 differ)"``: a rounded 100.00% must not hide a pixel."""
    total = sum(a[k].size for k in a)
    differ = total - sum(int((a[k] == b[k]).sum()) for k in a)
    return f"{100 * (total - differ) / total:.4f}% of pixels ({differ} of {total} differ)"


def stage_table(rows: dict[str, dict[str, Any]], n: int) -> str:
    names = [s for s in STAGES if any(s in r["stages"] for r in rows.values())]
    lines = ["| stage (s/image) | " + " | ".join(rows) + " |", "|---|" + "---|" * len(rows)]
    for s in names:
        lines.append(f"| {s} | " + " | ".join(f"{r['stages'].get(s, 0.0) / n:.3f}" for r in rows.values()) + " |")
    lines.append("| **wall** | " + " | ".join(f"**{r['seconds'] / n:.3f}**" for r in rows.values()) + " |")
    return "\n".join(lines)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"
