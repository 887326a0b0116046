"""Loading plugins and choosing a strategy and a storage backend by name."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points

import pluggy

from . import hookspec
from .errors import PluginError

#: The entry-point group default and third-party plugins register in.
ENTRY_POINT_GROUP = "torrentcore"
DEFAULT_STRATEGY = "rarest-first"
DEFAULT_STORAGE = "filesystem"


def get_plugin_manager(
    disabled: Iterable[str] = (), extra_modules: Iterable[str] = (), load_entrypoints: bool = True
) -> pluggy.PluginManager:
    """A plugin manager with the hookspecs, entry-point plugins and ``extra_modules`` loaded.

    ``disabled`` names plugins (entry-point names, or module names given in
    ``extra_modules``) that must not be loaded. Unknown names are an error
    naming the plugins that exist.
    """
    pm = pluggy.PluginManager(hookspec.PROJECT)
    pm.add_hookspecs(hookspec)
    disabled = list(disabled)
    for name in disabled:
        pm.set_blocked(name)
    if load_entrypoints:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for module_name in extra_modules:
        if pm.is_blocked(module_name):
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise PluginError(f"cannot import plugin module {module_name!r}: {exc}") from None
        pm.register(module, name=module_name)
    known = set(available_plugins(pm)) | set(extra_modules)
    unknown = [n for n in disabled if n not in known]
    if unknown:
        raise PluginError(
            f"cannot disable unknown plugin {unknown[0]!r} (installed: {', '.join(sorted(known)) or 'none'})"
        )
    return pm


def available_plugins(pm: pluggy.PluginManager) -> list[str]:
    """Names of every installed plugin, loaded or blocked."""
    names = {name for name, plugin in pm.list_name_plugin() if plugin is not None}
    names.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def _merged(results: Iterable[Mapping], kind: str) -> dict:
    merged: dict = {}
    for mapping in results:
        for name, factory in (mapping or {}).items():
            if name in merged and merged[name] is not factory:
                raise PluginError(f"two plugins offer a {kind} named {name!r}")
            merged[name] = factory
    return merged


def strategies(pm: pluggy.PluginManager) -> dict[str, hookspec.StrategyFactory]:
    """Every piece strategy the loaded plugins offer, by name."""
    return _merged(pm.hook.torrentcore_piece_strategies(), "piece strategy")


def storages(pm: pluggy.PluginManager) -> dict[str, hookspec.StorageFactory]:
    """Every storage backend the loaded plugins offer, by name."""
    return _merged(pm.hook.torrentcore_storage_backends(), "storage backend")


def _choose(options: dict, name: str, kind: str):
    if name in options:
        return options[name]
    choices = ", ".join(sorted(options)) or "none (is a plugin disabled?)"
    raise PluginError(f"unknown {kind} {name!r} (available: {choices})")


def choose_strategy(pm: pluggy.PluginManager, name: str = DEFAULT_STRATEGY) -> hookspec.StrategyFactory:
    """The factory of the strategy called ``name``; a clear error listing the choices otherwise."""
    return _choose(strategies(pm), name, "piece strategy")


def choose_storage(pm: pluggy.PluginManager, name: str = DEFAULT_STORAGE) -> hookspec.StorageFactory:
    """The factory of the storage backend called ``name``; a clear error listing the choices otherwise."""
    return _choose(storages(pm), name, "storage backend")
