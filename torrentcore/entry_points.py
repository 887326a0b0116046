"""The installed entry points (every group), scanned once while ``sys.path`` and its folders are unchanged.

A scan reads every installed distribution's metadata (3-5 ms here). gevent's monkey-patching at start-up
(:mod:`torrentcore.cli`), the plugin manager and ``torrentcore plugins`` (:mod:`torrentcore.plugins`)
share one. This module imports nothing of torrentcore's: the CLI uses it before it monkey-patches.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from typing import Any

#: The last scan, with the ``sys.path`` (and its folders' mtimes) it was made for.
_scan: tuple[tuple, Any] | None = None


def installed() -> Any:
    """``importlib.metadata.entry_points()``, scanned again only when ``sys.path`` or the mtime of one of its
    folders changed (installing a distribution changes its folder's mtime)."""
    global _scan
    key = tuple((entry, _mtime(entry)) for entry in sys.path)
    if _scan is None or _scan[0] != key:
        _scan = (key, metadata.entry_points())
    return _scan[1]


def _mtime(path: str) -> int:
    try:
        return os.stat(path or ".").st_mtime_ns
    except OSError:
        return -1


__all__ = ["installed"]
