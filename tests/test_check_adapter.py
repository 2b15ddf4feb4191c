"""``pnpseg.testing.check_adapter`` passes a good adapter and names every clause a broken one breaks."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_adapter_validation import ColumnLogit, Detached, ExtraColumn, TransposedGrid

from pnpseg.testing import CLAUSES, AdapterCheckError, SyntheticAdapter, check_adapter


def test_synthetic_adapter_passes_every_clause():
    report = check_adapter(SyntheticAdapter())
    assert report and not report.failed
    assert report.skipped == {
        "exact gradients": "no reference_gradients given",
        "vision modules": "no vision_modules()",
    }
    assert set(report.passed) == set(CLAUSES) - {"exact gradients", "vision modules"}


def test_exact_gradients_against_a_reference():
    def reference(adapter, pixels, text, layers):
        out = adapter.forward(pixels, text, layers)
        return [out.to_text_image(g) for g in torch.autograd.grad(out.match_logit.sum(), out.attentions)]

    assert "exact gradients" in check_adapter(SyntheticAdapter(), reference_gradients=reference).passed

    def doubled(*args):
        return [2 * g for g in reference(*args)]

    report = check_adapter(SyntheticAdapter(), reference_gradients=doubled, raise_on_failure=False)
    assert list(report.failed) == ["exact gradients"]
    assert report.failed["exact gradients"].startswith("gradient of layer 3 differs")


class ShiftedOffsets(SyntheticAdapter):
    def tokenize(self, prompts):
        text = super().tokenize(prompts)
        offsets = [[(a + 1, b + 1) if b > a else (a, b) for a, b in row] for row in text.offsets]
        return dataclasses.replace(text, offsets=offsets)


class NoBroadcast(SyntheticAdapter):
    def forward(self, pixels, text, layers):
        if pixels.shape[0] != text.input_ids.shape[0]:
            raise ValueError("batch sizes differ")
        return super().forward(pixels, text, layers)


class Noisy(SyntheticAdapter):
    def forward(self, pixels, text, layers):
        out = super().forward(pixels, text, layers)
        return dataclasses.replace(out, match_logit=out.match_logit + torch.rand(out.match_logit.shape))


class MasksNothing(SyntheticAdapter):
    def mask_patches(self, pixels, drop):
        return pixels


class PaddingLeaks(SyntheticAdapter):
    """Each sample's logit depends on the padded prompt length: batching changes the maps."""

    def forward(self, pixels, text, layers):
        out = super().forward(pixels, text, layers)
        scale = 1.0 + 0.1 * text.input_ids.shape[1]
        return dataclasses.replace(out, match_logit=out.match_logit * scale)


@pytest.mark.parametrize(
    ("adapter_class", "clauses"),
    [
        (ExtraColumn, {"attention block shape", "layers=[]", "chunking equivalence"}),
        (Detached, {"attention block shape", "gradients exist", "chunking equivalence"}),
        (ColumnLogit, {"attention block shape", "batch broadcasting", "chunking equivalence"}),
        (TransposedGrid, {"non-square grid", "attention block shape", "chunking equivalence"}),
        (ShiftedOffsets, {"tokenizer offsets"}),
        (NoBroadcast, {"batch broadcasting"}),
        (Noisy, {"determinism", "batch broadcasting", "layers=[]"}),
        (MasksNothing, {"masking"}),
        (PaddingLeaks, {"chunking equivalence"}),
    ],
)
def test_broken_adapters_fail_the_clauses_they_break(adapter_class, clauses):
    report = check_adapter(adapter_class(), raise_on_failure=False)
    assert not report
    assert set(report.failed) == clauses, str(report)


def test_failure_raises_one_error_naming_each_failed_clause():
    with pytest.raises(AdapterCheckError) as info:
        check_adapter(Detached())
    message = str(info.value)
    assert message.splitlines()[0] == "Detached fails 3 clause(s):"
    assert "  gradients exist: RuntimeError: One of the differentiated Tensors does not require grad" in message
    assert "(graph-connected attention)" in message
    assert info.value.report.failed.keys() == {"attention block shape", "gradients exist", "chunking equivalence"}


def test_protocol_attributes_clause():
    adapter = SyntheticAdapter()
    adapter.num_heads = 0
    adapter.default_params = {"layer": 0}
    report = check_adapter(adapter, raise_on_failure=False)
    assert "num_heads is 0" in report.failed["protocol attributes"]


class DoubledLogit(SyntheticAdapter):
    def forward(self, pixels, text, layers):
        out = super().forward(pixels, text, layers)
        return dataclasses.replace(out, match_logit=2 * out.match_logit)


def test_compare_devices_passes_equal_adapters_and_catches_different_gradients():
    from pnpseg.testing import compare_devices

    compare_devices(SyntheticAdapter(), SyntheticAdapter(), (32, 48), [2])
    with pytest.raises(AssertionError, match="not close"):
        compare_devices(SyntheticAdapter(), DoubledLogit(), (32, 48), [2])
