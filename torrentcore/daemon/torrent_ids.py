"""Which torrents an RPC request's ``ids`` names (Transmission's RPC spec, "ids").

``ids`` is absent (every torrent, by id), one torrent id (a number), one info-hash (hex, any case), a list of
those (each torrent once, in the list's order; what names no torrent is skipped, and so is a JSON boolean),
or ``"recently-active"``: the torrents active or added in the last :data:`RECENTLY_ACTIVE` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .entry import TorrentEntry

#: Seconds back that ``"recently-active"`` looks (60, as the daemon always did).
RECENTLY_ACTIVE = 60


def select(entries: Mapping[int, TorrentEntry], ids: Any) -> list[TorrentEntry]:
    """The torrents of ``entries`` (by RPC id) that ``ids`` names (see the module docstring)."""
    if ids is None:
        return sorted(entries.values(), key=lambda e: e.id)
    if ids == "recently-active":
        cutoff = time.time() - RECENTLY_ACTIVE
        return [e for e in entries.values() if e.row.activity_date >= cutoff or e.row.added_date >= cutoff]
    if not isinstance(ids, list):
        ids = [ids]
    out = []
    for i in ids:
        if isinstance(i, bool):
            continue
        if isinstance(i, int):
            e = entries.get(i)
        elif isinstance(i, str):
            e = next((x for x in entries.values() if x.row.info_hash == i.lower()), None)
        else:
            e = None
        if e is not None and e not in out:
            out.append(e)
    return out


__all__ = ["RECENTLY_ACTIVE", "select"]
