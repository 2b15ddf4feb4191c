"""Shared fixtures: tiny random checkpoints built once per test session (read-only; a test
that needs to change one copies it first)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # test helpers (fakes.py, tiny_models.py, cli_run.py)

from tiny_models import build_tiny_blip, build_tiny_bridgetower, build_tiny_vilt  # noqa: E402


@pytest.fixture(scope="session")
def tiny_blip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BLIP ITM: 3 text→image layers × 2 heads, patch 16 (see tiny_models.py)."""
    return build_tiny_blip(tmp_path_factory.mktemp("tiny-blip"))


@pytest.fixture(scope="session")
def tiny_bridgetower(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bridgetower(tmp_path_factory.mktemp("tiny-bridgetower"))


@pytest.fixture(scope="session")
def tiny_vilt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vilt(tmp_path_factory.mktemp("tiny-vilt"))
