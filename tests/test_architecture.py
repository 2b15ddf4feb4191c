"""The shape of the package: its module-level import graph has no cycles, and the method
core reads no files (of :mod:`pnpseg.io` it uses only image decoding)."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parents[1] / "pnpseg"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _target(name: str) -> str | None:
    """The most specific first-party module that ``import name`` executes."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(nodes, module: str, init: bool) -> set[str]:
    """First-party modules that the import statements among ``nodes`` execute."""
    found: set[str] = set()
    package = module if init else module.rpartition(".")[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found |= {f"{base}.{a.name}" for a in node.names} | {base}
    return {t for t in map(_target, found) if t and t != module}


def _top_level_imports(path: Path, module: str) -> set[str]:
    """Modules imported when ``module`` is imported: module-level statements only (imports
    inside functions run later, and ``if TYPE_CHECKING:`` blocks never run)."""
    body = [
        node
        for node in ast.parse(path.read_text()).body
        if not (isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test))
    ]
    return _imports(body, module, path.name == "__init__.py")


def import_graph() -> nx.DiGraph:
    graph = nx.DiGraph()
    for module, path in MODULES.items():
        graph.add_node(module)
        graph.add_edges_from((module, target) for target in _top_level_imports(path, module))
    return graph


def test_the_graph_sees_the_imports():
    graph = import_graph()
    assert graph.has_edge("pnpseg.method.segmenter", "pnpseg.method.saliency")
    assert graph.has_edge("pnpseg.cli", "pnpseg.cli.segment")


def test_no_import_cycles():
    cycles = list(nx.simple_cycles(import_graph()))
    assert not cycles, cycles


def _all_imports(path: Path, module: str) -> set[str]:
    """First-party modules ``module`` imports anywhere, inside functions included."""
    return _imports(ast.walk(ast.parse(path.read_text())), module, path.name == "__init__.py")


#: Image decoding, and nothing else: the ``--viz`` overlay a notebook's result draws lives
#: outside ``io`` (:mod:`pnpseg.drawing`), which writes no file.
METHOD_MAY_USE_FROM_IO = {"pnpseg.io", "pnpseg.io.images"}


def method_io_imports() -> dict[str, set[str]]:
    """``pnpseg.io`` modules that ``pnpseg.method`` modules import, besides image decoding."""
    found = {}
    for module, path in MODULES.items():
        if module == "pnpseg.method" or module.startswith("pnpseg.method."):
            io = {t for t in _all_imports(path, module) if t.startswith("pnpseg.io")} - METHOD_MAY_USE_FROM_IO
            if io:
                found[module] = io
    return found


def test_the_layering_check_sees_lazy_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from pnpseg.io.outputs import write_json\n")
    assert _all_imports(source, "pnpseg.method.m") == {"pnpseg.io.outputs"}


def test_method_imports_nothing_from_io_but_images():
    assert not method_io_imports(), method_io_imports()


def test_drawing_and_label_maps_read_and_write_no_files():
    """What the method may use besides the steps draws and checks in memory: it imports
    nothing from ``io`` (so nothing that reads or writes a file)."""
    for module in ("pnpseg.drawing", "pnpseg.labelmaps"):
        assert not {t for t in _all_imports(MODULES[module], module) if t.startswith("pnpseg.io")}, module


def test_sources_read_class_lists_without_building_a_dataset():
    """GPT-4o answers index a built-in dataset's class list: read from ``pnpseg/data`` through
    :mod:`pnpseg.io.class_lists`, the table evaluation builds its datasets from."""
    for module, path in MODULES.items():
        if module.startswith("pnpseg.sources"):
            assert not {t for t in _all_imports(path, module) if t.startswith("pnpseg.evaluation")}, module
