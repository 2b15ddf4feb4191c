"""The one plugin manager, and the name → factory registries built from its hooks.

Plugins come from three places: the entry-point group ``pnpseg`` (installed packages),
loose ``.py`` files in a plugins directory (``--plugins-dir`` / ``PNPSEG_PLUGINS_DIR``), and
``pm.register(obj)`` in-process (tests, notebooks). Set ``PNPSEG_LOAD_PLUGINS`` to a
comma-separated list of distribution names to load only those entry points (empty: none).

Registries are collected through pluggy's hook callers, built-ins first, and cached until a
plugin is registered or unregistered. A plugin that cannot be used (it fails to import,
even by ``sys.exit()``; its hook raises; it registers a name another plugin already has) is
skipped and listed by :func:`broken_plugins`; nothing it does takes a command down.
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
from pnpseg.errors import PluginDefectError, PnpsegError, UnknownNameError
from pnpseg.hookspecs import LazyFactory

ENTRY_POINT_GROUP = "pnpseg"
#: The environment variable naming a folder of loose plugin files (read here only).
PLUGINS_DIR_ENV = "PNPSEG_PLUGINS_DIR"
KINDS = ("adapters", "model_types", "postprocessors", "scorers", "datasets", "class_sources")


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that was skipped, and why (shown by ``pnpseg plugins`` and as a warning)."""

    name: str
    reason: str
    #: The kinds it failed to register (None: unknown, e.g. it failed to import).
    kinds: frozenset[str] | None = None

    @property
    def message(self) -> str:
        if self.name == PLUGINS_DIR_ENV:
            return f"{self.name}: {self.reason}"
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
        _registries.clear()
        return registered

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any:
        _registries.clear()
        return super().unregister(plugin, name)


pm = PluginManager("pnpseg")
pm.add_hookspecs(hookspecs)

_BUILTINS = ("pnpseg.builtins", "pnpseg.evaluation.datasets", "pnpseg.evaluation.authors")
_installed_loaded = False
_builtins_loaded = False
_broken: dict[str, BrokenPlugin] = {}
_dists: dict[str, tuple[str, str]] = {}  # plugin name → (distribution, version)
_files: dict[str, Path] = {}  # plugin name → the loose file it came from (plugins directory)
_commands: dict[str, list[str]] = {}  # plugin name → the commands its register_commands added
_registries: dict[str, dict[str, Any]] = {}  # kind → name → factory; cleared on (un)register
_listeners: list[Callable[[BrokenPlugin], None]] = []


def broken_plugins() -> list[BrokenPlugin]:
    """Plugins skipped because they failed to import, register or run a hook."""
    return sorted(_broken.values(), key=lambda b: b.name)


def on_broken(listener: Callable[[BrokenPlugin], None] | None) -> None:
    """Call ``listener`` with each plugin found broken from now on (the CLI prints a warning
    line; ``None`` stops that); those found already are in :func:`broken_plugins`."""
    _listeners[:] = [listener] if listener is not None else []


def _skip(name: str, reason: str, kind: str | None = None) -> None:
    problem = BrokenPlugin(name, " ".join(reason.split()), None if kind is None else frozenset({kind}))
    _broken[name] = problem
    for listener in _listeners:
        listener(problem)


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
        except BaseException as error:  # noqa: BLE001 - sys.exit() or Ctrl-C raised at import must not end every command
            _skip(ep.name, f"cannot be imported ({_describe(error)})")
            continue
        if register_checked(plugin, ep.name) and ep.dist is not None:
            _dists[ep.name] = (ep.dist.name, ep.dist.version)
    folder = os.environ.get(PLUGINS_DIR_ENV)
    if folder:
        try:
            load_plugins_dir(Path(folder))
        except PnpsegError as error:  # a stale variable must not stop every command, --version included
            _skip(PLUGINS_DIR_ENV, f"{error}; no plugins loaded from it")
    return pm


def check_hooks() -> None:
    """Call every loaded plugin's ``register_*`` hooks once with a throwaway callback, so that
    a hook that raises is found (and reported) by every command, not only by the command
    that needs its kind. Cheap: plugins register lazy factories, and the built-ins, which
    cannot raise, are not loaded for this."""
    for kind in KINDS:
        for impl in getattr(pm.hook, f"register_{kind}").get_hookimpls():
            if impl.plugin_name in _broken or impl.plugin_name in _BUILTINS:
                continue
            try:
                impl.function(register=lambda name, factory: None)
            except Exception as error:
                _skip(impl.plugin_name, f"register_{kind} failed ({_describe(error)})", kind)


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
        raise PnpsegError(f"plugins directory {str(directory)!r} is not a folder")
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
        except BaseException as error:  # noqa: BLE001 - as for entry points
            del sys.modules[name]
            _skip(name, f"{path} cannot be imported ({_describe(error)})")
            continue
        if register_checked(module, name):
            _files[name] = path


def loaded_plugin_dirs() -> list[Path]:
    """The plugins directories this process loaded files from: a spawned worker process
    loads them too, so that the adapters and postprocessors they register exist there."""
    return sorted({path.parent for path in _files.values()})


def _hook_order(impl: Any) -> tuple[int, int]:
    """Built-ins first, so a plugin can never take a built-in name; then registration order."""
    names = [name for name, _ in pm.list_name_plugin()]
    return (impl.plugin_name not in _BUILTINS, names.index(impl.plugin_name))


def _collect(kind: str) -> tuple[dict[str, Any], dict[str, str]]:
    """``register_<kind>`` called through pluggy's hook caller: name → factory (or adapter
    name) and name → plugin, cached until the next (un)register. A plugin whose hook raises,
    or that registers a name an earlier plugin has, is skipped whole: the cache is rebuilt
    without it, so it provides nothing of any kind."""
    load_plugins()
    while kind not in _registries:
        found: dict[str, Any] = {}
        owners: dict[str, str] = {}
        caller = getattr(pm.hook, f"register_{kind}")
        for impl in sorted(caller.get_hookimpls(), key=_hook_order):
            owner = impl.plugin_name
            if owner in _broken:
                continue
            mine: dict[str, Any] = {}
            try:
                impl.function(register=lambda name, factory, _mine=mine: _mine.__setitem__(name, factory))
            except Exception as error:  # one plugin's bug must not take every command down
                _skip(owner, f"register_{kind} failed ({_describe(error)})", kind)
                break
            taken = sorted(name for name in mine if name in owners)
            if taken:
                _skip(owner, f"registers {kind[:-1]} {taken[0]!r}, which {owners[taken[0]]!r} already provides", kind)
                break
            found.update(mine)
            owners.update(dict.fromkeys(mine, owner))
        else:
            _registries[kind], _registries[f"{kind}:owners"] = found, owners
            break
        _registries.clear()  # a plugin was found broken: collect every kind again without it
    return _registries[kind], _registries[f"{kind}:owners"]


def registry(kind: str) -> dict[str, Any]:
    """Name → factory for one of :data:`KINDS` (``model_types``: name → adapter name)."""
    return dict(_collect(kind)[0])


def adapters() -> dict[str, Callable[..., Any]]:
    return registry("adapters")


def model_types() -> dict[str, str]:
    """Checkpoint ``model_type`` / architecture name → the adapter that claims it."""
    return registry("model_types")


def postprocessors() -> dict[str, Callable[..., Any]]:
    return registry("postprocessors")


def scorers() -> dict[str, Callable[..., Any]]:
    return registry("scorers")


def lookup(kind: str, name: str) -> Callable[..., Any]:
    """The factory registered under ``name``, or an error listing what is available and
    naming the broken plugins that might have provided it."""
    found = _collect(kind)[0]
    if name not in found:
        suspects = [b for b in broken_plugins() if b.kinds is None or kind in b.kinds]
        if suspects:
            blame = "; ".join(b.message for b in suspects)
            listed = ", ".join(sorted(found)) or "none installed"
            raise PluginDefectError(f"{kind[:-1]} {name!r} is not available: {blame} (available: {listed})")
        raise UnknownNameError(kind[:-1], name, sorted(found))
    factory = found[name]
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
    #: Distribution name, ``pnpseg`` for the built-ins, the file of a plugins-directory
    #: plugin, or ``in-process``.
    package: str
    version: str
    provides: dict[str, list[str]] = field(default_factory=dict)
    #: The commands its ``register_commands`` hook added.
    commands: list[str] = field(default_factory=list)
    #: Why the plugin was skipped; empty when it works.
    broken: str = ""


def register_commands(cli: Any) -> None:
    """Let every plugin add its commands to the ``pnpseg`` Typer app (hook ``register_commands``),
    remembering which plugin added which command for ``pnpseg plugins``."""
    load_installed()
    for impl in pm.hook.register_commands.get_hookimpls():
        before = _command_names(cli)
        try:
            impl.function(cli=cli)
        except Exception as error:
            _skip(impl.plugin_name, f"register_commands failed ({_describe(error)})", "commands")
        _commands[impl.plugin_name] = [name for name in _command_names(cli) if name not in before]


def _command_names(cli: Any) -> list[str]:
    """Typer's own naming: an explicit name, else the function's with ``_`` as ``-``."""
    names = [info.name or getattr(info.callback, "__name__", None) for info in cli.registered_commands]
    names += [info.name for info in cli.registered_groups]
    return [name.replace("_", "-") for name in names if isinstance(name, str)]


def _origin(name: str) -> tuple[str, str]:
    if name in _dists:
        return _dists[name]
    if name in _BUILTINS:
        return "pnpseg", importlib.metadata.version("pnpseg")
    if name in _files:
        return str(_files[name]), ""
    return "in-process", ""


def plugin_info() -> list[PluginInfo]:
    """What ``pnpseg plugins`` prints: each plugin, where it comes from, what it registers."""
    load_plugins()
    owners = {kind: _collect(kind)[1] for kind in KINDS}
    infos = []
    for name, _ in pm.list_name_plugin():
        provides = {kind: sorted(n for n, owner in owners[kind].items() if owner == name) for kind in KINDS}
        broken = _broken[name].reason if name in _broken else ""
        infos.append(PluginInfo(name, *_origin(name), provides, _commands.get(name, []), broken))
    registered = {info.name for info in infos}
    for problem in broken_plugins():
        if problem.name not in registered:
            infos.append(PluginInfo(problem.name, "", "", {kind: [] for kind in KINDS}, [], problem.reason))
    return sorted(infos, key=lambda info: info.name)
