"""No module uses another module's underscore names (the engines once drove each other's
private parts; this keeps every seam explicit)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(path for folder in ("pnpseg", "plugins", "examples") for path in (ROOT / folder).rglob("*.py"))


#: Documented names that start with "_": the standard library's ``os._exit``, and
#: transformers' ``config._attn_implementation``, the switch its attention-interface guide
#: documents (it has no public setter for one module's copy of a config).
PUBLIC = {("os", "_exit"), ("config", "_attn_implementation")}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_module(dotted: str) -> bool:
    """A module path with a private part, such as ``typer._click``: another package's insides."""
    return any(_private(part) for part in dotted.split("."))


def private_uses(source: str) -> list[str]:
    """``from m import _x`` and ``obj._x`` where ``obj`` is not ``self``, ``cls`` or ``super()``:
    a module's, or another object's, private name. ``os._exit`` is public, documented API
    despite its underscore (a worker that must end without running any cleanup uses it)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if _private_module(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and _private_module(node.module):
            found.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.ImportFrom):
            found += [f"line {node.lineno}: from {node.module} import {a.name}" for a in node.names if _private(a.name)]
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
                continue
            if isinstance(owner, ast.Name) and (owner.id, node.attr) in PUBLIC:
                continue
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_check_finds_private_uses():
    code = (
        "from pnpseg.engines.parallel import _finish\nimport os\njob._run_batch()\nself._ok()\nsuper()._hook()\n"
        "os._exit(1)\nos._private()\n"
    )
    assert private_uses(code) == [
        "line 1: from pnpseg.engines.parallel import _finish",
        "line 3: job._run_batch",
        "line 7: os._private",
    ]


def test_the_check_finds_private_modules():
    code = "from typer._click.exceptions import ClickException\nimport typer._click\nfrom typer import Exit\n"
    assert private_uses(code) == [
        "line 1: from typer._click.exceptions import ...",
        "line 2: import typer._click",
    ]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_module_uses_another_modules_private_names(path):
    assert private_uses(path.read_text(encoding="utf-8")) == []
