"""The mutant catalogue: deliberately broken adapters that ``check_adapter`` must fail by default.

Each mutant makes one realistic mistake of a plugin author, on the synthetic adapter or on a
tiny real BLIP; ``check_adapter`` with default arguments must fail it in the clause that
tests that mistake, with a message that names the mistake and its fix, and no two mutants
may get the same message.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pnpseg.testing import SyntheticAdapter, check_adapter

pytest.importorskip("pnpseg_blip")

from pnpseg_blip import BlipAdapter  # noqa: E402

# -- the mistakes, as mixins over any adapter ------------------------------------------------


class OneBasedLayers:
    """Reads ``layers`` as 1-based: ``layer[i - 1]``, so layer 0 silently becomes the last."""

    def forward(self, pixels, text, layers):
        out = super().forward(pixels, text, [(i - 1) % self.num_layers for i in layers])
        return out


class ColumnMajor:
    """Flattens the patch grid column by column."""

    def forward(self, pixels, text, layers):
        out = super().forward(pixels, text, layers)
        gh, gw = out.grid
        slicing = out.text_image

        def to_text_image(tensor, layer):
            block = slicing(tensor, layer)
            return block.unflatten(-1, (gh, gw)).transpose(-1, -2).flatten(-2)

        return dataclasses.replace(out, to_text_image=to_text_image)


class IgnoresTextMask:
    """Never passes the text attention mask to the model: padding leaks into the maps."""

    def forward(self, pixels, text, layers):
        return super().forward(
            pixels, dataclasses.replace(text, attention_mask=torch.ones_like(text.attention_mask)), layers
        )


class MasksNothing:
    """``mask_patches`` returns the pixels unchanged."""

    def mask_patches(self, pixels, drop):
        return pixels


class Detached:
    """Returns detached copies of the attention."""

    def forward(self, pixels, text, layers):
        out = super().forward(pixels, text, layers)
        return dataclasses.replace(out, attentions=[a.detach() for a in out.attentions])


class GridWH:
    """Reports the grid as (W, H)."""

    def forward(self, pixels, text, layers):
        out = super().forward(pixels, text, layers)
        return dataclasses.replace(out, grid=out.grid[::-1])


class PreSoftmax:
    """Returns the attention scores the model took the softmax of (synthetic model only)."""

    def _attend(self, scores):
        probs, _ = super()._attend(scores)
        return probs, scores


class SoftmaxOverQueries:
    """Normalises over the tokens (queries) instead of the patches (keys) (synthetic model only)."""

    def _attend(self, scores):
        probs = torch.softmax(scores, dim=-2)
        return probs, probs


#: mutant name → (mistake, clause it must fail, words its message must contain).
CATALOGUE = {
    "pre-softmax scores": (PreSoftmax, "attention values", "not probabilities (min"),
    "softmax over the queries": (SoftmaxOverQueries, "attention values", "softmax over the keys (the last axis)"),
    "1-based layers": (OneBasedLayers, "layer numbering", "do not subtract 1"),
    "column-major patches": (ColumnMajor, "patch order", "patch columns are column-major"),
    "text mask ignored": (IgnoresTextMask, "chunking equivalence", "padding leaks into the class maps"),
    "mask changes nothing": (MasksNothing, "masking", "mask_patches changed nothing"),
    "detached attention": (Detached, "attention block shape", "not detached"),
    "grid as (W, H)": (GridWH, "non-square grid", "that is (grid_w, grid_h)"),
}
#: Mistakes only a hand-written model can make (a Hugging Face attention computes its own softmax).
SYNTHETIC_ONLY = {"pre-softmax scores", "softmax over the queries"}
#: Padding cannot leak in the synthetic model: its tokens never attend to each other.
HF_ONLY = {"text mask ignored"}


def mutant(base, name):
    mistake = CATALOGUE[name][0]
    return type(f"{base.__name__}{mistake.__name__}", (mistake, base), {})


@pytest.fixture(scope="module")
def blip_reports(tiny_blip):
    names = [n for n in CATALOGUE if n not in SYNTHETIC_ONLY]
    return {n: check_adapter(mutant(BlipAdapter, n)(str(tiny_blip)), raise_on_failure=False) for n in names}


@pytest.fixture(scope="module")
def synthetic_reports():
    names = [n for n in CATALOGUE if n not in HF_ONLY]
    return {n: check_adapter(mutant(SyntheticAdapter, n)(), raise_on_failure=False) for n in names}


def _assert_caught(report, name):
    _, clause, words = CATALOGUE[name]
    assert not report, f"check_adapter passed the mutant {name!r}"
    assert clause in report.failed, f"{name}: {report}"
    assert words in report.failed[clause], f"{name}: {report.failed[clause]}"


@pytest.mark.parametrize("name", [n for n in CATALOGUE if n not in HF_ONLY])
def test_synthetic_mutant_fails_with_its_own_message(synthetic_reports, name):
    _assert_caught(synthetic_reports[name], name)


@pytest.mark.parametrize("name", [n for n in CATALOGUE if n not in SYNTHETIC_ONLY])
def test_blip_mutant_fails_with_its_own_message(blip_reports, name):
    _assert_caught(blip_reports[name], name)


def test_messages_are_distinct(synthetic_reports, blip_reports):
    for reports in (synthetic_reports, blip_reports):
        messages = {name: reports[name].failed[CATALOGUE[name][1]] for name in reports}
        assert len(set(messages.values())) == len(messages), messages


def test_the_mistakes_of_the_issue_table_fail_only_their_clause(synthetic_reports, blip_reports):
    """Nothing else breaks with these mistakes, so only the new clause stands between them and
    plausible masks: each must be its clause's failure alone."""
    assert set(synthetic_reports["pre-softmax scores"].failed) == {"attention values"}
    assert set(synthetic_reports["1-based layers"].failed) == {"layer numbering"}
    assert set(blip_reports["1-based layers"].failed) == {"layer numbering"}
    assert set(blip_reports["column-major patches"].failed) == {"patch order", "layer numbering"}
    assert "values in other patch columns" in blip_reports["column-major patches"].failed["layer numbering"]
    # the model's own maps get the mask, so they differ too
    assert set(blip_reports["text mask ignored"].failed) == {"chunking equivalence", "layer numbering"}
    assert "the text attention mask included" in blip_reports["text mask ignored"].failed["layer numbering"]
    assert set(blip_reports["mask changes nothing"].failed) == {"masking"}


def test_messages_name_values_and_layers(synthetic_reports, blip_reports):
    scores = synthetic_reports["pre-softmax scores"].failed["attention values"]
    assert scores.startswith("attention values of layer 3 are not probabilities (min -")
    assert ": return the softmax output, not the scores" in scores
    layers = blip_reports["1-based layers"].failed["layer numbering"]
    assert layers.startswith("forward's layer 2 is the model's own layer 1 (0-based)")
    order = blip_reports["column-major patches"].failed["patch order"]
    assert "of the 2×3 grid moved attention column" in order
