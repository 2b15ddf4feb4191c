"""The CLIP reward of PnP-OVSS (paper §3.4, eq. 4–5; docs/method.md §5), as pure tensor functions.

For one image I with present classes 𝒦(I) (K of them) and one mask M_k per class::

    Pr(X, k)  = softmax_{k' ∈ 𝒦(I)} f(X, k')[k]
    Reward(I) = Σ_k 1[ Pr(M_k ⊙ I, k) > Pr(0, k) ]

where f is an image-text similarity (CLIP logits) and 0 is the all-black image. The inputs
here are the logits already computed by a scorer:

* ``masked`` (K, K): row k holds f(M_k ⊙ I, k') for every present class k' (the masked
  image of class k scored against all present classes);
* ``black`` (K,): f(0, k') for every present class k'.

Edge cases, by construction of the formula (the comparison is strict):

* a tie is no win;
* a single present class never wins: a softmax over one class is 1 for any image, so
  Pr(M ⊙ I, k) = 1 = Pr(0, k);
* a class whose mask is empty has M_k ⊙ I = 0, the black image itself: a tie, no win.
  (:class:`pnpseg.tuning.stages.RewardEvaluator` reuses the black logits for empty masks, so the tie is exact.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the present classes (last dimension), in float64 for stable ties."""
    return torch.softmax(logits.double(), dim=-1)


def image_wins(masked: torch.Tensor, black: torch.Tensor) -> torch.Tensor:
    """Per present class, whether its masked image beats the black image: (K,) bool.

    ``masked`` (K, K) and ``black`` (K,) as in the module doc; ``masked`` may carry leading
    batch dimensions (..., K, K) (several trials at once), giving (..., K).
    """
    masked, black = torch.as_tensor(masked), torch.as_tensor(black)
    k = black.shape[-1]
    if masked.shape[-2:] != (k, k):
        raise ValueError(f"masked logits must be ({k}, {k}) for {k} classes, got {tuple(masked.shape)}")
    return _own(masked) > class_probabilities(black)


def _own(masked: torch.Tensor) -> torch.Tensor:
    """Pr(M_k ⊙ I, k): the diagonal of the row-wise softmax."""
    return class_probabilities(masked).diagonal(dim1=-2, dim2=-1)


def image_margins(masked: torch.Tensor, black: torch.Tensor) -> torch.Tensor:
    """Pr(M_k ⊙ I, k) − Pr(0, k) per class: (..., K) float64. Used only to break reward ties."""
    return _own(torch.as_tensor(masked)) - class_probabilities(torch.as_tensor(black))


def image_reward(masked: torch.Tensor, black: torch.Tensor) -> int:
    """Reward(I): the number of present classes whose masked image wins (eq. 5)."""
    return int(image_wins(masked, black).sum())


@dataclass
class RewardSummary:
    """Reward over a set of images: the total (what the search maximises), per class the
    mean win rate over the images that contain it, and the summed margins (a tie-breaker)."""

    total: int = 0
    possible: int = 0
    margin: float = 0.0
    wins: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, class_names: Sequence[str], wins: Iterable[bool], margins: Iterable[float] = ()) -> None:
        wins = [bool(w) for w in wins]
        if len(wins) != len(class_names):
            raise ValueError(f"{len(wins)} win flags for {len(class_names)} classes")
        for name, win in zip(class_names, wins):
            self.wins[name] = self.wins.get(name, 0) + win
            self.counts[name] = self.counts.get(name, 0) + 1
        self.total += sum(wins)
        self.possible += len(wins)
        self.margin += float(sum(margins))

    @property
    def per_class(self) -> dict[str, float]:
        """Mean reward per class: wins / images containing the class, in [0, 1]."""
        return {name: self.wins[name] / self.counts[name] for name in sorted(self.counts)}

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "possible": self.possible,
            "margin": round(self.margin, 6),
            "per_class": {k: round(v, 6) for k, v in self.per_class.items()},
        }


def total_reward(per_image: Iterable[tuple[Sequence[str], torch.Tensor, torch.Tensor]]) -> RewardSummary:
    """Sum eq. 5 over images given ``(class_names, masked (K, K), black (K,))`` per image."""
    summary = RewardSummary()
    for names, masked, black in per_image:
        summary.add(names, image_wins(masked, black).tolist(), image_margins(masked, black).tolist())
    return summary
