"""The HFAdapter contract: required class attributes are checked when a subclass is
defined, the rest is derived, sizes come from overridable hooks."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from pnpseg_hf import HFAdapter  # noqa: E402


def forward(self, pixels, text, layers):
    raise NotImplementedError


def test_missing_attributes_fail_at_class_definition():
    # docs/adapters.md once said "subclass HFAdapter and write only forward": that crashed
    # later with AttributeError 'adapter_name'. Now the class statement itself fails.
    with pytest.raises(TypeError, match=r"OnlyForward must define adapter_name, default_model, model_class \("):
        type("OnlyForward", (HFAdapter,), {"forward": forward})


def test_missing_forward_fails_at_class_definition():
    attributes = {"adapter_name": "x", "default_model": "org/x", "model_class": "FlavaForPreTraining"}
    with pytest.raises(TypeError, match=r"NoForward must define forward\(\)"):
        type("NoForward", (HFAdapter,), attributes)


def test_abstract_bases_are_not_checked_and_defaults_are_derived():
    class Base(HFAdapter, abstract=True):
        model_class = "FlavaForPreTraining"

        def forward(self, pixels, text, layers):
            raise NotImplementedError

    class Family(Base):
        adapter_name = "family"
        default_model = "org/family"

    assert Family.display_name == "family"
    assert Family.model_description == "family image-text-matching model"
    assert Family.checkpoint_description == "family checkpoint"
    assert Family.processor_class == "AutoProcessor"
    assert Base.display_name is None  # nothing derived for an abstract base
