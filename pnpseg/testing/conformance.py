"""``check_adapter``: the conformance kit every adapter is tested with.

Like scikit-learn's ``check_estimator``, it runs an adapter through each clause of the
protocol (docs/adapters.md) on random inputs and reports every clause it breaks, by name.
It needs no real weights: a tiny randomly initialised model of the real classes will do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from pnpseg.method.adapter import TokenizedText, VLMAdapter
from pnpseg.method.params import SegmentParams
from pnpseg.method.precision import autocast_modules
from pnpseg.method.segmenter import Segmenter
from pnpseg.method.validation import check_output

#: Prompts of ASCII words every tokenizer can spell; the lengths differ so padding shows.
PROMPTS = ("A picture of red blue", "A picture of green", "A picture of white yellow cyan")
#: Class names for the chunking clause (colour words: the synthetic adapter knows them).
CLASS_NAMES = ("red", "green", "blue", "yellow", "cyan", "magenta", "white")

#: ``reference(adapter, pixels, text, layers)`` → ∂match/∂attention of each requested layer
#: as a text→image block (B, heads, T, grid_h·grid_w, patches row-major), computed another
#: way (for instance through the model's own forward with a full autograd graph).
ReferenceGradients = Callable[[Any, torch.Tensor, TokenizedText, list[int]], Sequence[torch.Tensor]]

CLAUSES = (
    "protocol attributes",
    "tokenizer offsets",
    "preprocessing sizes",
    "non-square grid",
    "attention block shape",
    "gradients exist",
    "exact gradients",
    "batch broadcasting",
    "layers=[]",
    "masking",
    "chunking equivalence",
    "determinism",
    "vision modules",
)


class AdapterCheckError(AssertionError):
    """Raised by :func:`check_adapter` when clauses fail; ``report`` holds the details."""

    def __init__(self, report: AdapterReport) -> None:
        super().__init__(str(report))
        self.report = report


@dataclass
class AdapterReport:
    """Which clauses an adapter passed, failed (with why) and skipped (with why)."""

    adapter: str
    passed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return not self.failed

    def __str__(self) -> str:
        if not self.failed:
            return f"{self.adapter}: all {len(self.passed)} checked clauses pass ({len(self.skipped)} skipped)"
        lines = [f"{self.adapter} fails {len(self.failed)} clause(s):"]
        lines += [f"  {clause}: {why}" for clause, why in self.failed.items()]
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        if self.failed:
            raise AdapterCheckError(self)


def check_adapter(
    adapter: Any,
    *,
    size: tuple[int, int] | None = None,
    layers: Sequence[int] | None = None,
    prompts: Sequence[str] = PROMPTS,
    class_names: Sequence[str] = CLASS_NAMES,
    reference_gradients: ReferenceGradients | None = None,
    rtol: float = 1e-4,
    atol: float = 1e-6,
    raise_on_failure: bool = True,
) -> AdapterReport:
    """Run ``adapter`` through every clause of :data:`CLAUSES`; return the report.

    ``size`` is a non-square (H, W) input size (default: 2×3 patches); ``layers`` the
    0-based layers to request (default: the last and the first, in that order).
    ``reference_gradients`` enables "exact gradients" (skipped without it). ``rtol`` /
    ``atol`` bound the equalities that batching may perturb (broadcasting, chunking).
    With ``raise_on_failure`` a failed clause raises :class:`AdapterCheckError` listing
    every failed clause; otherwise check the returned report's truth value.
    """
    p = int(getattr(adapter, "patch_size", 16) or 16)
    h, w = size if size is not None else (2 * p, 3 * p)
    n = int(getattr(adapter, "num_layers", 1) or 1)
    run = _Run(adapter, (h, w), list(layers) if layers is not None else sorted({0, n - 1}, reverse=True))
    run.prompts, run.class_names, run.rtol, run.atol = list(prompts), list(class_names), rtol, atol
    report = AdapterReport(type(adapter).__name__)
    for clause, check in [
        ("protocol attributes", run.protocol),
        ("tokenizer offsets", run.offsets),
        ("preprocessing sizes", run.preprocessing),
        ("non-square grid", run.grid),
        ("attention block shape", run.blocks),
        ("gradients exist", run.gradients),
        ("exact gradients", lambda: run.exact(reference_gradients)),
        ("batch broadcasting", run.broadcasting),
        ("layers=[]", run.no_layers),
        ("masking", run.masking),
        ("chunking equivalence", run.chunking),
        ("determinism", run.determinism),
        ("vision modules", run.vision),
    ]:
        try:
            skipped = check()
        except Exception as error:  # every clause is reported, whatever breaks it
            report.failed[clause] = _one_line(error)
        else:
            if skipped:
                report.skipped[clause] = skipped
            else:
                report.passed.append(clause)
    if raise_on_failure:
        report.raise_for_failures()
    return report


class _Run:
    """The inputs shared by the clauses, and one method per clause (None = passed)."""

    prompts: list[str]
    class_names: list[str]
    rtol: float
    atol: float

    def __init__(self, adapter: Any, size: tuple[int, int], layers: list[int]) -> None:
        self.adapter, self.size, self.layers = adapter, size, layers

    def pixels(self, batch: int, size: tuple[int, int] | None = None, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(batch, 3, *(size or self.size), generator=g).to(self.adapter.device)

    def forward(self, pixels: torch.Tensor, text: TokenizedText, layers: list[int]) -> Any:
        with torch.enable_grad():
            return self.adapter.forward(pixels, text, layers)

    def protocol(self) -> None:
        a = self.adapter
        assert isinstance(a, VLMAdapter), "does not have every member of pnpseg.VLMAdapter"
        for name in ("num_layers", "num_heads", "max_text_length", "patch_size"):
            value = getattr(a, name)
            assert isinstance(value, int) and value > 0, f"{name} is {value!r}, not a positive int"
        assert isinstance(a.device, torch.device), f"device is {a.device!r}, not a torch.device"
        SegmentParams.build(dict(a.default_params))

    def offsets(self) -> None:
        lazy = getattr(self.adapter, "weights_loaded", None) is False
        text = self.adapter.tokenize(self.prompts)
        b, t = text.input_ids.shape
        assert b == len(self.prompts), f"{b} rows for {len(self.prompts)} prompts"
        assert text.attention_mask.shape == (b, t), "attention_mask and input_ids differ in shape"
        assert [len(row) for row in text.offsets] == [t] * b, "offsets are not one span per token"
        assert [len(row) for row in text.unknown] == [t] * b, "unknown is not one flag per token"
        for prompt, spans, mask in zip(self.prompts, text.offsets, text.attention_mask.tolist()):
            covered: set[int] = set()
            for (start, end), real in zip(spans, mask):
                assert real or (start, end) == (0, 0), f"padding token of {prompt!r} has span {(start, end)}"
                assert 0 <= start <= end <= len(prompt), f"span {(start, end)} outside {prompt!r}"
                covered.update(range(start, end))
            letters = {i for i, c in enumerate(prompt) if not c.isspace()}
            assert covered == letters, f"the token spans of {prompt!r} do not cover exactly its characters"
        assert not lazy or not self.adapter.weights_loaded, "tokenize loaded the weights"

    def preprocessing(self) -> None:
        rng = np.random.default_rng(0)
        images = [
            Image.fromarray(rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)),
            Image.fromarray(rng.integers(0, 256, (33, 21, 3), dtype=np.uint8)),
        ]
        h, w = self.size
        for size in ((h, w), (w, h)):
            pixels = self.adapter.preprocess(images, size)
            assert tuple(pixels.shape) == (2, 3, *size), f"preprocess(…, {size}) gave {tuple(pixels.shape)}"
            assert pixels.is_floating_point(), f"preprocess gave {pixels.dtype}"
            assert pixels.device.type == self.adapter.device.type, f"preprocess put pixels on {pixels.device}"

    def grid(self) -> None:
        p = self.adapter.patch_size
        text = self.adapter.tokenize(self.prompts[:1])
        h, w = self.size
        for size in ((h, w), (w, h)):
            out = self.forward(self.pixels(1, size), text, self.layers[:1])
            expected = (size[0] // p, size[1] // p)
            assert tuple(out.grid) == expected, f"grid {tuple(out.grid)} for input {size}, expected {expected}"

    def blocks(self) -> None:
        text = self.adapter.tokenize(self.prompts[:2])
        pixels = self.pixels(2)
        with torch.enable_grad():
            check_output(self.adapter, self.forward(pixels, text, self.layers), pixels, text, self.layers)

    def gradients(self) -> None:
        text = self.adapter.tokenize(self.prompts[:2])
        out = self.forward(self.pixels(2), text, self.layers)
        grads = torch.autograd.grad(out.match_logit.sum(), out.attentions, allow_unused=True)
        for layer, grad in zip(self.layers, grads):
            assert grad is not None, f"the match logit does not depend on the attention of layer {layer}"
            assert out.to_text_image(grad).abs().sum() > 0, f"zero gradient on the text→image block of layer {layer}"
        model = getattr(self.adapter, "model", None)
        if isinstance(model, torch.nn.Module):
            trained = [name for name, p in model.named_parameters() if p.requires_grad or p.grad is not None]
            assert not trained, f"parameter {trained[0]} requires or holds a gradient; freeze the weights"

    def exact(self, reference: ReferenceGradients | None) -> str | None:
        if reference is None:
            return "no reference_gradients given"
        text = self.adapter.tokenize(self.prompts[:2])
        pixels = self.pixels(2, seed=3)
        out = self.forward(pixels, text, self.layers)
        grads = torch.autograd.grad(out.match_logit.sum(), out.attentions)
        expected = reference(self.adapter, pixels, text, list(self.layers))
        for layer, grad, ref in zip(self.layers, grads, expected):
            _close(out.to_text_image(grad), ref, self.rtol, self.atol, f"gradient of layer {layer}")
        return None

    def broadcasting(self) -> None:
        text = self.adapter.tokenize(self.prompts)
        k = len(self.prompts)
        pixels = self.pixels(1, seed=8)
        one = self.forward(pixels, text, self.layers[:1])
        repeated = self.forward(pixels.expand(k, -1, -1, -1), text, self.layers[:1])
        assert tuple(one.match_logit.shape) == (k,), f"1 image × {k} prompts gave logits {tuple(one.match_logit.shape)}"
        _close(one.match_logit, repeated.match_logit, self.rtol, self.atol, "match logit")
        blocks = [out.to_text_image(out.attentions[0].detach()) for out in (one, repeated)]
        _close(blocks[0], blocks[1], self.rtol, self.atol, "attention block")

    def no_layers(self) -> None:
        text = self.adapter.tokenize(self.prompts[:2])
        pixels = self.pixels(2, seed=5)
        with torch.no_grad():
            bare = self.adapter.forward(pixels, text, [])
        assert list(bare.attentions) == [], f"layers=[] returned {len(bare.attentions)} attentions"
        full = self.forward(pixels, text, self.layers[:1])
        _close(bare.match_logit, full.match_logit.detach(), self.rtol, self.atol, "match logit with layers=[]")

    def masking(self) -> None:
        pixels = self.pixels(2, seed=6)
        p = self.adapter.patch_size
        gh, gw = self.size[0] // p, self.size[1] // p
        drop = torch.zeros(2, gh * gw, dtype=torch.bool, device=pixels.device)
        same = self.adapter.mask_patches(pixels, drop)
        assert tuple(same.shape) == tuple(pixels.shape), f"mask_patches gave {tuple(same.shape)}"
        assert torch.equal(same, pixels), "dropping no patch changed the pixels"
        drop[0, gw + 1 if gh > 1 and gw > 1 else 0] = True
        masked = self.adapter.mask_patches(pixels, drop)
        changed = (masked != pixels).any(dim=1)  # (B, H, W)
        cells = changed.view(2, gh, p, gw, p).any(dim=(2, 4)).flatten(1)
        assert torch.equal(cells, drop), "mask_patches changed other patches than the dropped one"

    def chunking(self) -> None:
        names = self.class_names
        # the same class name, so that errors name the adapter under test
        adapter = type(type(self.adapter).__name__, (_ShortText,), {})(self.adapter, names)
        segmenter = Segmenter(
            adapter, layer=self.layers[0] + 1, head=1, drop_rounds=1, postprocess=(), image_size=self.size
        )
        chunks = segmenter.plan(names)
        assert len(chunks) >= 2, "the class names fit in one prompt even with a short text limit"
        rng = np.random.default_rng(1)
        image = Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8))
        together = segmenter.saliency([image], [names])[0]
        for chunk in chunks:
            alone = segmenter.saliency([image], [[names[k] for k in chunk.classes]])[0]
            _close(together[list(chunk.classes)], alone, self.rtol, self.atol, f"maps of chunk {chunk.prompt!r}")

    def determinism(self) -> None:
        text = self.adapter.tokenize(self.prompts[:2])
        pixels = self.pixels(2, seed=9)
        state = torch.random.get_rng_state()
        first, second = (self.forward(pixels, text, self.layers) for _ in range(2))
        assert torch.equal(torch.random.get_rng_state(), state), "forward changed the global torch RNG"
        assert torch.equal(first.match_logit, second.match_logit), "two identical forwards gave different logits"
        for a, b in zip(first.attentions, second.attentions):
            assert torch.equal(a, b), "two identical forwards gave different attentions"

    def vision(self) -> str | None:
        listing = getattr(self.adapter, "vision_modules", None)
        if not callable(listing):
            return "no vision_modules()"
        modules = list(listing())
        assert modules, "vision_modules() is empty"
        for module in modules:
            assert isinstance(module, torch.nn.Module), f"vision_modules() lists {type(module).__name__}, not a Module"
        ran: set[int] = set()
        with contextlib.ExitStack() as stack:
            for i, module in enumerate(modules):
                hook = module.register_forward_hook(lambda *_, i=i: ran.add(i))
                stack.callback(hook.remove)
            stack.enter_context(autocast_modules(modules, self.adapter.device.type, torch.bfloat16))
            out = self.forward(self.pixels(2, seed=10), self.adapter.tokenize(self.prompts[:2]), self.layers)
        idle = [type(modules[i]).__name__ for i in range(len(modules)) if i not in ran]
        assert not idle, f"vision module {idle[0]} never ran in forward (list what forward calls)"
        for what, tensor in [("match logit", out.match_logit), *(("attention", a) for a in out.attentions)]:
            assert tensor.dtype == torch.float32, f"{what} is {tensor.dtype} with only the vision tower in bf16"
        grads = torch.autograd.grad(out.match_logit.sum(), out.attentions)
        assert all(torch.isfinite(g).all() for g in grads), "non-finite gradient with the vision tower in bf16"
        return None


def repainted_patch_deviations(
    adapter: Any,
    pixels: torch.Tensor,
    text: TokenizedText,
    cells: Callable[[int, int], Sequence[tuple[int, int]]],
    layer: int = 0,
    seed: int = 0,
) -> Iterator[tuple[int, int, int, torch.Tensor]]:
    """For each ``(row, col)`` in ``cells(grid_h, grid_w)``: repaint that patch of ``pixels``
    and yield ``(row, col, grid_w, deviation)``, ``deviation[p]`` being how much the
    attention of ``layer`` to row-major column ``p`` changed beyond the softmax
    normaliser's common factor.

    In a layer whose keys are per-patch, ``deviation.argmax()`` is ``row * grid_w + col``
    when the adapter's columns are row-major; a transposed grid or shuffled columns fail.
    """
    out = adapter.forward(pixels, text, [layer])
    base = out.to_text_image(out.attentions[0].detach())
    grid_h, grid_w = out.grid
    p = adapter.patch_size
    g = torch.Generator().manual_seed(seed)
    for row, col in cells(grid_h, grid_w):
        changed = pixels.clone()
        noise = 2 * torch.randn(3, p, p, generator=g)
        changed[:, :, row * p : (row + 1) * p, col * p : (col + 1) * p] = noise.to(pixels.device)
        out2 = adapter.forward(changed, text, [layer])
        log_ratio = (out2.to_text_image(out2.attentions[0].detach()) / base).log()
        deviation = (log_ratio - log_ratio.median(dim=-1, keepdim=True).values).abs().mean(dim=(0, 1, 2))
        yield row, col, grid_w, deviation


def compare_devices(
    adapter: Any,
    other: Any,
    size: tuple[int, int],
    layers: Sequence[int] = (0,),
    prompts: Sequence[str] = PROMPTS[:2],
    rtol: float = 1e-3,
    atol: float = 1e-5,
) -> None:
    """Assert that two adapters (the same model on two devices) give the same attention
    blocks, gradients and grid through the core's GradCAM capture."""
    from pnpseg.method.gradcam import capture

    g = torch.Generator().manual_seed(9)
    pixels = torch.randn(len(prompts), 3, *size, generator=g)
    results = [capture(a, pixels.to(a.device), a.tokenize(list(prompts)), list(layers)) for a in (adapter, other)]
    (att, grad, grid), (att2, grad2, grid2) = results
    assert grid == grid2, f"grids differ: {grid} and {grid2}"
    for x, y in zip([*att, *grad], [*att2, *grad2]):
        torch.testing.assert_close(y.cpu(), x.cpu(), rtol=rtol, atol=atol)


class _ShortText:
    """``adapter`` with a text limit of about two class names, so that chunking happens."""

    def __init__(self, adapter: Any, names: Sequence[str]) -> None:
        from pnpseg.method.prompts import build_prompt

        self._adapter = adapter
        lengths = adapter.tokenize([build_prompt(group)[0] for group in [names[:2], *([n] for n in names)]])
        self.max_text_length = int(lengths.attention_mask.sum(1).max())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._adapter, name)


def _close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float, what: str) -> None:
    try:
        torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)
    except AssertionError as error:
        raise AssertionError(f"{what} differs: {_one_line(error)}") from None


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = "; ".join(lines[:3]) if lines else type(error).__name__
    return f"{type(error).__name__}: {text}" if not isinstance(error, AssertionError) else text
