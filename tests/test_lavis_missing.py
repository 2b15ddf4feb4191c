"""The LAVIS adapters outside the LAVIS environment: one line that says where LAVIS lives."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pnpseg.errors import MissingDependencyError

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "pnpseg-lavis"


@pytest.mark.skipif(importlib.util.find_spec("lavis") is not None, reason="LAVIS is installed here")
@pytest.mark.parametrize("name", ["LavisBlipAdapter", "AlbefAdapter"])
def test_without_lavis(name, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(PLUGIN))
    import pnpseg_lavis

    with pytest.raises(MissingDependencyError) as info:
        getattr(pnpseg_lavis, name)(str(tmp_path / "model.pth"))
    message = str(info.value)
    assert "\n" not in message and "salesforce-lavis 1.0.2" in message and "requirements-lavis.txt" in message
