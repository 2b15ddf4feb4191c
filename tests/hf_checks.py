"""Checks shared by the tests of the Hugging Face adapters on tiny random models.

Each takes the adapter (or its registry name) and the model-specific numbers, and asserts;
the adapter test modules call them from their own test functions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pnpseg.method.gradcam import capture
from pnpseg.method.segmenter import Segmenter
from pnpseg.plugins import lookup


def random_pixels(adapter, size, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *size, generator=g).to(adapter.device)


def repainted_patch_deviations(adapter, pixels, text, cells, seed):
    """For each (row, col) in ``cells``: repaint that patch and yield ``(row, col, grid_w,
    deviation)``, ``deviation[p]`` being how much the layer-0 attention to row-major column
    ``p`` changed beyond the softmax normaliser's common factor."""
    out = adapter.forward(pixels, text, [0])
    base = out.to_text_image(out.attentions[0].detach())
    grid_h, grid_w = out.grid
    p = adapter.patch_size
    g = torch.Generator().manual_seed(seed)
    for row, col in cells(grid_h, grid_w):
        changed = pixels.clone()
        changed[:, :, row * p : (row + 1) * p, col * p : (col + 1) * p] = 2 * torch.randn(3, p, p, generator=g)
        out2 = adapter.forward(changed, text, [0])
        log_ratio = (out2.to_text_image(out2.attentions[0].detach()) / base).log()
        deviation = (log_ratio - log_ratio.median(dim=-1, keepdim=True).values).abs().mean(dim=(0, 1, 2))
        yield row, col, grid_w, deviation


def check_broadcast_and_empty_layers(adapter):
    """One image against three prompts equals the image repeated; ``layers=[]`` gives the logit."""
    pixels = random_pixels(adapter, (64, 96), seed=8)
    text = adapter.tokenize(["A picture of cat dog", "A picture of sky", "A picture of red grass"])
    one = adapter.forward(pixels, text, [0])
    repeated = adapter.forward(pixels.expand(3, -1, -1, -1), text, [0])
    assert one.match_logit.shape == (3,)
    torch.testing.assert_close(one.match_logit, repeated.match_logit, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(
        one.to_text_image(one.attentions[0]), repeated.to_text_image(repeated.attentions[0]), rtol=1e-4, atol=1e-7
    )
    assert len(set(one.match_logit.tolist())) == 3  # the prompts really differ
    with torch.no_grad():
        bare = adapter.forward(pixels, text, [])
    assert bare.attentions == []
    torch.testing.assert_close(bare.match_logit, one.match_logit.detach(), rtol=1e-4, atol=1e-6)


def check_cuda_matches_cpu(name, tiny_path, adapter):
    gpu = lookup("adapters", name)(model=str(tiny_path), device="cuda")
    pixels = random_pixels(adapter, (64, 96), batch=2, seed=9)
    text = adapter.tokenize(["A picture of cat dog", "A picture of sky"])
    cpu_att, cpu_grad, grid = capture(adapter, pixels, text, [1])
    gpu_att, gpu_grad, gpu_grid = capture(gpu, pixels.cuda(), text, [1])
    assert gpu_grid == grid
    torch.testing.assert_close(gpu_att[0].cpu(), cpu_att[0], rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(gpu_grad[0].cpu(), cpu_grad[0], rtol=1e-3, atol=1e-5)


def check_exact_gradients(adapter, text, layers, grid, reference, to_block, atol):
    """GradCAM's capture gives nonzero gradients equal to a full-graph ``reference``
    (parameters trainable), and no parameter is left requiring or holding a gradient.

    ``reference(adapter, pixels, text, layers)`` returns ∂match/∂probs of the raw
    attentions; ``to_block`` cuts them to the text→patch block for ``text``.
    """
    pixels = random_pixels(adapter, (64, 96), batch=2, seed=3)
    attentions, gradients, captured_grid = capture(adapter, pixels, text, layers)
    assert captured_grid == grid
    n_patches = grid[0] * grid[1]
    for attention, gradient in zip(attentions, gradients):
        assert gradient.shape == attention.shape == (2, adapter.num_heads, text.input_ids.shape[1], n_patches)
        assert gradient.abs().sum() > 0
    model = adapter._ensure_model()
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())
    for gradient, ref in zip(gradients, reference(adapter, pixels, text, layers)):
        torch.testing.assert_close(gradient, to_block(ref), rtol=1e-4, atol=atol)
    assert all(p.grad is None for p in model.parameters())


def check_chunking_matches_by_hand(adapter, names: Sequence[str], grid, atol):
    """A class list too long for one prompt is split, and each chunk's maps equal running
    that chunk alone."""
    seg = Segmenter(adapter, drop_rounds=1, postprocess=(), image_size=(64, 96))
    chunks = seg.plan(names)
    assert len(chunks) >= 2
    assert sorted(k for chunk in chunks for k in chunk.classes) == list(range(len(names)))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8))
    together = seg.saliency([image], [names])[0]
    assert together.shape == (len(names), *grid)
    for chunk in chunks:
        chunk_names = [names[k] for k in chunk.classes]
        by_hand = seg.saliency([image], [chunk_names])[0]
        torch.testing.assert_close(together[list(chunk.classes)], by_hand, rtol=1e-4, atol=atol)
        assert by_hand.abs().sum() > 0


def check_headless_checkpoint_refused(tmp_path, tiny_path, headless_class, name, size, match):
    """The tiny checkpoint re-saved as ``transformers.<headless_class>`` (no matching head)
    loads (config, processor) but its first forward is a ModelLoadError matching ``match``."""
    import transformers

    import pnpseg

    folder = tmp_path / "headless"
    getattr(transformers, headless_class).from_pretrained(tiny_path).save_pretrained(folder)
    for file in ("tokenizer.json", "tokenizer_config.json", "processor_config.json"):
        (folder / file).write_bytes((tiny_path / file).read_bytes())
    adapter = lookup("adapters", name)(model=str(folder))
    text = adapter.tokenize(["A picture of cat"])
    with pytest.raises(pnpseg.ModelLoadError, match=match):
        adapter.forward(random_pixels(adapter, size), text, [0])


def check_offline_default_model_is_one_line_error(tmp_path, name, default_model):
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    Image.new("RGB", (40, 30), "red").save(image)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"), "NO_COLOR": "1"}
    env.pop("HF_HUB_CACHE", None)
    env.pop("TRANSFORMERS_CACHE", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pnpseg.cli",
            "segment",
            str(image.parent),
            "--classes",
            "cat,dog",
            "--adapter",
            name,
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 3, proc.stderr  # environment: a missing model
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert f"{default_model!r} is not in the local cache" in lines[0]
    assert "--model PATH" in lines[0] and f"{name!r}" in lines[0]


def run_cli_segment(tmp_path, tiny_path, name, classes: Sequence[str], *options: str) -> Path:
    """``pnpseg segment`` on two odd-sized images with the tiny model; checks the labels
    (original sizes, class ids in range) and the manifest, returns the output folder."""
    from typer.testing import CliRunner

    from pnpseg.cli import app

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    sizes = {"wide.png": (70, 45), "tall.jpg": (33, 58)}  # (width, height)
    for file, (w, h) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / file)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "segment",
            str(folder),
            "--classes",
            ",".join(classes),
            "--adapter",
            name,
            "--model",
            str(tiny_path),
            "--out",
            str(out),
            "--device",
            "cpu",
            *options,
        ],
    )
    assert result.exit_code == 0, result.output
    for file, size in sizes.items():
        with Image.open(out / (os.path.splitext(file)[0] + ".png")) as label:
            assert label.size == size
            assert np.asarray(label).max() <= len(classes)
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["status"] == "ok" for r in records)
    assert {r["settings"]["adapter"] for r in records} == {name}
    return out


def load_lazily(name, tiny_path, adapter_class):
    """The registry builds ``adapter_class`` from the folder without loading the weights."""
    import pnpseg

    adapter = lookup("adapters", name)(model=str(tiny_path))
    assert isinstance(adapter, adapter_class)
    assert isinstance(adapter, pnpseg.VLMAdapter)
    assert not adapter.weights_loaded  # config + processor only
    return adapter


def token_pieces(adapter, prompt):
    """Tokenize ``prompt`` (which must not load the weights), check a special token at each
    end has no span, and return the text of the real tokens."""
    text = adapter.tokenize([prompt])
    assert not adapter.weights_loaded
    assert text.offsets[0][0] == (0, 0) and text.offsets[0][-1] == (0, 0)
    return [prompt[a:b] for a, b in text.offsets[0] if b > a]


def forward_two_prompts(adapter, size, layers, grid):
    """Forward two random images against two prompts; checks the grid and the logit shape."""
    pixels = random_pixels(adapter, size, batch=2)
    text = adapter.tokenize(["A picture of cat dog", "A picture of sky"])
    out = adapter.forward(pixels, text, layers)
    assert out.grid == grid
    assert out.match_logit.shape == (2,)
    return out, text.input_ids.shape[1]
