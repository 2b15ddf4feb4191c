"""benchmarks/released.py: what it hands the authors' released code, and the baseline it times.

The benchmark itself needs their repository and the LAVIS environment, so it is not run
here; what can go wrong on this side is tested: the vocabulary their code reads ids from,
the VOC folder and GPT-4o file their loaders read, and the reproduced baseline keeping
ours' labels under both arithmetics (the benchmark runs it with ``--compat authors``).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pnpseg.method.params import SegmentParams
from pnpseg.method.segmenter import Segmenter
from pnpseg.sources.gpt4o import parse_answer

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    """The benchmark modules, imported as the scripts import each other."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module


def test_the_vocabulary_keeps_berts_ids_and_spells_two_names_in_word_pieces(tmp_path, bench):
    from transformers import BertTokenizer

    bench("released").write_vocab(tmp_path)
    lines = (tmp_path / "vocab.txt").read_text().splitlines()
    assert len(lines) == 30522  # bert-base-uncased's size: the checkpoint embeds 30522 + [DEC] + [ENC]
    assert [lines[i] for i in (0, 100, 101, 102, 103)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = BertTokenizer(vocab=str(tmp_path / "vocab.txt"))  # transformers 5; LAVIS 4.26 reads vocab_file=
    ids = tokenizer("A picture of aeroplane tvmonitor")["input_ids"]
    assert ids[0] == 101 and ids[-1] == 102  # their token merging stops at id 102
    assert tokenizer.tokenize("aeroplane table") == ["aeroplane", "table"]
    pieces = tokenizer.tokenize("pottedplant")
    assert len(pieces) > 1 and all(p.startswith("##") for p in pieces[1:])  # their "##" merging runs


def test_the_voc_folder_has_ids_their_code_takes_int_of_and_a_gpt4o_file_listing_all_20(tmp_path, bench):
    make_images = bench("bench_models").make_images
    by_content = {"scenes": make_images(tmp_path / "s", 2, "scenes"), "noise": make_images(tmp_path / "n", 1, "noise")}
    named = bench("released")._voc_named(tmp_path, by_content)
    ids = (tmp_path / "ids.txt").read_text().split()
    assert ids == [p.stem for paths in named.values() for p in paths]
    assert len({int(i) for i in ids}) == 3  # their captions_text_loc: int(img_id)
    home = bench("released_lavis").voc_home(tmp_path, ids)
    voc = home / "VOCdevkit" / "VOC2012"
    assert (voc / "val.txt").read_text().split() == ids
    for image_id in ids:  # an all-background mask the size of each image (their Load_GroundTruth)
        mask = np.asarray(Image.open(voc / "SegmentationClass" / f"{image_id}.png"))
        assert mask.shape == (375, 500) and not mask.any()
    answers = json.loads((home / "GPT4o_classification" / "voc_classification_noboundary.json").read_text())
    assert sorted(answers) == sorted(ids)
    assert parse_answer(answers[ids[0]]) == [(n, 100.0) for n in range(1, 21)]  # all 20, above their 70


@pytest.mark.slow
def test_the_reproduced_baseline_sums_ours_saliency_under_either_arithmetic(tmp_path, bench):
    build_blip, make_images = bench("bench_models").build_blip, bench("bench_models").make_images
    model_dir = build_blip(tmp_path / "blip", tiny=True)
    adapter = bench("run").loaded("blip", model_dir)
    (path,) = make_images(tmp_path / "images", 1, "scenes")
    classes = bench("bench_models").VOC
    saliency = {}
    for compat in ("paper", "authors"):
        params = SegmentParams.build(adapter.default_params, dict(image_size=64, compat=compat))
        baseline = bench("bench_baseline").run_baseline(adapter, [path], tmp_path / f"baseline-{compat}", params)
        ours = Segmenter(adapter, params=params)(Image.open(path), classes)
        torch.testing.assert_close(baseline["saliency"][path.name], ours.saliency, rtol=1e-4, atol=1e-9)
        assert (baseline["labels"][path.name] == ours.labels).mean() > 0.999  # near-ties aside
        saliency[compat] = ours.saliency
    # Round 1 counts twice in the released code: the arithmetics differ, so both were checked.
    assert not torch.allclose(saliency["paper"], saliency["authors"], rtol=0.1)
