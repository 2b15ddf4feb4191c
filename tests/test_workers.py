"""``--workers``: byte-identical to serial with a real (tiny) model, and postprocessors that
are checked, take options, and run in workers or say why they cannot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import build_tiny_blip
from typer.testing import CliRunner

from pnpseg.cli import app
from pnpseg.testing import make_scene


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory):
    return str(build_tiny_blip(tmp_path_factory.mktemp("blip")))


def test_workers_match_serial_bit_for_bit_with_near_ties(tmp_path, tiny_blip):
    # Random weights give near-ties between classes; seed 2 at 96×96 flipped pixels when the
    # workers upsampled at one thread and the serial path at four.
    make_scene(96, 96, ["red", "green", "blue"], seed=2)[0].save(tmp_path / "a.png")
    threads = torch.get_num_threads()
    torch.set_num_threads(4)
    labels = {}
    try:
        for workers in (0, 1):
            out = tmp_path / f"out{workers}"
            result = CliRunner().invoke(
                app,
                ["segment", str(tmp_path / "a.png"), "--classes", "cat,dog,grass", "--adapter", "blip"]
                + ["--model", tiny_blip, "--layer", "2", "--head", "1", "--image-size", "64"]
                + ["--postprocess", "none", "--device", "cpu", "--out", str(out), "--workers", str(workers)],
            )
            assert result.exit_code == 0, result.output
            labels[workers] = np.asarray(Image.open(out / "a.png"))
    finally:
        torch.set_num_threads(threads)
    assert len(np.unique(labels[0])) > 1
    assert (labels[0] != labels[1]).sum() == 0
