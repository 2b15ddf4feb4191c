"""Check what an adapter's ``forward`` returned before the method uses it.

A broken adapter otherwise surfaces far away as a raw torch error that names nothing
(``shape '[1, 1, 4, 4]' is invalid for input of size 17``). These checks are shape and flag
comparisons only: no tensor data is read, so they cost nothing on the hot path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from pnpseg.errors import AdapterError
from pnpseg.method.adapter import TokenizedText, VLMOutput


def broken(adapter: Any, clause: str, detail: str) -> AdapterError:
    """The one-line error for ``adapter`` breaking ``clause`` of the protocol: a defect of the
    package that ships the adapter, which the message names (layers and heads in it are
    1-based, as the CLI counts them)."""
    package = type(adapter).__module__.partition(".")[0]
    return AdapterError(
        f"adapter {type(adapter).__name__} broke the protocol ({clause}): {detail} "
        f"(a defect of the plugin package {package!r}, not of the input)"
    )


def check_forward_args(adapter: Any, text: TokenizedText, layers: Sequence[int]) -> list[int]:
    """``layers`` as ints, each in ``0..num_layers-1`` (IndexError), and the prompt length
    within ``max_text_length`` (ValueError): what every adapter's ``forward`` checks first.
    Messages name the adapter's ``display_name`` (else its class)."""
    name = getattr(adapter, "display_name", None) or type(adapter).__name__
    layers = [int(i) for i in layers]
    for i in layers:
        if not 0 <= i < adapter.num_layers:
            raise IndexError(f"{name} layer index {i} out of range 0..{adapter.num_layers - 1} (0-based)")
    length = text.input_ids.shape[1]
    if length > adapter.max_text_length:
        raise ValueError(f"prompt has {length} tokens; {name} allows {adapter.max_text_length}")
    return layers


def check_output(
    adapter: Any, out: Any, pixels: torch.Tensor, text: TokenizedText, layers: Sequence[int]
) -> list[torch.Tensor]:
    """Validate ``out = adapter.forward(pixels, text, layers)``; return its text→image blocks.

    Checks: a :class:`VLMOutput`; a match logit of shape (B,) where B is the broadcast
    batch; a grid equal to the patch grid of ``pixels``; one attention per requested layer;
    each in the autograd graph when grad mode is on; each block after ``to_text_image`` of
    shape (B, heads, T, grid_h·grid_w). The blocks are of the detached attentions.
    """
    if not isinstance(out, VLMOutput):
        raise broken(adapter, "return type", f"forward returned {type(out).__name__}, not VLMOutput")
    batch = max(int(pixels.shape[0]), int(text.input_ids.shape[0]))
    logit = out.match_logit
    if not isinstance(logit, torch.Tensor) or tuple(logit.shape) != (batch,):
        shape = tuple(logit.shape) if isinstance(logit, torch.Tensor) else type(logit).__name__
        raise broken(adapter, "match logit shape", f"match_logit is {shape}, expected ({batch},)")
    patch = int(adapter.patch_size)
    expected_grid = (int(pixels.shape[-2]) // patch, int(pixels.shape[-1]) // patch)
    try:
        grid = (int(out.grid[0]), int(out.grid[1]))
    except (TypeError, ValueError, IndexError):
        raise broken(adapter, "grid", f"grid {out.grid!r} is not (grid_h, grid_w)") from None
    if grid != expected_grid or len(out.grid) != 2:
        raise broken(
            adapter,
            "grid",
            f"grid {grid} does not match input {tuple(pixels.shape[-2:])} with patch size {patch} "
            f"(expected {expected_grid})",
        )
    if len(out.attentions) != len(layers):
        raise broken(
            adapter,
            "one attention per layer",
            f"{len(out.attentions)} attention tensors for layers {[layer + 1 for layer in layers]}",
        )
    need_graph = torch.is_grad_enabled()
    expected = (batch, int(adapter.num_heads), int(text.input_ids.shape[1]), grid[0] * grid[1])
    blocks = []
    for layer, attention in zip(layers, out.attentions):
        if need_graph and not attention.requires_grad:
            raise broken(
                adapter,
                "graph-connected attention",
                f"the attention of layer {layer + 1} does not require grad; return the probabilities the model "
                "used, inside the autograd graph (not detached, not computed under torch.no_grad)",
            )
        block = out.text_image(attention.detach(), layer)
        if tuple(block.shape) != expected:
            raise broken(
                adapter,
                "attention block shape",
                f"to_text_image gave {tuple(block.shape)} for layer {layer + 1}, expected (B, heads, T, "
                f"grid_h·grid_w) = {expected}",
            )
        blocks.append(block)
    return blocks
