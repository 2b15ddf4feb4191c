"""One typed parameter model: flags, presets and Python keywords validate alike (issues 11, 12.4, 13.7)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from pnpseg.errors import PnpsegError
from pnpseg.io.preset import PresetError, choose_method, load_preset, preset_schema
from pnpseg.method.params import ParamsError, SegmentParams
from pnpseg.method.segmenter import Segmenter
from pnpseg.testing import make_scene
from pnpseg.testing.synthetic import SyntheticAdapter

SCHEMA = Path(__file__).parents[1] / "docs" / "preset.schema.json"

BAD = [
    ({"blur_sigma": math.nan}, "blur_sigma.*finite"),
    ({"blur_sigma": math.inf}, "blur_sigma.*finite"),
    ({"max_postprocess_side": 0}, "max_postprocess_side.*greater than or equal to 1"),
    ({"layer": 2.7}, "layer.*fractional"),
    ({"background": "no"}, "background.*boolean or 'if-fewer-prompted:N'"),
    ({"background": "if-fewer:0"}, "background.*N ≥ 1"),
    ({"background": 1}, "background"),
    ({"crf_iterations": -1}, "crf_iterations.*greater than or equal to 1"),
    ({"drop_rule": 5}, "drop_rule.*string"),
    ({"drop_rule": "topk:0"}, "drop rule must be"),
    ({"threshold": 1.0}, "threshold.*less than 1"),
    ({"image_size": [0, 32]}, "image_size.*greater than or equal to 1"),
    ({"compat": "pape"}, "compat.*'paper' or 'authors'"),
    ({"colour": 1}, "unknown parameter 'colour'"),
]


@pytest.mark.parametrize(("values", "message"), BAD)
def test_bad_values_are_one_line_errors_in_python(values, message):
    with pytest.raises(ParamsError, match=message) as caught:
        SegmentParams(**values)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("values", "message"), BAD)
def test_bad_values_in_a_preset_are_refused(tmp_path, values, message):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"format": "pnpseg-preset", "version": 1, "params": values}, allow_nan=True))
    with pytest.raises(PresetError, match=message):
        load_preset(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"version": "2"}, "version: input should be a valid integer"),
        ({"version": 2}, "version 2 is not supported"),
        ({"adaptor": "blip"}, "unknown key 'adaptor'"),
    ],
)
def test_preset_envelope_is_checked(tmp_path, data, message):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"format": "pnpseg-preset", "params": {}, **data}))
    with pytest.raises(PresetError, match=message):
        load_preset(path)


def test_flags_validate_before_any_model_loads():
    with pytest.raises(ParamsError, match="blur_sigma"):
        choose_method(None, "synthetic", None, {"blur_sigma": math.nan, "layer": None})
    choice = choose_method(None, None, None, {"layer": 3, "head": None})
    assert (choice.adapter, choice.params) == ("blip", {"layer": 3})


def test_adapters_state_only_what_differs():
    from pnpseg_blip import BlipAdapter
    from pnpseg_bridgetower import BridgeTowerAdapter
    from pnpseg_flava import FlavaAdapter
    from pnpseg_vilt import ViltAdapter

    defaults = SegmentParams().to_dict()
    for adapter in (BlipAdapter, BridgeTowerAdapter, FlavaAdapter, ViltAdapter, SyntheticAdapter):
        for key, value in adapter.default_params.items():
            assert SegmentParams.build({key: value}).to_dict()[key] != defaults[key], (adapter.__name__, key)


def test_image_size_records_the_size_used_and_refuses_less_than_a_patch():
    adapter = SyntheticAdapter()  # 16-pixel patches
    segmenter = Segmenter(adapter, image_size=70)
    assert segmenter.input_size == (64, 64) and segmenter.params.image_size == (64, 64)
    with pytest.raises(PnpsegError, match="smaller than one 16-pixel patch"):
        Segmenter(adapter, image_size=8)


def test_published_preset_schema_is_in_sync():
    schema = json.dumps(preset_schema(), indent=2, ensure_ascii=False) + "\n"
    if os.environ.get("PNPSEG_UPDATE_SCHEMA"):
        SCHEMA.write_text(schema, encoding="utf-8")
    assert SCHEMA.read_text(encoding="utf-8") == schema, "run PNPSEG_UPDATE_SCHEMA=1 pytest tests/test_params.py"


def test_background_if_fewer_is_decided_per_image_by_its_class_count():
    params = SegmentParams(background="if-fewer-prompted:3")
    assert [params.background_for(k) for k in (1, 2, 3, 7)] == [True, True, False, False]
    assert SegmentParams().background_for(9) and not SegmentParams(background=False).background_for(1)
    image, _ = make_scene(64, 96, ["red", "green", "blue"], seed=2)
    segmenter = Segmenter(SyntheticAdapter(), image_size=(64, 96), background="if-fewer-prompted:3")
    two, three = segmenter(image, ["red", "green"]), segmenter(image, ["red", "green", "blue"])
    assert two.background and (two.labels == 0).any()  # the dark background and blue's blob
    assert not three.background and (three.labels > 0).all()


def test_the_old_background_spelling_still_works_and_says_it_will_go():
    """``if-fewer:N`` (issue 20) did not say what it counts: it is ``if-fewer-prompted:N`` now,
    the old spelling respelled with a deprecation warning, from Python and from a preset."""
    from pnpseg.errors import PnpsegDeprecationWarning

    with pytest.warns(PnpsegDeprecationWarning, match="'if-fewer:3' is spelled 'if-fewer-prompted:3' now"):
        old = SegmentParams(background="if-fewer:3")
    assert old == SegmentParams(background="if-fewer-prompted:3") and old.background == "if-fewer-prompted:3"
    with pytest.warns(PnpsegDeprecationWarning):
        assert SegmentParams.build({"background": "if-fewer:2"}).background == "if-fewer-prompted:2"
    with pytest.raises(ParamsError, match="N ≥ 1"), pytest.warns(PnpsegDeprecationWarning):
        SegmentParams(background="if-fewer:0")
