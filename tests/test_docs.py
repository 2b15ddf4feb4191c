"""Docs stay in step with the code: examples run, every hook is documented."""

import re
from pathlib import Path

import pytest

from pnpseg import hookspecs

DOCS = Path(__file__).parent.parent / "docs"


def python_blocks(name: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / name).read_text(), re.S)


def test_every_hook_is_documented():
    documented = set(re.findall(r"^### (\w+)\(\w+\)", (DOCS / "plugins.md").read_text(), re.M))
    hooks = {name for name in dir(hookspecs) if name.startswith("register_")}
    assert hooks and hooks == documented


def test_documented_hook_signatures_match_hookspecs():
    """Each ``### register_x(arg, ...)`` heading names the hookspec's parameters, in order."""
    import inspect

    documented = dict(re.findall(r"^### (register_\w+)\(([\w, ]*)\)", (DOCS / "plugins.md").read_text(), re.M))
    for name, arguments in documented.items():
        spec = inspect.signature(getattr(hookspecs, name))
        assert [a.strip() for a in arguments.split(",") if a.strip()] == list(spec.parameters), name


EXAMPLE = DOCS.parent / "examples" / "pnpseg-example-adapter"


def test_adapter_tutorial_shows_the_example_package_code():
    blocks = python_blocks("adapters.md")
    for name in ("adapter.py", "plugin.py"):
        assert (EXAMPLE / "pnpseg_example_adapter" / name).read_text() in blocks
    assert (EXAMPLE / "pyproject.toml").read_text() in (DOCS / "adapters.md").read_text()


@pytest.mark.slow
def test_adapter_tutorial_runs(monkeypatch):
    from pnpseg.plugins import pm

    monkeypatch.syspath_prepend(str(EXAMPLE))
    usage = next(block for block in python_blocks("adapters.md") if "pm.register(" in block)
    try:
        exec(usage, {})
    finally:
        plugin = pm.get_plugin("toy")
        if plugin is not None:
            pm.unregister(plugin)


FLAVA = DOCS.parent / "plugins" / "pnpseg-flava"


def test_hf_tutorial_shows_the_flava_adapter_and_its_test():
    blocks = python_blocks("adapters.md")
    assert (FLAVA / "pnpseg_flava" / "adapter.py").read_text() in blocks
    test_block = next(block for block in blocks if "def build_tiny_flava" in block)
    assert test_block in (DOCS.parent / "tests" / "test_flava_adapter.py").read_text()
    imports = next(block for block in blocks if "from pnpseg_hf.testing import" in block)
    exec(imports, {})


@pytest.mark.slow
def test_hf_tutorial_adapter_builds_and_conforms(tmp_path):
    """The HFAdapter subclass exactly as the doc shows it, on a tiny FLAVA, passes check_adapter."""
    import pytest

    pytest.importorskip("transformers")
    from test_flava_adapter import build_tiny_flava

    from pnpseg.testing import check_adapter

    block = next(block for block in python_blocks("adapters.md") if "(HFAdapter):" in block)
    namespace = {"__name__": "doc_flava"}
    exec(block, namespace)
    adapter = namespace["FlavaAdapter"](str(build_tiny_flava(tmp_path / "tiny")))
    assert type(adapter).__module__ == "doc_flava"
    check_adapter(adapter, layers=[1])


@pytest.mark.slow
def test_toy_adapter_passes_the_conformance_kit(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    exec(next(block for block in python_blocks("adapters.md") if "check_adapter(ToyAdapter())" in block), {})


def test_every_test_named_in_reliability_md_exists():
    """Each guarantee in docs/reliability.md names a test that exists (so a renamed or deleted
    test cannot leave a guarantee unbacked)."""
    named = re.findall(r"`(?:tests/)?(test_\w+\.py)::(test_\w+)`", (DOCS / "reliability.md").read_text())
    assert len(named) >= 10
    for module, test in named:
        source = (Path(__file__).parent / module).read_text()
        assert re.search(rf"^def {test}\(", source, re.M), f"{module}::{test}"
