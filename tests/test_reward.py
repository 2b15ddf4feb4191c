"""The CLIP reward (docs/method.md §5, eq. 4–5) on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pnpseg.tuning.capture import Captured, LabelledImage
from pnpseg.tuning.reward import RewardSummary, image_margins, image_reward, image_wins, total_reward
from pnpseg.tuning.stages import RewardEvaluator, Trial


def softmax(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def test_two_classes_both_win():
    # Pr(M_k ⊙ I, k) = e²/(e²+1) ≈ 0.881 > Pr(0, k) = 0.5 for both classes.
    masked = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    black = torch.tensor([0.0, 0.0])
    assert image_wins(masked, black).tolist() == [True, True]
    assert image_reward(masked, black) == 2
    assert image_margins(masked, black).tolist() == pytest.approx([math.e**2 / (math.e**2 + 1) - 0.5] * 2)


def test_mask_that_looks_like_another_class_loses():
    # Class 1's masked image looks like class 0: softmax([2, 0])[1] ≈ 0.119 < 0.5.
    masked = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    assert image_wins(masked, torch.zeros(2)).tolist() == [True, False]


def test_worked_example_of_the_docs():
    # docs/tuning.md: cat, dog, grass; grass's mask is empty (its masked image is black).
    black = torch.tensor([20.0, 21.0, 19.0])
    masked = torch.tensor([[28.0, 22.0, 20.0], [25.0, 24.0, 21.0], [20.0, 21.0, 19.0]])
    base = softmax([20, 21, 19])
    assert base == pytest.approx([0.2447, 0.6652, 0.0900], abs=1e-4)
    assert softmax([28, 22, 20])[0] == pytest.approx(0.9972, abs=1e-4)  # cat 0.997 > 0.245: win
    assert softmax([25, 24, 21])[1] == pytest.approx(0.2654, abs=1e-4)  # dog 0.265 < 0.665: no win
    assert image_wins(masked, black).tolist() == [True, False, False]  # grass: tie, no win
    assert image_reward(masked, black) == 1


def test_ties_are_no_win_and_non_uniform_black():
    black = torch.tensor([1.0, 0.0])  # Pr(0, ·) = (0.731, 0.269)
    masked = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # class 0 ties 0.731; class 1: 0.5 > 0.269
    assert image_wins(masked, black).tolist() == [False, True]
    assert image_reward(black.expand(2, 2), black) == 0  # masks identical to black: all ties


def test_single_class_never_wins():
    # Softmax over one class is 1 for any image: 1 vs 1 is a tie.
    assert image_reward(torch.tensor([[50.0]]), torch.tensor([-3.0])) == 0


def test_batched_trials_and_shape_check():
    masked = torch.stack([torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([[0.0, 0.0], [0.0, 0.0]])])
    assert image_wins(masked, torch.zeros(2)).tolist() == [[True, True], [False, False]]
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        image_wins(torch.zeros(3, 3), torch.zeros(2))


def test_total_and_per_class_mean():
    two = (["cat", "dog"], torch.tensor([[2.0, 0.0], [2.0, 0.0]]), torch.zeros(2))  # cat wins
    three = (["cat", "dog", "sky"], torch.eye(3) * 5, torch.zeros(3))  # all win
    summary = total_reward([two, three])
    assert (summary.total, summary.possible) == (4, 5)
    assert summary.per_class == {"cat": 1.0, "dog": 0.5, "sky": 1.0}
    assert summary.to_dict()["per_class"]["dog"] == 0.5
    empty = RewardSummary()
    with pytest.raises(ValueError):
        empty.add(["a", "b"], [True])


class CountingScorer:
    """Logit of class k = total intensity of channel k (so black scores all zeros)."""

    def __init__(self):
        self.images = []

    def __call__(self, images, class_names):
        self.images += list(images)
        return torch.tensor(
            np.stack([np.asarray(im, np.float64).sum((0, 1))[: len(class_names)] / 1e3 for im in images])
        )


def test_empty_mask_is_the_black_image_and_is_not_scored():
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:4, :, 0] = 200  # "red" in the top half, "green" in the bottom half
    rgb[4:, :, 1] = 200
    image = Captured(LabelledImage(None, ["red", "green"]), torch.zeros(1, 1, 2, 1, 1), rgb)
    scorer = CountingScorer()
    evaluator = RewardEvaluator(scorer)

    def masks(image, trials):
        red = np.zeros((8, 8), bool)
        red[:4] = True
        return np.stack([np.stack([red, np.zeros((8, 8), bool)]) for _ in trials])  # green: empty

    trials = [Trial(1, 1, 0.1), Trial(1, 1, 0.2)]
    evaluator.evaluate(image, trials, masks)
    assert [t.reward.total for t in trials] == [1, 1]  # red wins, green (empty) ties
    assert trials[0].reward.per_class == {"green": 0.0, "red": 1.0}
    # One black image and ONE masked image (identical masks of the two trials are shared).
    assert len(scorer.images) == 2 and evaluator.images_scored == 2
