"""Loading plugins, listing them, their settings, and keeping a faulty plugin from taking a run down.

(About 640 lines: the four jobs share the plugin manager's view of names and entry points.)

* :func:`get_plugin_manager` loads the ``torrentcore`` entry-point group, the
  opt-in group (``torrentcore.opt_in``, loaded only when named with ``-p``)
  and modules named with ``-p MODULE``; ``--no-plugin NAME`` blocks a plugin.
* :func:`plugin_infos` describes every installed plugin (kind, version, the
  distribution it came from) for ``torrentcore plugins``.
* :func:`resolve_settings` merges the settings plugins declare
  (:func:`~torrentcore.hookspec.torrentcore_plugin_settings`) with the config
  file and ``--plugin-opt NAME.KEY=VALUE``, validating every value.
* Containment: :class:`ContainedHooks` calls reporter hooks one plugin at a
  time and unregisters a plugin whose reporter raised; :func:`choose_strategy`
  and :func:`choose_storage` return factories that name the plugin when they
  fail, and strategies that fall back to rarest-first when they raise
  mid-download.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pluggy
import structlog

from . import hookspec
from .entry_points import EntryPoint
from .entry_points import installed as installed_entry_points
from .errors import BadInputError, PluginError, StorageError

log = structlog.get_logger(__name__)

#: The entry-point group default and third-party plugins register in (loaded by every run).
ENTRY_POINT_GROUP = "torrentcore"
#: Entry points of installed plugins that are loaded only when named with ``-p NAME``.
OPT_IN_GROUP = "torrentcore.opt_in"
DEFAULT_STRATEGY = "rarest-first"
DEFAULT_STORAGE = "filesystem"
#: Prefix of the reporter hooks (called through :class:`ContainedHooks`).
REPORTER_PREFIX = "torrentcore_on_"


# --- loading ---------------------------------------------------------------------------------------


def _installed_entry_points() -> Any:
    """Every installed entry point: :func:`torrentcore.entry_points.installed` (one scan while ``sys.path`` and
    its folders are unchanged; each scan reads every distribution's metadata: a run made 6 of them, 7 % of
    its start-up, before they were shared; the CLI's scan for gevent's monkey-patching is the first)."""
    return installed_entry_points()


def _entry_points(group: str) -> dict[str, EntryPoint]:
    """Entry points of ``group`` by name (the first distribution on ``sys.path`` wins a duplicate name)."""
    found: dict[str, EntryPoint] = {}
    for ep in _installed_entry_points().select(group=group):
        found.setdefault(ep.name, ep)
    return found


def get_plugin_manager(
    disabled: Iterable[str] = (), extra_modules: Iterable[str] = (), load_entrypoints: bool = True
) -> pluggy.PluginManager:
    """A plugin manager with the hookspecs, entry-point plugins and ``extra_modules`` loaded.

    ``extra_modules`` are the names given with ``-p``: the name of an opt-in
    entry point (group ``torrentcore.opt_in``) loads it; the name of an
    entry point that is loaded anyway changes nothing; anything else is
    imported as a module and registered under its import name.
    ``disabled`` names plugins (entry-point names, or ``-p`` names) that must
    not be loaded; disabling wins over ``-p``. Unknown names are an error
    naming the plugins that exist.
    """
    pm = pluggy.PluginManager(hookspec.PROJECT)
    pm.add_hookspecs(hookspec)
    disabled = list(disabled)
    extra_modules = list(extra_modules)
    for name in disabled:
        pm.set_blocked(name)
    regular = _entry_points(ENTRY_POINT_GROUP) if load_entrypoints else {}
    for name, ep in regular.items():
        # What pluggy's load_setuptools_entrypoints does, from the shared scan (pluggy's own rescans every
        # distribution through importlib.metadata).
        if pm.is_blocked(name) or pm.get_plugin(name) is not None:
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # noqa: BLE001 - an installed plugin that cannot even be imported
            raise PluginError(f"cannot load an installed plugin: {exc!r} (disable it with --no-plugin NAME)") from None
        _register(pm, plugin, name)
    opt_in = _entry_points(OPT_IN_GROUP)
    for name in extra_modules:
        if pm.is_blocked(name) or name in regular or pm.get_plugin(name) is not None:
            continue
        if name in opt_in:
            try:
                plugin = opt_in[name].load()
            except Exception as exc:  # noqa: BLE001 - the user asked for it: one line naming it
                raise PluginError(f"cannot load plugin {name!r}: {exc!r}") from None
        else:
            try:
                plugin = importlib.import_module(name)
            except ImportError as exc:
                hint = f"; opt-in plugins: {', '.join(sorted(opt_in))}" if opt_in else ""
                raise PluginError(f"cannot import plugin module {name!r}: {exc}{hint}") from None
        _register(pm, plugin, name)
    known = set(available_plugins(pm)) | set(extra_modules)
    unknown = [n for n in disabled if n not in known]
    if unknown:
        raise PluginError(
            f"cannot disable unknown plugin {unknown[0]!r} (installed: {', '.join(sorted(known)) or 'none'})"
        )
    return pm


def _register(pm: pluggy.PluginManager, plugin: object, name: str) -> None:
    try:
        pm.register(plugin, name=name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        raise PluginError(f"plugin {name!r} does not fit the hookspec: {exc}") from None


def available_plugins(pm: pluggy.PluginManager) -> list[str]:
    """Names of every installed plugin, loaded, blocked or opt-in."""
    names = {name for name, plugin in pm.list_name_plugin() if plugin is not None}
    names.update(_entry_points(ENTRY_POINT_GROUP))
    names.update(_entry_points(OPT_IN_GROUP))
    return sorted(names)


def plugin_name(pm: pluggy.PluginManager, plugin: object) -> str:
    """The name ``plugin`` is registered under (its entry-point or ``-p`` name)."""
    return pm.get_name(plugin) or getattr(plugin, "__name__", repr(plugin))


# --- listing ---------------------------------------------------------------------------------------

#: Which hooks make a plugin of which kind (``torrentcore plugins``).
KIND_OF_HOOK = {
    "torrentcore_piece_strategies": "strategy",
    "torrentcore_storage_backends": "storage",
    "torrentcore_extensions": "extension",
    "torrentcore_add_options": "options",
    "torrentcore_plugin_settings": "options",
}
KIND_ORDER = ("strategy", "storage", "reporter", "extension", "options", "other")


def kinds_of(hooks: Iterable[str]) -> list[str]:
    """The kinds (strategy, storage, reporter, extension, options, other) a set of hook names makes."""
    kinds = set()
    for hook in hooks:
        if hook.startswith(REPORTER_PREFIX):
            kinds.add("reporter")
        elif "extension" in hook:
            kinds.add("extension")
        else:
            kinds.add(KIND_OF_HOOK.get(hook, "other"))
    return [k for k in KIND_ORDER if k in kinds]


@dataclass
class PluginInfo:
    """One installed plugin as ``torrentcore plugins`` shows it."""

    name: str
    state: str  #: "loaded", "disabled" (--no-plugin) or "opt-in" (installed; load with -p NAME)
    kinds: list[str]
    hooks: list[str]
    dist: str | None  #: the distribution (package) it came from
    version: str | None
    module: str
    error: str | None = None  #: why its hooks could not be read (an import error)
    settings: dict[str, dict[str, hookspec.Setting]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return {
            "name": self.name, "state": self.state, "kinds": self.kinds, "hooks": self.hooks,
            "dist": self.dist, "version": self.version, "module": self.module, "error": self.error,
            "settings": {ns: {k: _setting_json(s) for k, s in keys.items()} for ns, keys in self.settings.items()},
        }


def _setting_json(s: hookspec.Setting) -> dict[str, Any]:
    return {"type": getattr(s.type, "__name__", str(s.type)), "default": s.default, "help": s.help,
            "choices": list(s.choices) if s.choices else None}


def _hooks_of(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    """Hook names ``plugin`` implements (without registering it)."""
    names = []
    for attr in dir(plugin):
        if attr.startswith("torrentcore_") and pm.parse_hookimpl_opts(plugin, attr) is not None:
            names.append(attr)
    return sorted(names)


def _dist_of_module(module: str) -> tuple[str | None, str | None]:
    from importlib import metadata  # (``torrentcore plugins`` only: a run never needs it)

    top = module.split(".")[0]
    try:
        dists = metadata.packages_distributions().get(top) or []
        if dists:
            return dists[0], metadata.version(dists[0])
    except Exception:  # noqa: BLE001 - broken metadata of an unrelated package must not break the listing
        pass
    mod = sys.modules.get(module)
    return None, getattr(mod, "__version__", None)


def plugin_infos(pm: pluggy.PluginManager) -> list[PluginInfo]:
    """Every installed or loaded plugin, by name: state, kinds (from the hooks it implements), dist, version."""
    regular = _entry_points(ENTRY_POINT_GROUP)
    opt_in = _entry_points(OPT_IN_GROUP)
    loaded = {name: plugin for name, plugin in pm.list_name_plugin() if plugin is not None}
    infos = []
    for name in available_plugins(pm):
        ep = regular.get(name) or opt_in.get(name)
        plugin = loaded.get(name)
        error = None
        if plugin is not None:
            hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
            state = "loaded"
        else:
            state = "disabled" if pm.is_blocked(name) else "opt-in"
            hooks = []
            try:
                hooks = _hooks_of(pm, ep.load())
            except Exception as exc:  # noqa: BLE001 - listing must survive a broken plugin
                error = f"cannot import: {exc!r}"
        if ep is not None:
            module = ep.value
            dist = ep.dist.name if ep.dist is not None else None
            version = ep.dist.version if ep.dist is not None else None
        else:
            module = getattr(plugin, "__name__", name)
            dist, version = _dist_of_module(module)
        settings = {}
        if plugin is not None and hasattr(plugin, "torrentcore_plugin_settings"):
            try:
                settings = dict(plugin.torrentcore_plugin_settings() or {})
            except Exception as exc:  # noqa: BLE001
                error = f"settings hook failed: {exc!r}"
        infos.append(PluginInfo(name, state, kinds_of(hooks), hooks, dist, version, module, error, settings))
    return infos


# --- choosing strategy and storage -----------------------------------------------------------------


def _offers(pm: pluggy.PluginManager, hook_name: str, kind: str) -> dict[str, tuple[Any, str]]:
    """``{name: (factory, plugin name)}`` from every plugin implementing ``hook_name``; duplicates are an error."""
    merged: dict[str, tuple[Any, str]] = {}
    for impl in reversed(getattr(pm.hook, hook_name).get_hookimpls()):
        owner = plugin_name(pm, impl.plugin)
        try:
            mapping = impl.function() or {}
            items = list(mapping.items())
        except Exception as exc:  # noqa: BLE001 - name the plugin, one line
            raise PluginError(f"plugin {owner!r} failed to list its {kind}s: {exc!r}") from None
        for name, factory in items:
            if name in merged and merged[name][0] is not factory:
                raise PluginError(f"two plugins offer a {kind} named {name!r} ({merged[name][1]} and {owner})")
            merged[name] = (factory, owner)
    return merged


def strategies(pm: pluggy.PluginManager) -> dict[str, hookspec.StrategyFactory]:
    """Every piece strategy the loaded plugins offer, by name."""
    return {name: f for name, (f, _) in _offers(pm, "torrentcore_piece_strategies", "piece strategy").items()}


def storages(pm: pluggy.PluginManager) -> dict[str, hookspec.StorageFactory]:
    """Every storage backend the loaded plugins offer, by name."""
    return {name: f for name, (f, _) in _offers(pm, "torrentcore_storage_backends", "storage backend").items()}


def providers(pm: pluggy.PluginManager) -> dict[str, dict[str, str]]:
    """``{"strategy": {name: plugin}, "storage": {name: plugin}}``: which plugin offers what."""
    return {
        "strategy": {n: p for n, (_, p) in _offers(pm, "torrentcore_piece_strategies", "piece strategy").items()},
        "storage": {n: p for n, (_, p) in _offers(pm, "torrentcore_storage_backends", "storage backend").items()},
    }


def _choose(offers: dict[str, tuple[Any, str]], name: str, kind: str) -> tuple[Any, str]:
    if name in offers:
        return offers[name]
    choices = ", ".join(sorted(offers)) or "none (is a plugin disabled?)"
    raise PluginError(f"unknown {kind} {name!r} (available: {choices})")


def choose_strategy(pm: pluggy.PluginManager, name: str = DEFAULT_STRATEGY) -> hookspec.StrategyFactory:
    """The factory of the strategy called ``name`` (guarded, see the module docstring); a clear error otherwise.

    The returned factory raises :class:`PluginError` (exit 2) naming the plugin
    when the plugin's factory raises or returns something that is not a
    :class:`~torrentcore.hookspec.PieceStrategy`; the strategy it returns falls
    back to rarest-first if ``next_pieces`` ever raises.
    """
    factory, owner = _choose(_offers(pm, "torrentcore_piece_strategies", "piece strategy"), name, "piece strategy")

    def guarded_strategy_factory(torrent, options):
        strategy = _call_factory(factory, (torrent, options), f"piece strategy {name!r} (plugin {owner!r})")
        if not isinstance(strategy, hookspec.PieceStrategy):
            raise PluginError(f"piece strategy {name!r} (plugin {owner!r}) did not return a strategy object "
                              f"(got {type(strategy).__name__})")
        return GuardedStrategy(strategy, name, owner, torrent, options)

    return guarded_strategy_factory


def choose_storage(pm: pluggy.PluginManager, name: str = DEFAULT_STORAGE) -> hookspec.StorageFactory:
    """The factory of the storage backend called ``name`` (guarded like :func:`choose_strategy`).

    :class:`~torrentcore.errors.StorageError` from the factory passes through
    unchanged (a disk problem: exit 1); any other exception becomes a
    :class:`PluginError` (exit 2) naming the plugin.
    """
    factory, owner = _choose(_offers(pm, "torrentcore_storage_backends", "storage backend"), name, "storage backend")

    def guarded_storage_factory(torrent, save_path, options):
        storage = _call_factory(factory, (torrent, save_path, options), f"storage backend {name!r} (plugin {owner!r})")
        if not isinstance(storage, hookspec.Storage):
            raise PluginError(f"storage backend {name!r} (plugin {owner!r}) did not return a storage object "
                              f"(got {type(storage).__name__})")
        return storage

    return guarded_storage_factory


def _call_factory(factory, args: tuple, what: str):
    try:
        return factory(*args)
    except (StorageError, PluginError, BadInputError):
        raise
    except Exception as exc:  # noqa: BLE001 - refuse to start with one line naming the plugin
        raise PluginError(f"{what} failed to start: {exc!r}") from None


class GuardedStrategy:
    """A plugin's :class:`~torrentcore.hookspec.PieceStrategy` that falls back to rarest-first if it raises.

    The first exception from the plugin's ``next_pieces`` is logged once
    (warning ``strategy failed``, naming the strategy and its plugin); from then
    on the default rarest-first strategy chooses pieces for the rest of the run.
    """

    def __init__(self, inner: hookspec.PieceStrategy, name: str, plugin: str, torrent, options) -> None:
        self.inner = inner
        self.name = name
        self.plugin = plugin
        self._torrent = torrent
        self._fallback: hookspec.PieceStrategy | None = None

    def __getattr__(self, name: str) -> Any:
        # Anything else (a strategy's own attributes and methods) is the plugin's object's.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def failed(self) -> bool:
        """True once the plugin's strategy raised and rarest-first took over."""
        return self._fallback is not None

    def next_pieces(self, swarm: hookspec.SwarmView, peer_has: hookspec.Bitfield) -> Iterator[int]:
        """The plugin's order; rarest-first's after the plugin raised."""
        if self._fallback is None:
            try:
                yield from self.inner.next_pieces(swarm, peer_has)
                return
            except Exception as exc:  # noqa: BLE001 - a plugin bug must not stop the download
                self._fall_back(exc)
        yield from self._fallback.next_pieces(swarm, peer_has)

    def availability_changed(self, pieces, delta: int) -> None:
        """Pass the optional incremental update on to whichever strategy chooses pieces now (if it has one)."""
        target = self._fallback if self._fallback is not None else self.inner
        changed = getattr(target, "availability_changed", None)
        if changed is None:
            return
        try:
            changed(pieces, delta)
        except Exception as exc:  # noqa: BLE001 - a plugin bug must not stop the download
            if target is not self.inner:
                raise
            self._fall_back(exc)  # the fallback builds its order from the availability at its first call

    def _fall_back(self, exc: Exception) -> None:
        from torrentcore_plugins.rarest_first import RarestFirst

        log.warning(f"piece strategy {self.name!r} (plugin {self.plugin!r}) raised {exc!r}; "
                    "falling back to rarest-first", strategy=self.name, plugin=self.plugin)
        self._fallback = RarestFirst(self._torrent.num_pieces)


# --- containment of reporters ----------------------------------------------------------------------


class ContainedHooks:
    """``pm.hook`` for the engine, with every ``torrentcore_on_*`` reporter call contained.

    ``hooks.torrentcore_on_progress(torrent=..., snapshot=...)`` calls each
    implementation in pluggy's order, one at a time. When one raises, a single
    warning naming the plugin is logged (``reporter plugin 'X' raised ... in
    HOOK; disabled``), the plugin is unregistered (none of its hooks is called
    again in this run) and the remaining implementations still get the call.
    Other hooks are passed through to ``pm.hook`` unchanged.
    """

    def __init__(self, pm: pluggy.PluginManager, logger=None) -> None:
        self._pm = pm
        self._log = logger or log
        self.disabled: list[str] = []

    def __getattr__(self, name: str):
        caller = getattr(self._pm.hook, name)
        if not name.startswith(REPORTER_PREFIX):
            return caller

        def call(**kwargs: Any) -> None:
            self.call_reporter(name, kwargs)

        return call

    def call_reporter(self, hook_name: str, kwargs: Mapping[str, Any]) -> None:
        """Call every implementation of reporter hook ``hook_name``; contain the ones that raise."""
        caller = getattr(self._pm.hook, hook_name)
        impls = caller.get_hookimpls()
        if not impls:
            return  # the usual case for the per-piece hooks (one call per verified piece)
        if any(impl.hookwrapper or getattr(impl, "wrapper", False) for impl in impls):
            try:  # wrappers need pluggy's own calling loop; contain the call as a whole
                caller(**kwargs)
            except Exception as exc:  # noqa: BLE001
                self._disable(_blame(impls, exc), hook_name, exc)
            return
        disabled = len(self.disabled)
        for impl in reversed(impls):
            # (get_name is a scan of every plugin: only once one was disabled during this call)
            if len(self.disabled) != disabled and self._pm.get_name(impl.plugin) is None:
                continue  # unregistered by an earlier failure in this same call
            try:
                impl.function(*[kwargs[arg] for arg in impl.argnames])
            except Exception as exc:  # noqa: BLE001 - a reporter bug must not stop the download
                self._disable(impl.plugin, hook_name, exc)

    def _disable(self, plugin: object | None, hook_name: str, exc: BaseException) -> None:
        if plugin is None or self._pm.get_name(plugin) is None:
            self._log.warning(f"a reporter hook raised {exc!r} in {hook_name}", hook=hook_name)
            return
        name = plugin_name(self._pm, plugin)
        self._log.warning(f"reporter plugin {name!r} raised {exc!r} in {hook_name}; disabled for this run",
                          plugin=name, hook=hook_name)
        self.disabled.append(name)
        self._pm.unregister(plugin)


def _blame(impls: Sequence, exc: BaseException) -> object | None:
    """The plugin whose hook function raised ``exc`` (the innermost matching traceback frame)."""
    codes = {impl.function.__code__: impl.plugin for impl in impls if hasattr(impl.function, "__code__")}
    tb = exc.__traceback__
    found = None
    while tb is not None:
        found = codes.get(tb.tb_frame.f_code, found)
        tb = tb.tb_next
    return found


# --- settings --------------------------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_TYPES = (str, int, float, bool)


def declared_settings(pm: pluggy.PluginManager) -> dict[str, dict[str, hookspec.Setting]]:
    """``{plugin name: {key: Setting}}`` from every loaded plugin; malformed declarations name the plugin."""
    declared: dict[str, dict[str, hookspec.Setting]] = {}
    owners: dict[str, str] = {}
    for impl in reversed(pm.hook.torrentcore_plugin_settings.get_hookimpls()):
        owner = plugin_name(pm, impl.plugin)
        try:
            mapping = dict(impl.function() or {})
        except Exception as exc:  # noqa: BLE001
            raise PluginError(f"plugin {owner!r} failed to declare its settings: {exc!r}") from None
        for ns, keys in mapping.items():
            if ns in declared:
                raise PluginError(f"two plugins declare settings for {ns!r} ({owners[ns]} and {owner})")
            checked = {}
            for key, setting in dict(keys).items():
                if not isinstance(setting, hookspec.Setting) or setting.type not in _TYPES:
                    raise PluginError(f"plugin {owner!r} declares setting {ns}.{key} badly "
                                      "(expected Setting(type=str|int|float|bool, ...))")
                checked[str(key)] = setting
            declared[str(ns)] = checked
            owners[ns] = owner
    return declared


def convert(setting: hookspec.Setting, value: Any, where: str) -> Any:
    """``value`` (a string from the command line or INI, or a TOML value) as ``setting.type``.

    Raises :class:`BadInputError` with one line mentioning ``where`` when it does not fit.
    """
    kind = setting.type
    try:
        if isinstance(value, str):
            text = value.strip()
            if kind is bool:
                if text.lower() not in _TRUE | _FALSE:
                    raise ValueError
                result: Any = text.lower() in _TRUE
            elif kind is str:
                result = value
            else:
                result = kind(text)
        elif kind is bool:
            if not isinstance(value, bool):
                raise ValueError
            result = value
        elif kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            result = float(value)
        elif kind is int and isinstance(value, int) and not isinstance(value, bool):
            result = value
        else:
            raise ValueError
    except ValueError:
        wanted = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[kind]
        raise BadInputError(f"bad value for {where}: {value!r} is not {wanted}") from None
    if setting.choices and result not in setting.choices:
        raise BadInputError(f"bad value for {where}: {value!r} (choose from: "
                            f"{', '.join(map(str, setting.choices))})")
    return result


def parse_plugin_opt(text: str) -> tuple[str, str, str]:
    """``NAME.KEY=VALUE`` -> ``(NAME, KEY, VALUE)``; a one-line error otherwise."""
    target, sep, value = text.partition("=")
    ns, dot, key = target.strip().rpartition(".")
    if not sep or not dot or not ns or not key:
        raise BadInputError(f"invalid --plugin-opt {text!r} (expected NAME.KEY=VALUE, e.g. jsonl.path=events.jsonl)")
    return ns, key, value


def default_config_path() -> str:
    """``$XDG_CONFIG_HOME/torrentcore/config.toml`` (``~/.config`` when XDG_CONFIG_HOME is unset)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "torrentcore", "config.toml")


def load_config(path: str | None) -> dict[str, dict[str, Any]]:
    """The ``[plugin]`` sections of a config file: ``{plugin name: {key: raw value}}``.

    ``path`` ``None`` means the default file (:func:`default_config_path`, or
    ``config.ini`` beside it), used only if it exists. A name ending in
    ``.toml`` is read as TOML (Python 3.11's ``tomllib``; on 3.10 the ``tomli``
    package if installed); anything else as INI (``configparser``, no
    interpolation). An explicit path that cannot be read is an error.
    """
    if path is None:
        default = default_config_path()
        for candidate in (default, default[: -len(".toml")] + ".ini"):
            if os.path.isfile(candidate):
                path = candidate
                break
        else:
            return {}
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise BadInputError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInputError(f"config file {path} is not UTF-8 text") from None
    if path.endswith(".toml"):
        return _load_toml(path, text)
    import configparser  # here: a run without an INI file does not pay for it (5-10 ms with its regexes)

    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keys are case-sensitive, as in TOML
    try:
        parser.read_string(text, source=path)
    except configparser.Error as exc:
        raise BadInputError(f"config file {path}: {' '.join(str(exc).split())}") from None
    return {section: dict(parser.items(section)) for section in parser.sections()}


def _load_toml(path: str, text: str) -> dict[str, dict[str, Any]]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise BadInputError(f"config file {path}: TOML needs Python 3.11 or the 'tomli' package; "
                                "use an INI file (config.ini) instead") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInputError(f"config file {path}: {exc}") from None
    out = {}
    for section, values in data.items():
        if not isinstance(values, dict):
            raise BadInputError(f"config file {path}: {section!r} is outside a section "
                                "(settings go in a [PLUGIN] section)")
        out[section] = values
    return out


def resolve_settings(
    pm: pluggy.PluginManager,
    plugin_opts: Iterable[str] = (),
    config: Mapping[str, Mapping[str, Any]] | None = None,
    config_name: str = "config file",
) -> dict[str, dict[str, Any]]:
    """Every declared setting's value: defaults, then ``config``, then ``--plugin-opt`` (the last word wins).

    Raises :class:`BadInputError` (exit 2) with one line for an unknown plugin,
    an unknown key (naming the valid ones) or a value of the wrong type. A
    config section for an installed plugin that is not loaded (disabled,
    opt-in) is ignored; a ``--plugin-opt`` for one is an error saying so.
    """
    declared = declared_settings(pm)
    values = {ns: {key: s.default for key, s in keys.items()} for ns, keys in declared.items()}
    installed = set(available_plugins(pm))

    def apply(ns: str, key: str, raw: Any, where: str, from_cli: bool) -> None:
        if ns not in declared:
            if ns in installed and not from_cli:
                return
            known = ", ".join(sorted(declared)) or "none"
            if pm.get_plugin(ns) is not None:
                raise BadInputError(f"{where}: plugin {ns!r} has no settings (plugins with settings: {known})")
            if ns in installed:
                raise BadInputError(f"{where}: plugin {ns!r} is not loaded (disabled with --no-plugin, "
                                    f"or opt-in: load it with -p {ns})")
            raise BadInputError(f"{where}: unknown plugin {ns!r} (plugins with settings: {known})")
        if key not in declared[ns]:
            raise BadInputError(f"{where}: unknown setting {ns}.{key} "
                                f"(valid keys for {ns}: {', '.join(sorted(declared[ns]))})")
        values[ns][key] = convert(declared[ns][key], raw, f"{ns}.{key}")

    for ns, keys in (config or {}).items():
        for key, raw in keys.items():
            apply(ns, key, raw, f"{config_name} [{ns}]", from_cli=False)
    for text in plugin_opts:
        ns, key, raw = parse_plugin_opt(text)
        apply(ns, key, raw, f"--plugin-opt {text}", from_cli=True)
    return values
