"""The core checks what an adapter returns: a broken adapter is one line naming it and the
clause it broke, not a torch error from deep inside the method."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import pnpseg
from pnpseg.method.segmenter import Segmenter
from pnpseg.sources.class_sources import itm_scores
from pnpseg.testing import SyntheticAdapter, make_scene


class ExtraColumn(SyntheticAdapter):
    """Keys ``[image CLS; patches]`` but no ``to_text_image`` that drops the CLS column."""

    def forward(self, pixels, text, layers):
        out = super().forward(pixels, text, layers)
        attentions = [torch.cat([a[..., :1], a], -1) for a in out.attentions]
        logit = out.match_logit + sum(a.sum((1, 2, 3)) for a in attentions)  # the logit uses them
        return dataclasses.replace(out, match_logit=logit, attentions=attentions)


class Detached(SyntheticAdapter):
    def forward(self, pixels, text, layers):
        out = super().forward(pixels, text, layers)
        return dataclasses.replace(out, attentions=[a.detach() for a in out.attentions])


class ColumnLogit(SyntheticAdapter):
    def forward(self, pixels, text, layers):
        out = super().forward(pixels, text, layers)
        return dataclasses.replace(out, match_logit=out.match_logit[:, None])


class OneLayerTooMany(SyntheticAdapter):
    def forward(self, pixels, text, layers):
        out = super().forward(pixels, text, layers)
        return dataclasses.replace(out, attentions=out.attentions * 2)


class TransposedGrid(SyntheticAdapter):
    def forward(self, pixels, text, layers):
        out = super().forward(pixels, text, layers)
        return dataclasses.replace(out, grid=out.grid[::-1])


def segment(adapter):
    image, _ = make_scene(64, 96, ["red", "blue"], seed=0)
    segmenter = Segmenter(adapter, image_size=(64, 96), postprocess=(), drop_rounds=2)
    return segmenter(image, ["red", "blue"])


@pytest.mark.parametrize(
    ("adapter_class", "clause"),
    [
        (ExtraColumn, "attention block shape"),
        (Detached, "graph-connected attention"),
        (ColumnLogit, "match logit shape"),
        (OneLayerTooMany, "one attention per layer"),
        (TransposedGrid, "grid"),
    ],
)
def test_broken_adapter_is_one_line_naming_adapter_and_clause(adapter_class, clause):
    with pytest.raises(pnpseg.AdapterError) as info:
        segment(adapter_class())
    message = str(info.value)
    assert f"adapter {adapter_class.__name__} broke the protocol ({clause})" in message
    assert "\n" not in message


def test_extra_column_message_gives_both_shapes():
    with pytest.raises(pnpseg.AdapterError, match=r"gave \(1, 4, 7, 25\).*= \(1, 4, 7, 24\)"):
        segment(ExtraColumn())


def test_itm_class_source_checks_the_logit_shape():
    image, _ = make_scene(64, 96, ["red"], seed=0)
    segmenter = Segmenter(ColumnLogit(), image_size=(64, 96), postprocess=())
    with pytest.raises(pnpseg.AdapterError, match="match logit shape"):
        itm_scores(segmenter, image, ["red", "blue", "green"])


def test_a_good_adapter_passes():
    assert segment(SyntheticAdapter()).saliency.shape == (2, 4, 6)
