"""``--compat authors``: the released code's four quirks, each on a hand-computed case."""

import numpy as np
import torch
from fakes import LinearAdapter, word_tokenize
from PIL import Image

from pnpseg.method import saliency
from pnpseg.method.compat import piece_sums
from pnpseg.method.dropout import drop_patches, drop_topk
from pnpseg.method.gradcam import class_maps
from pnpseg.method.params import SegmentParams
from pnpseg.method.postprocess import build_chain
from pnpseg.method.prompts import plan_prompts, token_weights
from pnpseg.method.saliency import Batch, saliency_maps
from pnpseg.method.segmenter import finish_image as finish

# "A picture of traffic light cat": [CLS] A picture of traffic light cat [SEP] → tokens 4, 5 | 6.
CAM = torch.zeros(1, 8, 3)
CAM[0, 4] = torch.tensor([0.0, 3.0, 0.0])  # traffic
CAM[0, 5] = torch.tensor([0.0, 3.0, 0.0])  # light
CAM[0, 6] = torch.tensor([5.0, 0.0, 0.0])  # cat


def test_compat_selects_its_drop_rule_unless_one_is_given():
    assert SegmentParams().drop_rule == "median"
    assert SegmentParams(compat="authors").drop_rule == "topk:10"
    assert SegmentParams.build({"compat": "authors"}, {"drop_rule": None}).drop_rule == "topk:10"
    assert SegmentParams.build({"compat": "authors", "drop_rule": "median"}).drop_rule == "median"
    assert SegmentParams.build({"compat": "authors", "drop_rule": "topk:3"}).to_dict()["drop_rule"] == "topk:3"


def test_drop_score_counts_every_word_piece():
    # Paper: class maps averaged, then summed: traffic light = [0, 3, 0], cat = [5, 0, 0] → [5, 3, 0].
    # Authors: the class-token rows summed: 3 + 3 on patch 1, 5 on patch 0 → [5, 6, 0].
    plan = plan_prompts(["traffic light", "cat"], word_tokenize, 16)
    weights = token_weights(plan, 8, 2, "authors")
    paper_score = class_maps(CAM, token_weights(plan, 8, 2)).sum(1)
    authors_score = piece_sums(CAM, (weights > 0).float(), torch.tensor([0]), 1)
    assert paper_score.tolist() == [[5.0, 3.0, 0.0]]
    assert authors_score.tolist() == [[5.0, 6.0, 0.0]]
    none = torch.zeros(1, 3, dtype=torch.bool)
    assert drop_patches("topk:1", paper_score, none).tolist() == [[True, False, False]]
    assert drop_patches("topk:1", authors_score, none, "authors").tolist() == [[False, True, False]]


def test_last_multi_piece_class_is_summed_not_averaged():
    # "A picture of traffic light big dog": traffic light = tokens 4, 5; big dog = 6, 7 (last).
    plan = plan_prompts(["traffic light", "big dog"], word_tokenize, 16)
    cam = torch.zeros(1, 9, 2)
    cam[0, 4], cam[0, 5], cam[0, 6], cam[0, 7] = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]])
    assert class_maps(cam, token_weights(plan, 9, 2)).tolist() == [[[2.0, 0.0], [0.0, 3.0]]]
    assert class_maps(cam, token_weights(plan, 9, 2, "authors")).tolist() == [[[2.0, 0.0], [0.0, 6.0]]]


def test_topk_fills_missing_slots_with_zero_saliency_patches():
    saliency = torch.tensor([[0.0, 0.5, 0.0, 0.2, 0.0]])
    none = torch.zeros(1, 5, dtype=torch.bool)
    # Two positive patches for four slots: paper drops two, authors fill with zeros, highest index first.
    assert drop_topk(saliency, none, 4).tolist() == [[False, True, False, True, False]]
    assert drop_patches("topk:4", saliency, none, "authors").tolist() == [[False, True, True, True, True]]
    # An already-dropped patch scores 0 too; the slot it takes drops nothing new.
    dropped = torch.tensor([[False, False, False, False, True]])
    assert drop_patches("topk:3", saliency, dropped, "authors").tolist() == [[False, True, False, True, False]]


def test_empty_background_channel_labels_the_whole_image_background():
    # Every pixel keeps a positive class score, so the background channel is all zero: the
    # authors' blur divides it by its maximum (0/0 = NaN) and the argmax picks background.
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8))
    saliency = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    results = {}
    for compat in ("paper", "authors"):
        for chain in (("blur",), ("blur", "crf")):
            params = SegmentParams(threshold=0.0, postprocess=chain, compat=compat)
            result = finish(image, saliency, ["cat"], params, build_chain(chain))
            results[compat, chain] = result
    for chain in (("blur",), ("blur", "crf")):
        assert (results["authors", chain].labels == 0).all()
        assert torch.isnan(results["authors", chain].scores[0]).all()
        assert (results["paper", chain].labels == 1).any()


def released_saliency(adapter, pixels, prompt, class_tokens, rounds, k):
    """The released code's loop written out plainly: patch lists, per-token rows, argsort."""
    text = word_tokenize([prompt])
    dropped: list[int] = []
    per_round = []
    for _round in range(rounds):
        image = pixels.clone()
        image[0, 0].view(-1)[dropped] = 0.0
        attention = adapter.attention(image, text).requires_grad_(True)
        (attention * adapter.values[None, :, : attention.shape[2]]).sum().backward()
        head = (attention.grad.clamp(min=0) * attention.detach())[0, 0]
        maps = []
        for c, tokens in enumerate(class_tokens):
            merged = head[tokens].sum(0)
            maps.append(merged / len(tokens) if c + 1 < len(class_tokens) else merged)
        maps = torch.stack(maps)
        maps[:, dropped] = 0
        per_round.append(maps)
        score = head[[t for tokens in class_tokens for t in tokens]].sum(0).numpy().copy()
        score[dropped] = 0
        dropped += np.argsort(score, kind="stable")[-k:].tolist()
    return per_round[0] + sum(per_round)


def test_saliency_rounds_match_the_released_loop(monkeypatch):
    # Seed and offset chosen so that averaging the drop score (the paper's) drops other patches.
    torch.manual_seed(4)
    adapter = LinearAdapter(torch.rand(2, 10, 6) - 0.5)
    pixels = torch.rand(1, 1, 2, 3)
    params = SegmentParams.build(adapter.default_params, {"drop_rounds": 3, "compat": "authors", "drop_rule": "topk:2"})
    plan = plan_prompts(["traffic light", "cat", "big dog"], adapter.tokenize, 16)
    calls = []
    monkeypatch.setattr(saliency, "drop_patches", lambda *args: calls.append(args) or drop_patches(*args))
    maps = saliency_maps(adapter, pixels, Batch.build([plan], [3]), params)[0]
    expected = released_saliency(adapter, pixels, "A picture of traffic light cat big dog", [[4, 5], [6], [7, 8]], 3, 2)
    assert torch.allclose(maps.flatten(1), expected, atol=1e-6)
    assert [(rule, compat) for rule, _, _, compat in calls] == [("topk:2", "authors")] * 2
