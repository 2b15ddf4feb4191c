"""Plugin hook specifications (pluggy project ``pnpseg``).

Every hook receives a ``register(name, factory)`` callback; built-in features use the same
hooks as outside plugins (see ``pnpseg/postprocess/__init__.py``, ``pnpseg/testing``).
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("pnpseg")
hookimpl = pluggy.HookimplMarker("pnpseg")

Register = Callable[[str, Callable[..., Any]], None]


@hookspec
def register_adapters(register: Register) -> None:
    """Register VLM adapters.

    ``factory(model: str | None = None, device: str | torch.device = "cpu") -> VLMAdapter``;
    ``model`` is a checkpoint name or local path, ``None`` meaning the adapter's default.
    """


@hookspec
def register_postprocessors(register: Register) -> None:
    """Register postprocessors for ``--postprocess``.

    ``factory() -> Postprocessor``, where a postprocessor is a callable
    ``(scores: Tensor[C, H, W], image: ndarray[H, W, 3] uint8, params: SegmentParams)
    -> Tensor[C, H, W]`` mapping per-channel scores to refined scores.
    """
