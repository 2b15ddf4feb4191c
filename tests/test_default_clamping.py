"""Default layer and head are clamped to a checkpoint smaller than the defaults; explicit
values are not."""

from __future__ import annotations

import pytest

import pnpseg
from pnpseg.method.params import adapter_defaults
from pnpseg.method.segmenter import Segmenter
from pnpseg.testing import SyntheticAdapter


class SmallCheckpoint(SyntheticAdapter):
    """Defaults written for a 12-layer × 12-head model, on a 4 × 4 one."""

    default_params = {**SyntheticAdapter.default_params, "layer": 8, "head": 10}


class NoLayerDefaults(SyntheticAdapter):
    default_params = {"image_size": (64, 64)}


def test_defaults_beyond_the_model_are_clamped():
    segmenter = Segmenter(SmallCheckpoint())
    assert (segmenter.params.layer, segmenter.params.head) == (3, 4)  # the last layer but one
    kept = pnpseg.SegmentParams.build(adapter_defaults(SmallCheckpoint()))  # other defaults untouched
    assert (kept.threshold, kept.blur_sigma) == (0.15, 0.02)


def test_the_core_defaults_are_clamped_too():
    segmenter = Segmenter(NoLayerDefaults())  # SegmentParams' own layer 8, head 10
    assert (segmenter.params.layer, segmenter.params.head) == (3, 4)


def test_defaults_within_the_model_are_kept():
    assert (Segmenter(SyntheticAdapter()).params.layer, Segmenter(SyntheticAdapter()).params.head) == (3, 2)


def test_explicit_values_are_not_clamped():
    with pytest.raises(pnpseg.PnpsegError, match="layer 8, head 1 out of range"):
        Segmenter(SmallCheckpoint(), layer=8, head=1)
    with pytest.raises(pnpseg.PnpsegError, match="out of range"):
        Segmenter(SmallCheckpoint(), pnpseg.SegmentParams(layer=2, head=9))
