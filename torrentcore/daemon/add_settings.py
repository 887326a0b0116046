"""The per-torrent settings a torrent-add stores in the torrent's row (Transmission's RPC spec, torrent-add).

``files-wanted``/``files-unwanted`` become one flag per data file (1: download; ``wanted`` wins over
``unwanted``), kept only when either is given; ``priority-*`` one priority per file (0 unless given);
``labels`` as given; ``peer-limit`` always. Indices outside the torrent's files are ignored; a magnet link
(no files known yet) keeps only the labels and the peer limit.
"""

from __future__ import annotations

from typing import Any


def added_settings(n: int, unwanted: list[int] | None, wanted: list[int] | None,
                   priorities: dict[int, int] | None, labels: list[str] | None, peer_limit: int) -> dict[str, Any]:
    """The row's settings for a torrent with ``n`` data files (0: not known yet)."""
    settings: dict[str, Any] = {}
    if n and (unwanted or wanted):
        flags = [1] * n
        for i in unwanted or []:
            if 0 <= i < n:
                flags[i] = 0
        for i in wanted or []:
            if 0 <= i < n:
                flags[i] = 1
        settings["wanted"] = flags
    if n and priorities:
        prio = [0] * n
        for i, p in priorities.items():
            if 0 <= i < n:
                prio[i] = p
        settings["priorities"] = prio
    if labels:
        settings["labels"] = list(labels)
    settings["peer-limit"] = peer_limit
    return settings


__all__ = ["added_settings"]
