"""Fixtures of the LAVIS plugin's tests (they run in the LAVIS environment: docs/lavis.md)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def blip_checkpoint(tmp_path_factory):
    from tiny_lavis import build_tiny_lavis_blip

    return build_tiny_lavis_blip(tmp_path_factory.mktemp("lavis-blip"))


@pytest.fixture(scope="session")
def albef_checkpoint(tmp_path_factory):
    from tiny_lavis import build_tiny_albef

    return build_tiny_albef(tmp_path_factory.mktemp("albef"))


@pytest.fixture(scope="session")
def blip_adapter(blip_checkpoint):
    from pnpseg_lavis import LavisBlipAdapter

    return LavisBlipAdapter(str(blip_checkpoint))


@pytest.fixture(scope="session")
def albef_adapter(albef_checkpoint):
    from pnpseg_lavis import AlbefAdapter

    return AlbefAdapter(str(albef_checkpoint))
