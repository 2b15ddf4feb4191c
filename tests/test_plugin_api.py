"""Plugins use a declared API: the first-party plugins and the examples import ``pnpseg``
and ``pnpseg.testing`` only, every ``pnpseg.X`` they use is in ``pnpseg.__all__``, and every
public name is documented in docs/plugins.md "The plugin API"."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import pnpseg
import pnpseg.testing

ROOT = Path(__file__).parent.parent
PUBLIC_MODULES = {"pnpseg": set(pnpseg.__all__), "pnpseg.testing": set(pnpseg.testing.__all__)}


def plugin_sources() -> list[Path]:
    roots = [*(ROOT / "plugins").glob("*/pnpseg_*"), *(ROOT / "examples").glob("*/pnpseg_*")]
    files = [path for root in roots for path in root.rglob("*.py")]
    assert len(files) > 20
    return files


def core_uses(path: Path) -> list[tuple[str, str]]:
    """(module, name) for each core name ``path`` uses: ``from pnpseg.m import n``,
    ``import pnpseg.m``, and ``pnpseg.n`` attribute reads."""
    tree = ast.parse(path.read_text())
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pnpseg":
            uses += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            uses += [(alias.name, "") for alias in node.names if alias.name.startswith("pnpseg.")]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "pnpseg":
            uses.append(("pnpseg", node.attr))
    return uses


def test_plugins_use_only_the_public_api():
    offences = []
    for path in plugin_sources():
        for module, name in core_uses(path):
            public = PUBLIC_MODULES.get(module)
            if public is None or (name and name not in public and name != "testing"):
                offences.append(f"{path.relative_to(ROOT)}: {module}.{name}")
    assert offences == []


def test_the_check_catches_a_private_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import pnpseg\nfrom pnpseg.method.profiling import stage\nx = pnpseg.plugins\n")
    uses = core_uses(probe)
    assert ("pnpseg.method.profiling", "stage") in uses and ("pnpseg", "plugins") in uses
    assert "plugins" not in PUBLIC_MODULES["pnpseg"]


def test_every_public_name_is_documented():
    table = (ROOT / "docs" / "plugins.md").read_text().split("## The plugin API", 1)[1]
    documented = set(re.findall(r"`(\w+)`", table))
    assert set(pnpseg.__all__) <= documented, sorted(set(pnpseg.__all__) - documented)


def test_every_public_name_resolves():
    for name in pnpseg.__all__:
        assert getattr(pnpseg, name) is not None, name


def test_option_errors_say_what_type_was_expected():
    from pnpseg.errors import PnpsegError
    from pnpseg.sources.class_sources import KEEP_OPTIONS
    from pnpseg.specs import factory_options, parse_options

    class Step:
        def __init__(self, passes: int = 3, strength: float = 0.5, strict: bool = False): ...

    options = factory_options(Step)
    for given, words in (("passes=x", "a whole number"), ("strength=x", "a number"), ("strict=2", "true or false")):
        with pytest.raises(PnpsegError) as error:
            parse_options("--postprocess step", given, options)
        assert str(error.value).endswith(f"has a bad value 'x' (expected {words})".replace("'x'", repr(given[-1:])))
    with pytest.raises(PnpsegError, match=r"option top has a bad value '0' \(expected a whole number of at least 1\)$"):
        parse_options("--class-source itm", "top=0", KEEP_OPTIONS)


def test_the_example_postprocessor_registers_a_lazy_target():
    import importlib
    import sys

    sys.path.insert(0, str(ROOT / "examples" / "pnpseg-example-postprocessor"))
    try:
        plugin = importlib.import_module("pnpseg_example_postprocessor.plugin")
        found = {}
        plugin.register_postprocessors(register=found.__setitem__)
        assert isinstance(found["islands"], pnpseg.hookspecs.LazyFactory)
        assert found["islands"].load().__name__ == "RemoveIslands"
    finally:
        sys.path.remove(str(ROOT / "examples" / "pnpseg-example-postprocessor"))
