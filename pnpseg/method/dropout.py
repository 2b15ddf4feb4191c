"""Step 3: Saliency DropOut rules (paper eq. 2–3).

A rule takes the summed saliency U (B, P) and the already-dropped mask (B, P) and returns
the newly dropped patches. Patches with zero saliency are never dropped: they carry no
evidence, and dropping them would only hide context from the next round. The one exception
is ``compat="authors"``, whose top-N (:func:`drop_topk_authors`) is the released code's;
:mod:`pnpseg.method.compat` chooses between the two (docs/method.md §6).
"""

from __future__ import annotations

import torch

from pnpseg.method.params import parse_drop_rule


def drop_median(saliency: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
    """Paper: drop remaining patches whose saliency is ≥ the median over remaining ones."""
    new = torch.zeros_like(dropped)
    for b in range(saliency.shape[0]):
        remaining = ~dropped[b]
        if not remaining.any():
            continue
        median = saliency[b][remaining].median()
        new[b] = remaining & (saliency[b] >= median) & (saliency[b] > 0)
    return new


def drop_topk(saliency: torch.Tensor, dropped: torch.Tensor, k: int) -> torch.Tensor:
    """Authors' updated code: drop the ``k`` remaining patches with the highest saliency."""
    score = saliency.masked_fill(dropped | (saliency <= 0), float("-inf"))
    k = min(k, score.shape[1])
    values, index = score.topk(k, dim=1)
    new = torch.zeros_like(dropped)
    new.scatter_(1, index, values > float("-inf"))
    return new


def drop_topk_authors(saliency: torch.Tensor, dropped: torch.Tensor, k: int) -> torch.Tensor:
    """The released code's top-N: dropped patches score 0 and the N highest scores are taken.

    With fewer than N positive patches the remaining slots go to zero-score patches, the
    highest indices first (a stable ascending sort's last N); a slot that lands on an
    already-dropped patch is spent without dropping anything new.
    """
    score = saliency.masked_fill(dropped, 0.0)
    k = min(k, score.shape[1])
    index = score.sort(dim=1, stable=True).indices[:, -k:]
    new = torch.zeros_like(dropped)
    new.scatter_(1, index, True)
    return new & ~dropped


def drop_patches(rule: str, saliency: torch.Tensor, dropped: torch.Tensor, compat: str = "paper") -> torch.Tensor:
    """Apply the named rule (``median``, or ``topk:N`` as the ``compat`` mode fills its slots);
    returns the newly dropped patches."""
    from pnpseg.method.compat import arithmetic  # compat builds on this module's rules

    name, k = parse_drop_rule(rule)
    if name == "median":
        return drop_median(saliency, dropped)
    return arithmetic(compat).drop_topk(saliency, dropped, k)
