"""Postprocessors: the protocol and the chain builder (built-ins are registered in pnpseg/builtins.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch

from pnpseg.errors import PnpsegError
from pnpseg.method.params import SegmentParams
from pnpseg.method.profiling import stage
from pnpseg.specs import factory_options, parse_options, parse_spec


class Postprocessor(Protocol):
    def __call__(self, scores: torch.Tensor, image: np.ndarray, params: SegmentParams) -> torch.Tensor: ...


class PostprocessorError(ValueError):
    """A postprocessor returned something that breaks the contract (one image fails)."""


def build_chain(specs: Sequence[str]) -> list[Postprocessor]:
    """Instantiate the postprocessors ``name[:key=value,...]`` in order, the options as the
    factory's keyword arguments (unknown names list what exists; bad options, one line)."""
    from pnpseg.plugins import lookup

    chain = []
    for spec in specs:
        name, options = parse_spec(spec, "--postprocess")
        factory = lookup("postprocessors", name)
        kwargs = parse_options(f"--postprocess {name}", options, factory_options(factory))
        try:
            chain.append(factory(**kwargs))
        except (TypeError, ValueError) as error:
            raise PnpsegError(f"--postprocess {name}: {error}") from None
    return chain


def run_chain(
    scores: torch.Tensor,
    image: np.ndarray,
    params: SegmentParams,
    chain: Sequence[Postprocessor],
    on_stage: Callable[[str, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Apply the chain, checking each step returns a float tensor shaped like its input;
    ``on_stage(spec, scores)`` sees the scores after each step."""
    for spec, step in zip(params.postprocess, chain):
        name = parse_spec(spec, "--postprocess")[0]
        with stage(name):
            out = step(scores, image, params)
        problem = _contract_problem(out, scores)
        if problem:
            raise PostprocessorError(f"postprocessor {name!r} {problem} (C, H, W of its input scores)")
        scores = out
        if on_stage is not None:
            on_stage(spec, scores)
    return scores


def _contract_problem(out: object, scores: torch.Tensor) -> str | None:
    if not isinstance(out, torch.Tensor):
        return f"returned {type(out).__name__}, expected a torch.Tensor"
    if not out.is_floating_point():
        return f"returned dtype {out.dtype}, expected a float tensor"
    if out.dim() != 3:
        return f"returned {out.dim()} dimensions {tuple(out.shape)}, expected 3"
    if out.shape[0] != scores.shape[0]:
        return f"returned {out.shape[0]} channels, expected {scores.shape[0]}"
    if out.shape[1:] != scores.shape[1:]:
        return f"returned H×W {out.shape[1]}×{out.shape[2]}, expected {scores.shape[1]}×{scores.shape[2]}"
    return None
