"""Release hygiene: one version for the core and its first-party plugins, bounded plugin
dependencies, typed packages, and the files a user looks for."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest depends on tomli on Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CORE = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
FIRST_PARTY = sorted((ROOT / "plugins").glob("*/pyproject.toml"))


def test_there_are_first_party_plugins():
    assert len(FIRST_PARTY) >= 4


@pytest.mark.parametrize("path", FIRST_PARTY, ids=lambda p: p.parent.name)
def test_plugins_share_the_core_version_and_accept_only_its_major(path):
    project = tomllib.loads(path.read_text())["project"]
    assert project["version"] == CORE["version"]
    major = int(CORE["version"].split(".")[0])
    bounds = [d for d in project["dependencies"] if re.match(r"pnpseg(-hf)?\b", d)]
    assert bounds and all(f"<{major + 1}" in d for d in bounds), bounds
    package = path.parent / path.parent.name.replace("-", "_")
    assert (package / "py.typed").is_file()


def test_core_is_typed_licensed_and_citable():
    assert (ROOT / "pnpseg" / "py.typed").is_file()
    assert "BSD 3-Clause" in (ROOT / "LICENSE").read_text()
    assert CORE["license"] == "BSD-3-Clause"
    citation = (ROOT / "CITATION.cff").read_text()
    assert f"version: {CORE['version']}" in citation and "2311.17095" in citation
    assert "## Unreleased" in (ROOT / "CHANGELOG.md").read_text()


PACKAGES = [ROOT, *sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))]
PACKAGES += sorted(p.parent for p in (ROOT / "examples").glob("*/pyproject.toml"))


@pytest.mark.parametrize("folder", PACKAGES, ids=lambda p: "pnpseg" if p == ROOT else p.name)
def test_every_package_has_a_description_an_spdx_license_urls_and_a_readme(folder):
    project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
    assert len(project["description"]) > 20
    assert project["license"] == "BSD-3-Clause"  # an SPDX expression, not the deprecated table
    assert project["license-files"] == ["LICENSE"] and "BSD 3-Clause" in (folder / "LICENSE").read_text()
    assert not [c for c in project.get("classifiers", []) if c.startswith("License ::")]  # superseded by the expression
    assert project["urls"] and all(url.startswith("https://") for url in project["urls"].values())
    readme = folder / project["readme"]
    assert readme.read_text().startswith(f"# {project['name']}")


def _copy_sources(folder: Path, into: Path) -> Path:
    """What a wheel is built from (without tests, docs or a .venv), so the build leaves the tree clean."""
    import shutil

    project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
    into.mkdir()
    for name in ("pyproject.toml", project["readme"], "LICENSE"):
        shutil.copyfile(folder / name, into / name)
    for package in folder.glob("pnpseg*"):
        if package.is_dir() and (package / "__init__.py").is_file():
            shutil.copytree(package, into / package.name, ignore=shutil.ignore_patterns("__pycache__"))
    return into


@pytest.mark.slow  # nine wheel builds: ~25 s on an idle 2-core machine
def test_wheels_build_without_warnings_and_pass_twine_check(tmp_path):
    """Every package's wheel, built as pip builds it (no network: the installed setuptools),
    passes ``twine check --strict``, and setuptools warns of nothing (its license-format
    deprecation stops builds after 2027-02-18)."""
    import subprocess
    import zipfile

    pytest.importorskip("build")
    pytest.importorskip("twine")
    dist = tmp_path / "dist"
    for folder in PACKAGES:
        source = _copy_sources(folder, tmp_path / folder.name)
        built = subprocess.run(
            [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(source)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert built.returncode == 0, built.stdout + built.stderr
        assert "Warning" not in built.stdout + built.stderr, built.stdout + built.stderr
    wheels = sorted(dist.glob("*.whl"))
    assert len(wheels) == len(PACKAGES)
    check = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, wheels)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
            licence = next(n for n in archive.namelist() if n.endswith("/licenses/LICENSE"))
            assert "BSD 3-Clause" in archive.read(licence).decode()
        assert "License-Expression: BSD-3-Clause" in metadata and "Project-URL: " in metadata
        assert "Description-Content-Type: text/markdown" in metadata
