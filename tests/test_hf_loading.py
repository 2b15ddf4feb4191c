"""pnpseg_hf's building blocks on their own (the adapters' tests cover them in use)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("pnpseg_hf")

import pnpseg  # noqa: E402
from pnpseg_hf import (  # noqa: E402
    broadcast_batch,
    capture_outputs,
    first_line,
    looks_like_path,
    quiet_loading,
    resolve_source,  # noqa: E402
)


def test_source_resolution(tmp_path):
    assert not looks_like_path("org/name") and not looks_like_path("name")
    assert all(looks_like_path(p) for p in ("./m", "/m", "~/m", "a/b/c", "a\\b"))
    assert resolve_source("org/name") is None
    assert resolve_source(str(tmp_path)) == tmp_path
    with pytest.raises(pnpseg.ModelLoadError, match="no model folder"):
        resolve_source(str(tmp_path / "a" / "b"))
    (tmp_path / "f").write_text("")
    with pytest.raises(pnpseg.ModelLoadError, match="is a file"):
        resolve_source(str(tmp_path / "f"))


def test_first_line_and_quiet_loading():
    from transformers.utils import logging as hf_logging

    assert first_line(ValueError("one\ntwo")) == "one" and first_line(KeyError()) == "KeyError"
    assert len(first_line(OSError("x" * 500))) == 160
    hf_logging.enable_progress_bar()
    with quiet_loading():
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()


def test_capture_outputs_strict_and_released_on_error():
    class Pair(torch.nn.Module):
        def forward(self, x):
            return x, x * 2

    modules = {0: Pair(), 1: torch.nn.Identity()}
    with pytest.raises(RuntimeError, match=r"layer\(s\) \[1\]"):
        with capture_outputs(modules, strict=True) as captured:
            modules[0](torch.ones(1))
            modules[1](torch.ones(1))
    assert captured[0].tolist() == [2.0] and captured[1] is None
    with pytest.raises(ValueError, match="boom"), capture_outputs(modules):
        raise ValueError("boom")
    assert not any(m._forward_hooks for m in modules.values())


def test_broadcast_batch():
    assert broadcast_batch(1, 3) == broadcast_batch(3, 1) == broadcast_batch(3, 3) == 3
    with pytest.raises(ValueError, match="batch"):
        broadcast_batch(2, 3)
