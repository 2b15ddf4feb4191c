"""``--precision``: autocast for the model passes (steps 1–3 only).

* ``fp32`` is exact (no autocast).
* ``bf16`` / ``fp16`` autocast every model pass. bf16 works on CPU and CUDA; fp16 only on
  CUDA (CPU fp16 matmuls are slow or unsupported).
* ``bf16-vision`` / ``fp16-vision`` autocast only the adapter's **vision tower** (the modules
  its optional ``vision_modules()`` names) and hand its outputs back in float32, so the text
  tower, the captured attention and the gradient stay fp32. On a ViT-L tower the vision
  forward is most of the time (docs/performance.md), so this takes most of bf16's speed
  while leaving GradCAM's arithmetic exact.

Post-processing always runs in fp32. docs/performance.md gives the measured agreement
with fp32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from pnpseg.errors import PnpsegError

#: Precision name → autocast dtype (None: no autocast).
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "bf16-vision": torch.bfloat16,
    "fp16-vision": torch.float16,
}
VISION_ONLY = "-vision"


def check_precision(precision: str, adapter: Any) -> str:
    """``precision`` if ``adapter`` (on its device) can run it, else a one-line PnpsegError."""
    if precision not in PRECISIONS:
        raise PnpsegError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if PRECISIONS[precision] is torch.float16 and torch.device(adapter.device).type != "cuda":
        raise PnpsegError(f"--precision {precision} needs a CUDA device; on CPU use bf16 or fp32")
    if precision.endswith(VISION_ONLY) and not callable(getattr(adapter, "vision_modules", None)):
        raise PnpsegError(
            f"--precision {precision} needs an adapter with a separate vision tower (a vision_modules() "
            f"method); {type(adapter).__name__} has none: use {precision.removesuffix(VISION_ONLY)} or fp32"
        )
    return precision


def autocast(adapter: Any, precision: str) -> contextlib.AbstractContextManager:
    """The context the model passes run in at ``precision`` (checked with :func:`check_precision`)."""
    dtype = PRECISIONS[check_precision(precision, adapter)]
    device_type = torch.device(adapter.device).type
    if dtype is None:
        return contextlib.nullcontext()
    if precision.endswith(VISION_ONLY):
        return autocast_modules(adapter.vision_modules(), device_type, dtype)
    return torch.autocast(device_type=device_type, dtype=dtype)


@contextlib.contextmanager
def autocast_modules(modules: Sequence[torch.nn.Module], device_type: str, dtype: torch.dtype) -> Iterator[None]:
    """Run each of ``modules`` under autocast and return its floating outputs as float32.

    A forward pre-hook enters autocast and a forward hook (``always_call``, so also when the
    forward raises) leaves it and casts the output, so whatever consumes the output computes
    in float32. Hooks are removed on exit.
    """
    active: list[torch.autocast] = []

    def enter(module: torch.nn.Module, args: Any) -> None:
        active.append(torch.autocast(device_type=device_type, dtype=dtype))
        active[-1].__enter__()

    def leave(module: torch.nn.Module, args: Any, output: Any) -> Any:
        active.pop().__exit__(None, None, None)
        return to_float32(output)

    with contextlib.ExitStack() as stack:
        for module in modules:
            stack.callback(module.register_forward_pre_hook(enter).remove)
            stack.callback(module.register_forward_hook(leave, always_call=True).remove)
        yield


def to_float32(value: Any) -> Any:
    """``value`` with every floating tensor in it (tuples, lists, dicts, model outputs) as float32."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        return type(value)(*(to_float32(v) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(to_float32(v) for v in value)
    if isinstance(value, dict):  # also transformers' ModelOutput, which keeps attributes in step
        for key in list(value):
            value[key] = to_float32(value[key])
    return value
