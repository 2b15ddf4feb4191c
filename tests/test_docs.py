"""Docs stay in step with the code: examples run, every hook is documented."""

import re
from pathlib import Path

import pytest

from pnpseg import hookspecs

DOCS = Path(__file__).parent.parent / "docs"


def python_blocks(name: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / name).read_text(), re.S)


def test_every_hook_is_documented():
    documented = set(re.findall(r"^### (\w+)\(register\)", (DOCS / "plugins.md").read_text(), re.M))
    hooks = {name for name in dir(hookspecs) if name.startswith("register_")}
    assert hooks and hooks == documented


def test_adapter_tutorial_runs(monkeypatch):
    from pnpseg.plugins import pm

    namespace: dict = {}
    exec(python_blocks("adapters.md")[0], namespace)
    try:
        exec(python_blocks("adapters.md")[1], namespace)
    finally:
        plugin = pm.get_plugin("toy")
        if plugin is not None:
            pm.unregister(plugin)
