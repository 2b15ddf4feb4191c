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
    "attention values",
    "layer numbering",
    "patch order",
    "gradients exist",
    "exact gradients",
    "batch broadcasting",
    "layers=[]",
    "masking",
    "chunking equivalence",
    "determinism",
    "vision modules",
)


#: Clauses that read the attention blocks or the grid, and the clauses they need to pass first.
NEEDS = {
    "attention values": ("attention block shape",),
    "layer numbering": ("attention block shape",),
    "patch order": ("non-square grid", "attention block shape", "attention values"),
}
#: Tolerance of "rows sum to 1" (float32 softmax over a few thousand keys is well inside it).
ROW_SUM_TOLERANCE = 1e-3
#: Hints of the "layer numbering" clause, by how the layer forward returned is off.
OFF_BY = {
    -1: "layers are 0-based indices into the text→image layers; do not subtract 1 (the core converts users' 1-based numbers)",
    1: "layers are 0-based indices into the text→image layers; do not add 1",
}


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
        ("attention values", run.values),
        ("layer numbering", run.numbering),
        ("patch order", run.patch_order),
        ("gradients exist", run.gradients),
        ("exact gradients", lambda: run.exact(reference_gradients)),
        ("batch broadcasting", run.broadcasting),
        ("layers=[]", run.no_layers),
        ("masking", run.masking),
        ("chunking equivalence", run.chunking),
        ("determinism", run.determinism),
        ("vision modules", run.vision),
    ]:
        blocked = [c for c in NEEDS.get(clause, ()) if c in report.failed]
        if blocked:  # one root cause, one message: the clause it depends on already failed
            report.skipped[clause] = f"needs the {blocked[0]!r} clause, which failed"
            continue
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
            swapped = tuple(out.grid) == expected[::-1]
            hint = ": that is (grid_w, grid_h); report (H / patch, W / patch)" if swapped else ""
            assert tuple(out.grid) == expected, f"grid {tuple(out.grid)} for input {size}, expected {expected}{hint}"

    def blocks(self) -> None:
        text = self.adapter.tokenize(self.prompts[:2])
        pixels = self.pixels(2)
        with torch.enable_grad():
            check_output(self.adapter, self.forward(pixels, text, self.layers), pixels, text, self.layers)

    def values(self) -> None:
        text = self.adapter.tokenize(self.prompts[:2])
        out = self.forward(self.pixels(2, seed=12), text, self.layers)
        for layer, attention in zip(self.layers, out.attentions):
            a = attention.detach().float()
            sums = a.sum(-1)
            rows_ok = ((sums - 1).abs() <= ROW_SUM_TOLERANCE) | (sums.abs() <= ROW_SUM_TOLERANCE)  # 0: fully masked
            low = float(a.min())
            if low >= -1e-6 and bool(rows_ok.all()):
                continue
            span = f"row sums {float(sums.min()):.3g}–{float(sums.max()):.3g}"
            assert low >= -1e-6, (
                f"attention values of layer {layer} are not probabilities (min {low:.3g}, {span}): return the "
                "softmax output, not the scores"
            )
            columns = a.sum(-2)
            assert not bool(((columns - 1).abs() <= ROW_SUM_TOLERANCE).all()), (
                f"attention of layer {layer} sums to 1 over the queries, not the keys ({span}): take the softmax "
                "over the keys (the last axis)"
            )
            raise AssertionError(
                f"attention rows of layer {layer} do not sum to 1 over the keys ({span}): return the probabilities "
                "over every key the model normalises over, before any slicing"
            )

    def numbering(self) -> str | None:
        text = self.adapter.tokenize(self.prompts[:2])
        pixels = self.pixels(2, seed=13)
        reported = getattr(self.adapter, "reported_maps", None)
        out = self.forward(pixels, text, self.layers)
        if not callable(reported):
            return self._layer_order(out)
        with torch.no_grad():
            own = [m.detach() for m in reported(pixels, text)]
        n = self.adapter.num_layers
        assert len(own) == n, f"reported_maps gave {len(own)} maps for {n} layers"
        for layer, attention in zip(self.layers, out.attentions):
            mine = out.text_image(attention.detach(), layer)
            if self._same(mine, own[layer]):
                continue
            match = [j for j in range(n) if self._same(mine, own[j])]
            if match:
                off = (match[0] - layer + n // 2) % n - n // 2  # -1: layer[i - 1], wrapping at 0 as Python does
                hint = OFF_BY.get(off, "index the model's layers with the 0-based layer given")
                raise AssertionError(f"forward's layer {layer} is the model's own layer {match[0]} (0-based): {hint}")
            if self._same(mine.sort(-1).values, own[layer].sort(-1).values):
                raise AssertionError(
                    f"the map of layer {layer} has the model's own values in other patch columns: order the columns "
                    "row-major (column p = row p // grid_w, column p % grid_w)"
                )
            diff = float((mine - own[layer]).abs().max())
            raise AssertionError(
                f"the map of layer {layer} differs from the model's own (reported_maps) by up to {diff:.3g}: give "
                "the model the same inputs (the text attention mask included), capture that very layer's attention "
                "and compose it as the model's own attentions compose"
            )
        return None

    def _same(self, a: torch.Tensor, b: torch.Tensor) -> bool:
        return a.shape == b.shape and torch.allclose(a, b.to(a.device, a.dtype), rtol=self.rtol, atol=self.atol)

    def _layer_order(self, out: Any) -> str | None:
        """Without the model's own maps: a higher layer's attention may be computed from a
        lower one's, never the reverse (a 1-based reading returns the last layer for 0)."""
        if len(set(self.layers)) < 2:
            return "no reported_maps(), and fewer than two layers requested"
        low = min(range(len(self.layers)), key=lambda i: self.layers[i])
        high = max(range(len(self.layers)), key=lambda i: self.layers[i])
        a_low, a_high = out.attentions[low], out.attentions[high]
        if _depends(a_low, a_high):
            raise AssertionError(
                f"the attention returned for layer {self.layers[low]} is computed from the one returned for layer "
                f"{self.layers[high]}: {OFF_BY[-1]}"
            )
        if _depends(a_high, a_low):
            return None
        return "no reported_maps(), and the returned layers do not depend on each other"

    def patch_order(self) -> None:
        """Repaint one patch per image of a batch; its own attention column must move most."""
        p = self.adapter.patch_size
        gh, gw = self.size[0] // p, self.size[1] // p
        cells = [(row, col) for row in range(gh) for col in range(gw)]
        layer = min(self.layers)
        base = self.pixels(1, seed=14)
        g = torch.Generator().manual_seed(15)
        pixels = base.repeat(len(cells) + 1, 1, 1, 1)
        for i, (row, col) in enumerate(cells, start=1):
            pixels[i, :, row * p : (row + 1) * p, col * p : (col + 1) * p] = 2 * torch.randn(3, p, p, generator=g)
        one = self.adapter.tokenize(self.prompts[:1])
        n = len(cells) + 1
        text = TokenizedText(
            one.input_ids.expand(n, -1), one.attention_mask.expand(n, -1), one.offsets * n, one.unknown * n
        )
        out = self.forward(pixels, text, [layer])
        block = out.text_image(out.attentions[0].detach(), layer).double()  # (n, heads, T, P)
        # Every column moves by the softmax normaliser's common factor (the median ratio);
        # the change beyond it, in probability, is large only in the repainted patch's column
        # (a log ratio alone is noise where attention is nearly 0).
        common = (block[1:].clamp(min=1e-30) / block[:1].clamp(min=1e-30)).median(dim=-1, keepdim=True).values
        deviation = (block[1:] - common * block[:1]).abs().mean(dim=(1, 2))  # (cells, P)
        moved = dict(zip(cells, deviation.argmax(dim=-1).tolist()))
        wrong = [(cell, column) for cell, column in moved.items() if column != cell[0] * gw + cell[1]]
        if not wrong:
            return
        (row, col), column = wrong[0]
        column_major = all(moved_to == c * gh + r for (r, c), moved_to in moved.items())
        raise AssertionError(
            ("patch columns are column-major: " if column_major else "")
            + f"repainting patch (row {row}, column {col}) of the {gh}×{gw} grid moved attention column {column} "
            f"of layer {layer} most, not {row * gw + col}: flatten patches row-major (column p = row p // grid_w, "
            "column p % grid_w)"
        )

    def gradients(self) -> None:
        text = self.adapter.tokenize(self.prompts[:2])
        out = self.forward(self.pixels(2), text, self.layers)
        grads = torch.autograd.grad(out.match_logit.sum(), out.attentions, allow_unused=True)
        for layer, grad in zip(self.layers, grads):
            assert grad is not None, (
                f"the match logit does not depend on the attention of layer {layer}: return the very tensor the "
                "model used (a copy or a recomputation is outside its graph)"
            )
            assert out.text_image(grad, layer).abs().sum() > 0, (
                f"zero gradient on the text→image block of layer {layer}"
            )
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
            _close(out.text_image(grad, layer), ref, self.rtol, self.atol, f"gradient of layer {layer}")
        return None

    def broadcasting(self) -> None:
        text = self.adapter.tokenize(self.prompts)
        k = len(self.prompts)
        pixels = self.pixels(1, seed=8)
        one = self.forward(pixels, text, self.layers[:1])
        repeated = self.forward(pixels.expand(k, -1, -1, -1), text, self.layers[:1])
        assert tuple(one.match_logit.shape) == (k,), f"1 image × {k} prompts gave logits {tuple(one.match_logit.shape)}"
        _close(one.match_logit, repeated.match_logit, self.rtol, self.atol, "match logit")
        blocks = [out.text_image(out.attentions[0].detach(), self.layers[0]) for out in (one, repeated)]
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
        index = gw + 1 if gh > 1 and gw > 1 else 0
        drop[0, index] = True
        masked = self.adapter.mask_patches(pixels, drop)
        changed = (masked != pixels).any(dim=1)  # (B, H, W)
        cells = changed.view(2, gh, p, gw, p).any(dim=(2, 4)).flatten(1)
        where = f"patch {index} (row {index // gw}, column {index % gw})"
        assert cells.any(), (
            f"mask_patches changed nothing when asked to drop {where}: hide the dropped patches "
            "(pnpseg.BaseAdapter.mask_patches sets them to 0, the mean colour)"
        )
        others = [int(i) for i in (cells & ~drop).nonzero()[:, 1]] if (cells & ~drop).any() else []
        assert torch.equal(cells, drop), (
            f"asked to drop {where}, mask_patches changed patches {sorted(set(others))[:4]}: patches are "
            "row-major (patch p at row p // grid_w, column p % grid_w)"
        )

    def chunking(self) -> None:
        names = self.class_names
        # the same class name, so that errors name the adapter under test
        adapter = type(type(self.adapter).__name__, (_ShortText,), {})(self.adapter, names)
        rng = np.random.default_rng(1)
        image = Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8))
        # The lowest requested layer whose class maps are not all zero: comparing zeros with
        # zeros (the last layer's class rows get no gradient in most models) proves nothing.
        for layer in sorted(set(self.layers)):
            segmenter = Segmenter(adapter, layer=layer + 1, head=1, drop_rounds=1, postprocess=(), image_size=self.size)
            together = segmenter.saliency([image], [names])[0]
            if together.abs().sum() > 0:
                break
        else:
            raise AssertionError(
                f"the class maps of head 1 are zero in every requested layer {sorted(set(self.layers))}: the match "
                "logit must depend on the class tokens' attention (request a layer below the last)"
            )
        chunks = segmenter.plan(names)
        assert len(chunks) >= 2, "the class names fit in one prompt even with a short text limit"
        scale = together.abs().max()  # maps of random weights can be tiny: compare them at scale 1
        lengths = [int(n) for n in self.adapter.tokenize([c.prompt for c in chunks]).attention_mask.sum(1)]
        # the longest chunk (no padding in the batch) and the shortest (the most padding)
        for i in sorted({lengths.index(max(lengths)), lengths.index(min(lengths))}):
            chunk = chunks[i]
            alone = segmenter.saliency([image], [[names[k] for k in chunk.classes]])[0] / scale
            try:
                _close(
                    together[list(chunk.classes)] / scale,
                    alone,
                    self.rtol,
                    self.atol,
                    f"maps of chunk {chunk.prompt!r}",
                )
            except AssertionError as error:
                raise AssertionError(
                    f"{error} between a padded batch and the chunk alone (layer {layer}): padding leaks into "
                    "the class maps; pass the text attention mask to the model"
                ) from None

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
    with torch.enable_grad():
        out = adapter.forward(pixels, text, [layer])
    base = out.text_image(out.attentions[0].detach(), layer).clamp(min=1e-30)
    grid_h, grid_w = out.grid
    p = adapter.patch_size
    g = torch.Generator().manual_seed(seed)
    for row, col in cells(grid_h, grid_w):
        changed = pixels.clone()
        noise = 2 * torch.randn(3, p, p, generator=g)
        changed[:, :, row * p : (row + 1) * p, col * p : (col + 1) * p] = noise.to(pixels.device)
        with torch.enable_grad():
            out2 = adapter.forward(changed, text, [layer])
        log_ratio = (out2.text_image(out2.attentions[0].detach(), layer).clamp(min=1e-30) / base).log()
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


def _depends(output: torch.Tensor, tensor: torch.Tensor) -> bool:
    """Whether ``output`` is computed from ``tensor`` (a weighted sum: a softmax's plain sum is constant)."""
    if not (output.requires_grad and tensor.requires_grad):
        return False
    weights = torch.rand(output.shape, generator=torch.Generator().manual_seed(0)).to(output.device, output.dtype)
    (grad,) = torch.autograd.grad((output * weights).sum(), tensor, retain_graph=True, allow_unused=True)
    return grad is not None and bool(grad.abs().sum() > 0)


def _close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float, what: str) -> None:
    try:
        torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)
    except AssertionError as error:
        raise AssertionError(f"{what} differs: {_one_line(error)}") from None


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = "; ".join(lines[:3]) if lines else type(error).__name__
    return f"{type(error).__name__}: {text}" if not isinstance(error, AssertionError) else text
