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
    assert CORE["license"]["text"] == "BSD-3-Clause"
    citation = (ROOT / "CITATION.cff").read_text()
    assert f"version: {CORE['version']}" in citation and "2311.17095" in citation
    assert "## Unreleased" in (ROOT / "CHANGELOG.md").read_text()
