"""Optimisations must not change results (issue 7).

The optimised pipeline (targeted ``autograd.grad``, vision under ``no_grad``, frozen
parameters, vectorised patch masking, CRF in worker processes) is compared with a plain
implementation of docs/method.md §1–3 written here: full ``backward()`` with parameter gradients
enabled, no caching, patch zeroing in a Python loop, the median rule patch by patch.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pnpseg import PnpsegError
from pnpseg.cli import app
from pnpseg.engines.local.parallel import auto_batch_size, parse_batch_size, prefetch
from pnpseg.method.segmenter import Segmenter
from pnpseg.testing import SyntheticAdapter, make_scene

ROOT = Path(__file__).resolve().parents[1]


def plain_saliency(pixels, patch, prompt, names, tokenize, forward_and_probs, layer, head, rounds):
    """docs/method.md §1–3 written out plainly for one image and one prompt.

    ``forward_and_probs(pixels, text)`` → (match logit, attention probs in the graph, a crop
    of such a tensor to the text→image block (heads, T, P)); gradients come from
    ``logit.backward()``, which also fills parameter grads.
    """
    text = tokenize([prompt])
    spans = []
    start = len("A picture of ")
    for name in names:
        spans.append((start, start + len(name)))
        start += len(name) + 1
    offsets = text.offsets[0]
    class_tokens = [[t for t, (s, e) in enumerate(offsets) if e > s >= a and e <= b] for a, b in spans]
    _, _, h, w = pixels.shape
    gw = w // patch
    n = (h // patch) * gw
    dropped: list[int] = []
    total = torch.zeros(len(names), n)
    for round_ in range(rounds):
        image = pixels.clone()
        for p in dropped:
            r, c = p // gw, p % gw
            image[:, :, r * patch : (r + 1) * patch, c * patch : (c + 1) * patch] = 0.0
        logit, probs, crop = forward_and_probs(image, text)
        probs.retain_grad()
        logit.sum().backward()
        cam = crop(probs.grad).clamp(min=0) * crop(probs.detach())  # (heads, T, P)
        cam = cam[head]
        maps = torch.stack([cam[toks].mean(0) for toks in class_tokens])
        for p in dropped:
            maps[:, p] = 0.0
        total += maps
        if round_ + 1 < rounds:
            u = maps.sum(0)
            remaining = [p for p in range(n) if p not in dropped]
            median = u[remaining].median()
            dropped += [p for p in remaining if u[p] >= median and u[p] > 0]
    return total


@pytest.mark.slow
def test_tiny_blip_saliency_equals_plain_full_backward(tiny_blip):
    from transformers import BlipForImageTextRetrieval

    from pnpseg_blip.adapter import capture_cross_attentions

    names = ["cat", "dog", "grass"]
    seg = Segmenter.from_pretrained(
        str(tiny_blip), adapter="blip", device="cpu", image_size=(64, 96), layer=2, head=2, drop_rounds=3
    )
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 100, 3), dtype=np.uint8))
    ours = seg.saliency([image], [names])[0]

    model = BlipForImageTextRetrieval.from_pretrained(str(tiny_blip), attn_implementation="eager").eval()
    model.requires_grad_(True)  # as the reference: every parameter gets a gradient

    def forward_and_probs(pixels, text):
        with capture_cross_attentions(model, [1]) as captured:
            out = model(
                input_ids=text.input_ids,
                attention_mask=text.attention_mask,
                pixel_values=pixels,
                use_itm_head=True,
                interpolate_pos_encoding=True,
            )
        return out.itm_score[:, 1], captured[1], lambda a: a[0, :, :, 1:]

    pixels = seg.adapter.preprocess([image], (64, 96))
    expected = plain_saliency(
        pixels,
        16,
        "A picture of cat dog grass",
        names,
        seg.adapter.tokenize,
        forward_and_probs,
        layer=1,
        head=1,
        rounds=3,
    )
    assert any(p.grad is not None for p in model.vision_model.parameters())  # really a full backward
    assert ours.shape == (3, 4, 6)
    assert torch.allclose(ours.flatten(1), expected, rtol=1e-4, atol=1e-7)


def test_synthetic_saliency_equals_plain_full_backward():
    colours = ["red", "green", "blue"]
    adapter = SyntheticAdapter()
    seg = Segmenter(adapter, image_size=(96, 160), drop_rounds=4)
    image, _ = make_scene(96, 160, colours, seed=3)
    ours = seg.saliency([image], [colours])[0]
    layer, head = seg.params.layer - 1, seg.params.head - 1

    def forward_and_probs(pixels, text):
        out = adapter.forward(pixels, text, [layer])
        return out.match_logit, out.attentions[0], lambda a: out.to_text_image(a)[0]

    pixels = adapter.preprocess([image], (96, 160))
    expected = plain_saliency(
        pixels, 16, "A picture of red green blue", colours, adapter.tokenize, forward_and_probs, layer, head, rounds=4
    )
    assert ours.shape == (3, 6, 10)
    assert torch.allclose(ours.flatten(1), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_workers_give_byte_identical_pngs(tmp_path):
    colours = ["red", "green", "blue"]
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, (h, w) in enumerate([(120, 200), (200, 120), (150, 150), (96, 128)]):
        make_scene(h, w, colours, seed=i)[0].save(inputs / f"s{i}.png")
    outs = {}
    for workers in (0, 2):
        out = tmp_path / f"out{workers}"
        result = CliRunner().invoke(
            app,
            [
                "segment",
                str(inputs),
                "--classes",
                ",".join(colours),
                "--adapter",
                "synthetic",
                "--out",
                str(out),
                "--image-size",
                "96x128",
                "--postprocess",
                "blur,crf",
                "--workers",
                str(workers),
                "--batch-size",
                "3",
                "--device",
                "cpu",
            ],
        )
        assert result.exit_code == 0, result.output
        outs[workers] = {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))}
    assert len(outs[0]) == 4
    assert outs[0] == outs[2]


@pytest.mark.slow
def test_bf16_runs_on_cpu_and_fp16_is_refused():
    colours = ["red", "green", "blue"]
    image, _ = make_scene(96, 160, colours, seed=5)
    fp32 = Segmenter(SyntheticAdapter(), image_size=(96, 160))(image, colours).labels
    bf16 = Segmenter(SyntheticAdapter(), image_size=(96, 160), precision="bf16")(image, colours).labels
    assert (fp32 == bf16).mean() > 0.95
    with pytest.raises(PnpsegError, match="fp16"):
        Segmenter(SyntheticAdapter(), precision="fp16")


def test_batch_size_parsing_and_auto_on_cpu():
    assert parse_batch_size("auto") == "auto" and parse_batch_size("4") == 4
    with pytest.raises(PnpsegError):
        parse_batch_size("0")
    seg = Segmenter(SyntheticAdapter())
    assert auto_batch_size(seg, Image.new("RGB", (32, 32)), ["red"]) == 1


def test_prefetch_keeps_order():
    assert list(prefetch(range(5), lambda x: x * x, ahead=2)) == [(i, i * i) for i in range(5)]


@pytest.mark.slow
def test_benchmark_harness_runs_on_a_tiny_model():
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--tiny",
            "--images",
            "1",
            "--rounds",
            "2",
            "--workers",
            "0",
            "--no-bridgetower",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "RATIO tiny-BLIP 64px baseline/ours" in out
    assert "RATIO tiny-BLIP 64px ours/floor" in out
    assert "RATIO tiny-BLIP 64px floor eager/fused" in out
    assert "| floor eager |" in out
    assert "CHECK tiny-BLIP 64px bf16 vs fp32 label agreement" in out
    assert "label maps ours vs baseline agree on 100.0000% of pixels (0 of" in out


def test_crf_benchmark_compares_each_knob_with_the_default_labels():
    # A variant equal to the default (10 iterations, the default 1024 px side) must keep every label.
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "crf.py"), "--images", "1", "--content", "scenes"]
        + ["--iterations", "10,2", "--sides", "1024"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("| scenes |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == "20.0 / 21"  # every class channel wins somewhere on random saliency
    assert cells[3].endswith(", 100.00%") and cells[5].endswith(", 100.00%")  # 10 it, side 1024
    assert not cells[4].endswith(", 100.00%")  # 2 iterations change labels
