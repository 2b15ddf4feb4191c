"""Shared fixtures: tiny random checkpoints built once per test session (read-only; a test
that needs to change one copies it first)."""

import os
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


@pytest.fixture
def readonly(tmp_path, monkeypatch):
    """A folder nobody may write into (chmod; as root, which chmod does not stop, os too)."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        real_open, real_mkdir = os.open, os.mkdir

        def refuse(real):
            def call(path, *args, **kwargs):
                if Path(path).parent == folder or folder in Path(path).parents:
                    raise PermissionError(13, "Permission denied", str(path))
                return real(path, *args, **kwargs)

            return call

        monkeypatch.setattr(os, "open", refuse(real_open))
        monkeypatch.setattr(os, "mkdir", refuse(real_mkdir))
    yield folder
    folder.chmod(0o755)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with one 64×64 synthetic scene of red and blue, ``a.png`` (per test module;
    a module may define its own ``scene``)."""
    from pnpseg.testing import make_scene

    folder = tmp_path_factory.mktemp("scene")
    make_scene(64, 64, ["red", "blue"], seed=0)[0].save(folder / "a.png")
    return folder


@pytest.fixture(autouse=True)
def pil_pixel_limit():
    """``--max-image-pixels`` sets PIL's limit process-wide, as it must for a run: give every
    test the limit it started with, whatever the one before asked for."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    yield
    Image.MAX_IMAGE_PIXELS = saved
