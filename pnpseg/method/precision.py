"""``--precision fp32|bf16|fp16``: autocast around the model passes (steps 1–3 only).

fp32 is exact (no autocast). bf16 works on CPU and CUDA; fp16 only on CUDA (CPU fp16
matmuls are slow or unsupported). Post-processing always runs in fp32. The benchmark
measures how often the label maps agree with fp32 (docs/performance.md).
"""

from __future__ import annotations

import contextlib

import torch

from pnpseg.errors import PnpsegError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device | str) -> str:
    if precision not in PRECISIONS:
        raise PnpsegError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and torch.device(device).type != "cuda":
        raise PnpsegError("--precision fp16 needs a CUDA device; on CPU use bf16 or fp32")
    return precision


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    dtype = PRECISIONS[check_precision(precision, device)]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
