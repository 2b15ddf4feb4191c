"""Candidate speed-ups of the vision tower alone, measured before any is kept.

    python benchmarks/vision_tower.py --reps 3

BLIP-L's vision tower (ViT-L/16, random weights, nothing downloaded) at 336 px, one image,
under ``no_grad`` as the adapter runs it: eager attention, fused (SDPA) attention, fused
plus ``torch.inference_mode``, fused plus a channels-last input, fused under bf16 autocast (the vision tower alone in bf16), and ``torch.compile`` of
the fused tower (its first call, the warm-up, is reported apart). The variants are
interleaved rep by rep; by default one torch thread and *CPU time* of this process are
measured, which other processes on a shared machine disturb far less than wall time.
docs/performance.md has the numbers and which variants were kept.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator

import torch
from bench_models import BLIP_L_VISION  # benchmarks/bench_models.py, beside this script

from pnpseg_hf import fused


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--size", type=int, default=336)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--wall", action="store_true", help="wall time instead of this process's CPU time")
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args(argv)
    from transformers import BlipVisionConfig, BlipVisionModel

    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.wall else time.process_time
    config = BlipVisionConfig(**BLIP_L_VISION)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = BlipVisionModel(config).eval().requires_grad_(False)
    attentions = fused.of_type(model, "BlipAttention")
    pixels = torch.randn(1, 3, args.size, args.size)

    def timed(tower: Callable, fuse: bool, mode: Callable, x: torch.Tensor) -> tuple[float, torch.Tensor]:
        fused.unfuse(attentions)
        if fuse:
            fused.fuse(attentions, fused.blip_attention)
        with mode():
            start = clock()
            out = tower(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state
            return clock() - start, out

    @contextlib.contextmanager
    def bf16_no_grad() -> Iterator[None]:
        """What a bf16 vision tower alone would cost (the text side would stay fp32)."""
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            yield

    channels_last = pixels.contiguous(memory_format=torch.channels_last)
    variants: dict[str, tuple[Callable, bool, Callable, torch.Tensor]] = {
        "eager": (model, False, torch.no_grad, pixels),
        "fused": (model, True, torch.no_grad, pixels),
        "fused + inference_mode": (model, True, torch.inference_mode, pixels),
        "fused + channels_last input": (model, True, torch.no_grad, channels_last),
        "fused + bf16 autocast": (model, True, bf16_no_grad, pixels),
    }
    if not args.no_compile:
        compiled = torch.compile(model)
        seconds, _ = timed(compiled, True, torch.no_grad, pixels)
        print(f"torch.compile warm-up (first call): {seconds:.1f} s", flush=True)
        variants["fused + torch.compile"] = (compiled, True, torch.no_grad, pixels)
    times: dict[str, list[float]] = {name: [] for name in variants}
    outputs: dict[str, torch.Tensor] = {}
    for _ in range(args.reps):
        for name, run in variants.items():
            seconds, outputs[name] = timed(*run)
            times[name].append(seconds)
    unit = "wall s" if args.wall else "CPU s"
    print(f"| variant | fastest {unit} | vs eager | max abs diff vs eager |\n|---|---|---|---|")
    for name, values in times.items():
        diff = (outputs[name].float() - outputs["eager"]).abs().max().item()
        print(f"| {name} | {min(values):.2f} | {min(times['eager']) / min(values):.3f}x | {diff:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
