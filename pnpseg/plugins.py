"""The one plugin manager, and the name → factory registries built from its hooks.

Plugins come from three places: the entry-point group ``pnpseg`` (installed packages),
loose ``.py`` files in a plugins directory (``--plugins-dir`` / ``PNPSEG_PLUGINS_DIR``), and
``pm.register(obj)`` in-process (tests, notebooks). Set ``PNPSEG_LOAD_PLUGINS`` to a
comma-separated list of distribution names to load only those entry points (empty: none).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from pnpseg import hookspecs
from pnpseg.errors import PnpsegError, UnknownNameError

ENTRY_POINT_GROUP = "pnpseg"
KINDS = ("adapters", "model_types", "postprocessors", "scorers", "datasets", "class_sources")

pm = pluggy.PluginManager("pnpseg")
pm.add_hookspecs(hookspecs)

_BUILTINS = (
    "pnpseg.method.postprocess",
    "pnpseg.tuning.scorers",
    "pnpseg.testing.plugin",
    "pnpseg.evaluation.datasets",
    "pnpseg.evaluation.authors",
    "pnpseg.sources.class_sources",
)
_loaded = False


def load_plugins() -> pluggy.PluginManager:
    """Register built-ins and installed plugins once; return the plugin manager."""
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    for module_name in _BUILTINS:
        module = importlib.import_module(module_name)
        if not pm.is_registered(module):
            pm.register(module, name=module_name)
    wanted = os.environ.get("PNPSEG_LOAD_PLUGINS")
    if wanted is None:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    else:
        for dist_name in filter(None, (n.strip() for n in wanted.split(","))):
            for ep in importlib.metadata.distribution(dist_name).entry_points:
                if ep.group == ENTRY_POINT_GROUP and pm.get_plugin(ep.name) is None:
                    pm.register(ep.load(), name=ep.name)
    if os.environ.get("PNPSEG_PLUGINS_DIR"):
        load_plugins_dir(Path(os.environ["PNPSEG_PLUGINS_DIR"]))
    return pm


def load_plugins_dir(directory: Path) -> None:
    """Register every ``*.py`` file in ``directory`` as a plugin module."""
    if not directory.is_dir():
        raise PnpsegError(f"plugins directory {str(directory)!r} does not exist")
    for path in sorted(directory.glob("*.py")):
        name = f"pnpseg_dir_plugin_{path.stem}"
        if pm.get_plugin(name) is not None:
            continue
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        pm.register(module, name=name)


def _collect(kind: str, plugin: object | None = None) -> dict[str, Any]:
    """Call ``register_<kind>`` on all plugins (or one) and gather name → factory (or adapter name)."""
    load_plugins()
    found: dict[str, Any] = {}
    owners: dict[str, str] = {}
    plugins = [plugin] if plugin is not None else pm.get_plugins()
    for plug in plugins:
        hook = getattr(plug, f"register_{kind}", None)
        if hook is None:
            continue
        owner = pm.get_name(plug) or repr(plug)

        def register(name: str, factory: Any, _owner: str = owner) -> None:
            if name in owners and owners[name] != _owner:
                raise PnpsegError(f"{kind[:-1]} {name!r} is registered by both {owners[name]!r} and {_owner!r}")
            owners[name] = _owner
            found[name] = factory

        hook(register=register)
    return found


def adapters() -> dict[str, Callable[..., Any]]:
    return _collect("adapters")


def model_types() -> dict[str, str]:
    """Checkpoint ``model_type`` / architecture name → the adapter that claims it."""
    return _collect("model_types")


def postprocessors() -> dict[str, Callable[..., Any]]:
    return _collect("postprocessors")


def scorers() -> dict[str, Callable[..., Any]]:
    return _collect("scorers")


def lookup(kind: str, name: str) -> Callable[..., Any]:
    """The factory registered under ``name`` or an error listing what is available."""
    registry = _collect(kind)
    if name not in registry:
        raise UnknownNameError(kind[:-1], name, sorted(registry))
    return registry[name]


@dataclass
class PluginInfo:
    name: str
    package: str
    version: str
    provides: dict[str, list[str]] = field(default_factory=dict)


def register_commands(cli: Any) -> None:
    """Let every plugin add its commands to the ``pnpseg`` Typer app (hook ``register_commands``)."""
    load_plugins().hook.register_commands(cli=cli)


def plugin_info() -> list[PluginInfo]:
    """What ``pnpseg plugins`` prints: each plugin, its distribution and what it registers."""
    load_plugins()
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    infos = []
    for plugin in pm.get_plugins():
        dist = dists.get(id(plugin))
        if dist is not None:
            package, version = dist.project_name, dist.version
        else:  # built-in or registered in-process
            package = "pnpseg" if pm.get_name(plugin) in _BUILTINS else "(in-process)"
            version = importlib.metadata.version("pnpseg") if package == "pnpseg" else ""
        provides = {kind: sorted(_collect(kind, plugin)) for kind in KINDS}
        infos.append(PluginInfo(pm.get_name(plugin), package, version, provides))
    return sorted(infos, key=lambda info: info.name)
