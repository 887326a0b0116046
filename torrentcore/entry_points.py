"""The installed entry points (every group), scanned once while ``sys.path`` and its folders are unchanged.

The scan reads what ``importlib.metadata.entry_points()`` reads, the same way: for each folder on ``sys.path``
(in order), its ``*.dist-info`` and ``*.egg-info`` folders (and an ``.egg`` folder's ``EGG-INFO``), in the
order the folder lists them, the first distribution of each name winning (PEP 503 names), and each one's
``entry_points.txt``. It does so without importing :mod:`importlib.metadata`, which costs 15-20 ms of every
start-up here (it imports ``email``, ``zipfile``, ``csv``, ``pathlib`` and more) for nothing else in a run.
Where that equivalence is not certain (a zip file on ``sys.path``, or an import hook that declares
distributions of its own), :mod:`importlib.metadata` is asked instead.

gevent's monkey-patching at start-up (:mod:`torrentcore.cli`), the plugin manager and ``torrentcore plugins``
(:mod:`torrentcore.plugins`) share one scan. This module imports nothing of torrentcore's: the CLI uses it
before it monkey-patches.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import sys
from collections.abc import Iterable, Iterator
from typing import Any

#: The last scan, with the ``sys.path`` (and its folders' mtimes) it was made for.
_scan: tuple[tuple, EntryPoints] | None = None
#: How many scans were made in this process (tests count them).
scans = 0

_VALUE = re.compile(r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?((?P<extras>\[.*\])\s*)?$")
_NAME_RUNS = re.compile(r"[-_.]+")


class Distribution:
    """An installed distribution as far as entry points need one: its metadata folder, and its ``name`` and
    ``version`` read from that folder's ``METADATA`` (or ``PKG-INFO``) when first asked for."""

    def __init__(self, path: str) -> None:
        self.path = path

    @functools.cached_property
    def _headers(self) -> dict[str, str]:
        for filename in ("METADATA", "PKG-INFO"):
            try:
                with open(os.path.join(self.path, filename), encoding="utf-8", errors="replace") as f:
                    return _headers(f)
            except OSError:
                continue
        return {}

    @property
    def name(self) -> str:
        """The ``Name`` of the distribution (as its metadata spells it)."""
        return self._headers.get("name") or _name_from_folder(os.path.basename(self.path)) or ""

    @property
    def version(self) -> str | None:
        """The ``Version`` of the distribution."""
        return self._headers.get("version")

    def __repr__(self) -> str:
        return f"Distribution({self.path!r})"


class EntryPoint:
    """One entry point: ``name = value`` in section ``group`` of a distribution's ``entry_points.txt``."""

    __slots__ = ("name", "value", "group", "dist")

    def __init__(self, name: str, value: str, group: str, dist: Distribution | None = None) -> None:
        self.name = name
        self.value = value
        self.group = group
        self.dist = dist

    @property
    def module(self) -> str:
        """The module part of ``value`` (before the colon)."""
        match = _VALUE.match(self.value)
        return match.group("module") if match else self.value

    @property
    def attr(self) -> str | None:
        """The attribute path after the colon, if any."""
        match = _VALUE.match(self.value)
        return match.group("attr") if match else None

    def load(self) -> Any:
        """Import the module and return it, or the object the attribute path names in it."""
        match = _VALUE.match(self.value)
        if match is None:
            raise ValueError(f"entry point {self.name!r} of group {self.group!r}: malformed value {self.value!r}")
        obj = importlib.import_module(match.group("module"))
        for part in filter(None, (match.group("attr") or "").split(".")):
            obj = getattr(obj, part)
        return obj

    def matches(self, **params: Any) -> bool:
        """True when every given attribute (``name``, ``group``, ``value``, ``module``, ``attr``) is equal."""
        return all(getattr(self, key) == value for key, value in params.items())

    def __repr__(self) -> str:
        return f"EntryPoint(name={self.name!r}, value={self.value!r}, group={self.group!r})"


class EntryPoints(tuple):
    """Entry points in scan order; :meth:`select` filters them as ``importlib.metadata.EntryPoints`` does."""

    def select(self, **params: Any) -> EntryPoints:
        """The entry points matching every given attribute (e.g. ``group="torrentcore"``)."""
        return EntryPoints(ep for ep in self if ep.matches(**params))

    @property
    def groups(self) -> set[str]:
        """The groups of these entry points."""
        return {ep.group for ep in self}


def installed() -> EntryPoints:
    """Every installed entry point, scanned again only when ``sys.path`` or the mtime of one of its folders
    changed (installing a distribution changes its folder's mtime)."""
    global _scan, scans
    key = tuple((entry, _mtime(entry)) for entry in sys.path)
    if _scan is None or _scan[0] != key:
        scans += 1
        _scan = (key, EntryPoints(_read_all(sys.path)))
    return _scan[1]


def _read_all(path: list[str]) -> Iterator[EntryPoint]:
    if not _scan_is_exact(path):
        from importlib import metadata  # only here: see the module docstring

        names: set[str] = set()
        for dist in metadata.distributions():
            name = _normalize(dist.metadata["Name"] or "")
            if name not in names:
                names.add(name)
                for ep in dist.entry_points:
                    yield EntryPoint(ep.name, ep.value, ep.group, None)
        return
    seen: set[str] = set()
    for folder in _metadata_folders(path):
        name = _normalize(_name_from_folder(os.path.basename(folder)) or Distribution(folder).name)
        if name in seen:
            continue
        seen.add(name)
        yield from _entry_points_of(folder)


def _scan_is_exact(path: list[str]) -> bool:
    """Whether reading folders finds exactly what ``importlib.metadata`` would (no zip file on ``sys.path``,
    no import hook with distributions of its own)."""
    import importlib.machinery

    for finder in sys.meta_path:
        if hasattr(finder, "find_distributions") and finder is not importlib.machinery.PathFinder:
            return False
    return not any(entry and os.path.isfile(entry) for entry in path)


def _metadata_folders(path: list[str]) -> Iterator[str]:
    """Each distribution's metadata folder, in the order ``importlib.metadata`` finds them."""
    for entry in path:
        root = entry or "."
        try:
            children = os.listdir(root)
        except OSError:
            continue
        infos: dict[str, list[str]] = {}
        eggs: list[str] = []
        egg_base = os.path.basename(entry).lower().endswith(".egg")
        for child in children:
            low = child.lower()
            if low.endswith((".dist-info", ".egg-info")):
                infos.setdefault(_normalize(low.rpartition(".")[0].partition("-")[0]), []).append(child)
            elif egg_base and low == "egg-info":
                eggs.append(child)
        for group in infos.values():  # grouped by name, in order of each name's first folder (as it does)
            for child in group:
                yield os.path.join(entry, child)
        for child in eggs:
            yield os.path.join(entry, child)


def _entry_points_of(folder: str) -> Iterable[EntryPoint]:
    try:
        with open(os.path.join(folder, "entry_points.txt"), encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return ()
    dist = Distribution(folder)
    found = []
    group = None
    for line in map(str.strip, text.splitlines()):
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            group = line.strip("[]")
            continue
        if group is None:
            continue
        name, eq, value = line.partition("=")
        if eq:
            found.append(EntryPoint(name.strip(), value.strip(), group, dist))
    return found


def _name_from_folder(stem: str) -> str | None:
    filename, ext = os.path.splitext(stem)
    if ext not in (".dist-info", ".egg-info"):
        return None  # an egg's EGG-INFO: the name is in its metadata
    return filename.partition("-")[0]


def _normalize(name: str) -> str:
    """PEP 503 normalization, dashes as underscores (``importlib.metadata``'s key for one distribution)."""
    return _NAME_RUNS.sub("-", name).lower().replace("-", "_")


def _headers(lines: Iterable[str]) -> dict[str, str]:
    """The ``Name`` and ``Version`` headers of a metadata file (RFC 822 style: they come first)."""
    found: dict[str, str] = {}
    for line in lines:
        if not line.strip():
            break  # the body (the description) starts here
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if sep and key in ("name", "version") and key not in found:
            found[key] = value.strip()
            if len(found) == 2:
                break
    return found


def _mtime(path: str) -> int:
    try:
        return os.stat(path or ".").st_mtime_ns
    except OSError:
        return -1


__all__ = ["installed", "EntryPoint", "EntryPoints", "Distribution"]
