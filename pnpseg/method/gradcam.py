"""Step 2: GradCAM on text→image attention (paper eq. 1).

Only the gradient of the ITM match logit with respect to the attention tensors is
computed (``torch.autograd.grad``): no parameter gradients, and autograd never walks below
the requested layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pnpseg.method.adapter import TokenizedText, VLMAdapter
from pnpseg.method.profiling import stage
from pnpseg.method.validation import broken, check_output


def capture(
    adapter: VLMAdapter, pixels: torch.Tensor, text: TokenizedText, layers: Sequence[int]
) -> tuple[list[torch.Tensor], list[torch.Tensor], tuple[int, int]]:
    """Text→image attention and its gradient for each 0-based layer.

    Returns ``(attentions, gradients, grid)``; each tensor is (B, heads, T, P), detached.
    What the adapter returned is checked first (:func:`check_output`): a broken adapter is
    one :class:`~pnpseg.AdapterError` naming it, not a torch error three steps later.
    """
    layers = list(layers)
    with torch.enable_grad():
        out = adapter.forward(pixels, text, layers)
        attentions = check_output(adapter, out, pixels, text, layers)
        with stage("gradient"):
            grads = torch.autograd.grad(out.match_logit.sum(), out.attentions, allow_unused=True)
    if any(g is None for g in grads):
        raise broken(
            adapter,
            "graph-connected attention",
            "the match logit does not depend on a returned attention; return the tensors the model actually used",
        )
    gradients = [out.text_image(g, layer) for g, layer in zip(grads, layers)]
    return attentions, gradients, out.grid


def gradcam(attention: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """``max(0, ∂s/∂A) ⊙ A`` elementwise."""
    return gradient.clamp(min=0) * attention


def class_maps(cam: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-token maps (B, T, P) → per-class maps (B, K, P) with token-averaging weights (B, K, T)."""
    return torch.bmm(weights.to(cam.dtype), cam)
