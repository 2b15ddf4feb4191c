"""``--class-source file:PATH,format=gpt4o``: the authors' released GPT-4o class lists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_class_sources import N_IMAGES, VOCAB, records, scenes, segment  # noqa: F401 (fixture)

from pnpseg import PnpsegError
from pnpseg.sources.class_sources import build_class_source, split_file_options
from pnpseg.sources.gpt4o import class_index, parse_answer, read_gpt4o

# Their answers, as written in GPT4o_classification/*.json (quoted and bare names, % or not).
VOC_FILE = {
    "2007_000129": "[2: 'bicycle', 15: 'person'], [100, 100]",
    "2007_000187": "[20: 'tvmonitor', 15: 'person'], [90, 10]",
    "2007_000452": "[18: 'sofa', 11: 'table'], [95, 70]",
    "2007_000529": "[4: 'boat', 7: 'car', 15: 'person'], [90, 71%, 50]",
    "2007_000999": "[9: chair], [40%]",
    "2007_001000": "",
}


def test_parse_answer_reads_every_released_form():
    assert parse_answer("[2: 'bicycle', 15: 'person'], [100, 100]") == [(2, 100.0), (15, 100.0)]
    assert parse_answer("[1: 'aeroplane'], [100%]") == [(1, 100.0)]
    assert parse_answer("[119: flower, 86: vase], [95% probability of flower, 90% probability of vase]") == [
        (119, 95.0),
        (86, 90.0),
    ]
    assert parse_answer("[2: 'building;edifice', 3: 'sky']\n\n[100%, 60%]") == [(2, 100.0), (3, 60.0)]
    assert parse_answer("[44: bottle, 52: banana]") == [(44, 100.0), (52, 100.0)]  # no confidences: 100
    assert parse_answer("") == []
    with pytest.raises(ValueError):
        parse_answer("I cannot tell")


def test_voc_file_keeps_confidence_over_70_in_answer_order(tmp_path):
    path = tmp_path / "voc_classification_noboundary.json"
    path.write_text(json.dumps(VOC_FILE))
    rows = dict(read_gpt4o(path, class_index("voc21", []), 70))
    assert rows == {
        "2007_000129": ["bicycle", "person"],
        "2007_000187": ["tv monitor"],  # index 20: the dataset's name, whatever the answer says
        "2007_000452": ["sofa"],  # 70 is not over 70
        "2007_000529": ["boat", "car"],
        "2007_000999": ["aeroplane"],  # nothing over 70: class 1
        "2007_001000": ["aeroplane"],  # empty answer: class 1
    }
    assert dict(read_gpt4o(path, class_index("voc21", []), 50))["2007_000452"] == ["sofa", "dining table"]


def test_coco_answers_use_category_ids(tmp_path):
    path = tmp_path / "coco_object_classification_noboundary.json"
    path.write_text(
        json.dumps(
            {
                "000000397133": "[1: person, 44: bottle, 90: toothbrush], [100, 90, 80]",
                "000000285349": "[0: None], [100]",
            }
        )
    )
    rows = dict(read_gpt4o(path, class_index("coco-object", []), 70))
    assert rows == {"000000397133": ["person", "bottle", "toothbrush"], "000000285349": ["person"]}
    stuff = class_index("coco-stuff", [])
    assert (stuff[92], stuff[182], len(stuff)) == ("banner", "wood", 171)


def test_file_options_and_their_errors(tmp_path):
    assert split_file_options("a,b.json,format=gpt4o,min_confidence=50") == (
        "a,b.json",
        {"format": "gpt4o", "min_confidence": 50.0},
    )
    assert split_file_options("lists.json") == ("lists.json", {})
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"s0": "[1: red], [90]"}))
    with pytest.raises(PnpsegError, match="need format=gpt4o"):
        build_class_source(f"file:{path},min_confidence=50", VOCAB)
    with pytest.raises(PnpsegError, match="bad value"):
        build_class_source(f"file:{path},format=gpt5", VOCAB)
    with pytest.raises(PnpsegError, match="bad value"):
        build_class_source(f"file:{path},format=gpt4o,min_confidence=170", VOCAB)
    with pytest.raises(PnpsegError, match="not in --classes"):
        build_class_source(f"file:{path},format=gpt4o,dataset=voc21", VOCAB)


@pytest.mark.slow
def test_segment_with_a_gpt4o_file(scenes, tmp_path):  # noqa: F811 (fixture)
    root, _ = scenes
    answers = {f"s{i}": "[3: 'x', 1: 'y', 3: 'again'], [90%, 100, 95]" for i in range(N_IMAGES)}
    answers["s1"] = "[2: whatever], [60]"
    path = tmp_path / "answers.json"
    path.write_text(json.dumps(answers))
    out = tmp_path / "out"
    result = segment(root, out, f"file:{path},format=gpt4o")
    assert result.exit_code == 0, result.output
    recs = records(out)
    # Index i is the i-th --classes name; the answer's order is the prompt's order.
    assert recs["s0"]["class_source"]["classes"] == [VOCAB[2], VOCAB[0]]
    assert recs["s1"]["class_source"]["classes"] == [VOCAB[0]]
    assert Path(out / "s0.png").is_file()


def test_a_datasets_index_is_read_from_its_shipped_class_list():
    """``dataset=`` reads the built-in list (no dataset folder, no evaluation import); a name
    with no shipped list is one line naming those that have one."""
    import subprocess
    import sys

    from pnpseg.sources.gpt4o import class_index

    code = (
        "import sys; from pnpseg.sources.gpt4o import class_index; "
        "i = class_index('pc59', []); print(len(i), i[1], i[59]); "
        "print(any(m.startswith('pnpseg.evaluation') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == ["59 aeroplane wood", "False"], out
    assert class_index("voc21", [])[15] == "person" and len(class_index("voc21", [])) == 20
    assert len(class_index("coco-stuff", [])) == 171 and class_index("coco-object", [])[90] == "toothbrush"
    with pytest.raises(PnpsegError, match="dataset=mine: no class list ships for dataset 'mine'; known: voc21, "):
        class_index("mine", [])
