"""Forward hooks for reading attention probabilities out of a model during a forward."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any, TypeVar

import torch

from .fused import eager

K = TypeVar("K", bound=Hashable)


@contextlib.contextmanager
def capture_outputs(
    modules: Mapping[K, torch.nn.Module], index: int = 1, *, strict: bool = False
) -> Iterator[dict[K, torch.Tensor | None]]:
    """Record ``output[index]`` of each module (by key) during the forwards run inside.

    Attention modules return ``(context, probs, ...)``, so the default ``index=1`` picks
    the probabilities. An output that is not a tuple long enough, or whose entry is not a
    tensor, is recorded as None. With ``strict``, a clean exit from the block raises
    :class:`RuntimeError` for every key recorded as None or not at all (the usual cause:
    the model does not run with ``attn_implementation='eager'``). Hooks are removed even if
    the forward fails. Modules fused by :mod:`pnpseg_hf.fused` run eager inside the block
    (a fused attention computes no probabilities).
    """
    captured: dict[K, torch.Tensor | None] = {}
    handles = []

    def make_hook(key: K) -> Callable[..., None]:
        def hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
            value = output[index] if isinstance(output, tuple) and len(output) > index else None
            captured[key] = value if isinstance(value, torch.Tensor) else None

        return hook

    try:
        for key, module in modules.items():
            handles.append(module.register_forward_hook(make_hook(key)))
        with eager(modules.values()):
            yield captured
    finally:
        for handle in handles:
            handle.remove()
    if strict:
        missing = [key for key in modules if captured.get(key) is None]
        if missing:
            raise RuntimeError(
                f"no attention probabilities captured for layer(s) {missing}: the model must run with "
                "attn_implementation='eager'"
            )


def grad_leaf(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` itself if it requires grad, else a detached copy that does (a leaf)."""
    return tensor if tensor.requires_grad else tensor.detach().requires_grad_(True)


@contextlib.contextmanager
def start_graph_at(module: torch.nn.Module | None) -> Iterator[None]:
    """Make ``module``'s input a grad-requiring leaf during the forwards run inside.

    With frozen parameters and plain inputs nothing upstream records an autograd graph;
    from ``module`` on everything does, so gradients with respect to its outputs (and
    everything downstream) exist at the cost of no graph below. The input is the first
    positional argument, or the ``hidden_states`` keyword. ``None`` does nothing. The
    pre-hook is removed even if the forward fails.
    """
    if module is None:
        yield
        return

    def start_graph(_module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            args = (grad_leaf(args[0]), *args[1:])
        elif "hidden_states" in kwargs:
            kwargs = {**kwargs, "hidden_states": grad_leaf(kwargs["hidden_states"])}
        return args, kwargs

    handle = module.register_forward_pre_hook(start_graph, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
