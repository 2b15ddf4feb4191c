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
from pnpseg.hookspecs import LazyFactory

ENTRY_POINT_GROUP = "pnpseg"
KINDS = ("adapters", "model_types", "postprocessors", "scorers", "datasets", "class_sources")


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that was skipped, and why (shown by ``pnpseg plugins`` and as a warning)."""

    name: str
    reason: str

    @property
    def message(self) -> str:
        return f"plugin {self.name!r} skipped: {self.reason}"


class PluginError(PnpsegError):
    """A plugin pnpseg cannot use: a taken name, or a hook that pnpseg does not have."""


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, made forgiving and strict where users meet it.

    Registering an object that is already registered (an installed package also registered
    in-process, as docs/adapters.md shows) returns its name instead of failing. A name taken
    by another object, or a hook pnpseg does not define (a misspelt ``register_adapter``,
    which pluggy would accept silently), is a one-line :class:`PluginError`.
    """

    def register(self, plugin: object, name: str | None = None) -> str | None:
        if self.is_registered(plugin):
            return self.get_name(plugin)
        if name is not None and self.get_plugin(name) is not None:
            raise PluginError(f"a different plugin is already registered as {name!r}")
        registered = super().register(plugin, name)
        unknown = sorted(caller.name for caller in self.get_hookcallers(plugin) or [] if not caller.has_spec())
        if unknown:
            self.unregister(plugin)
            known = ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("register_")))
            raise PluginError(f"implements unknown hook(s) {', '.join(unknown)} (pnpseg's hooks: {known})")
        return registered


pm = PluginManager("pnpseg")
pm.add_hookspecs(hookspecs)

_BUILTINS = ("pnpseg.builtins", "pnpseg.evaluation.datasets", "pnpseg.evaluation.authors")
_installed_loaded = False
_builtins_loaded = False
_broken: dict[str, BrokenPlugin] = {}
_dists: dict[str, tuple[str, str]] = {}  # plugin name → (distribution, version)


def broken_plugins() -> list[BrokenPlugin]:
    """Plugins skipped because they failed to import, register or run a hook."""
    return sorted(_broken.values(), key=lambda b: b.name)


def _skip(name: str, reason: str) -> None:
    _broken[name] = BrokenPlugin(name, " ".join(reason.split()))


def _describe(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


def register_checked(plugin: object, name: str) -> bool:
    """Register ``plugin`` unless it fails pluggy's checks or implements a hook pnpseg lacks."""
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as error:
        _skip(name, f"invalid hook implementation ({_describe(error)})")
        return False
    except PluginError as error:
        _skip(name, str(error))
        return False
    return True


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    """The ``pnpseg`` entry points to load: all, or those of the ``PNPSEG_LOAD_PLUGINS`` dists."""
    wanted = os.environ.get("PNPSEG_LOAD_PLUGINS")
    if wanted is None:
        return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    found = []
    for dist_name in filter(None, (n.strip() for n in wanted.split(","))):
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            _skip(dist_name, "PNPSEG_LOAD_PLUGINS names it, but no such distribution is installed")
            continue
        found += [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
    return found


def load_installed() -> pluggy.PluginManager:
    """Register installed plugins (entry points, ``PNPSEG_PLUGINS_DIR``) once, not the built-ins.

    This is all ``pnpseg --help`` needs (the ``register_commands`` hook); plugins register
    :func:`pnpseg.lazy` factories, so nothing heavy is imported. A plugin that fails to
    import or implements an unknown hook is skipped and listed by :func:`broken_plugins`.
    """
    global _installed_loaded
    if _installed_loaded:
        return pm
    _installed_loaded = True
    for ep in _entry_points():
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as error:
            _skip(ep.name, f"cannot be imported ({_describe(error)})")
            continue
        if register_checked(plugin, ep.name) and ep.dist is not None:
            _dists[ep.name] = (ep.dist.name, ep.dist.version)
    if os.environ.get("PNPSEG_PLUGINS_DIR"):
        load_plugins_dir(Path(os.environ["PNPSEG_PLUGINS_DIR"]))
    return pm


def load_plugins() -> pluggy.PluginManager:
    """Register the built-ins (which import torch) and installed plugins once; return the manager."""
    global _builtins_loaded
    load_installed()
    if not _builtins_loaded:
        _builtins_loaded = True
        for module_name in _BUILTINS:
            pm.register(importlib.import_module(module_name), name=module_name)
    return pm


def load_plugins_dir(directory: Path) -> None:
    """Register every ``*.py`` file in ``directory`` as a plugin module (broken ones skipped)."""
    if not directory.is_dir():
        raise PnpsegError(f"plugins directory {str(directory)!r} does not exist")
    for path in sorted(directory.glob("*.py")):
        name = f"pnpseg_dir_plugin_{path.stem}"
        if pm.get_plugin(name) is not None or name in _broken:
            continue
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None  # a *.py path always has both
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            del sys.modules[name]
            _skip(name, f"{path} cannot be imported ({_describe(error)})")
            continue
        register_checked(module, name)


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

        try:
            hook(register=register)
        except PnpsegError:
            raise
        except Exception as error:  # one plugin's bug must not take every command down
            _skip(owner, f"register_{kind} failed ({_describe(error)})")
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
    factory = registry[name]
    return factory.load() if isinstance(factory, LazyFactory) else factory


def adapter_for(model: str) -> str:
    """The name of the adapter that claims ``model``'s architecture or model type: as
    ``AutoModel`` does, the config's ``architectures`` are tried first, then its
    ``model_type``; adapters claim them through the ``register_model_types`` hook."""
    from pnpseg.io.checkpoint import read_config

    if model in adapters() and not Path(model).expanduser().exists():
        raise PnpsegError(f"{model!r} is an adapter name, not a checkpoint: use from_pretrained(adapter={model!r})")

    config = read_config(model)
    claims = model_types()
    architectures = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    model_type = config.get("model_type")
    for key in [*architectures, model_type]:
        if isinstance(key, str) and key in claims:
            return claims[key]
    described = ", ".join(repr(k) for k in [model_type, *architectures] if k) or "no model_type"
    claimed = ", ".join(f"{key} ({name})" for key, name in sorted(claims.items())) or "none"
    raise PnpsegError(
        f"no installed adapter claims {model!r} ({described}); claimed types: {claimed}; "
        "install an adapter plugin or pass adapter=NAME (--adapter)"
    )


@dataclass
class PluginInfo:
    name: str
    package: str
    version: str
    provides: dict[str, list[str]] = field(default_factory=dict)
    #: Why the plugin was skipped; empty when it works.
    broken: str = ""


def register_commands(cli: Any) -> None:
    """Let every plugin add its commands to the ``pnpseg`` Typer app (hook ``register_commands``)."""
    for plugin in load_installed().get_plugins():
        hook = getattr(plugin, "register_commands", None)
        if hook is None:
            continue
        try:
            hook(cli=cli)
        except Exception as error:
            _skip(pm.get_name(plugin) or repr(plugin), f"register_commands failed ({_describe(error)})")


def plugin_info() -> list[PluginInfo]:
    """What ``pnpseg plugins`` prints: each plugin, its distribution and what it registers."""
    load_plugins()
    infos = []
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin) or repr(plugin)
        if name in _dists:
            package, version = _dists[name]
        else:  # built-in or registered in-process
            package = "pnpseg" if name in _BUILTINS else "(in-process)"
            version = importlib.metadata.version("pnpseg") if package == "pnpseg" else ""
        provides = {kind: sorted(_collect(kind, plugin)) for kind in KINDS}
        infos.append(PluginInfo(name, package, version, provides, _broken[name].reason if name in _broken else ""))
    registered = {info.name for info in infos}
    for problem in broken_plugins():
        if problem.name not in registered:
            infos.append(PluginInfo(problem.name, "", "", {kind: [] for kind in KINDS}, problem.reason))
    return sorted(infos, key=lambda info: info.name)
