"""What Transmission's limit settings mean for the engine: the session's speed limits (alternative ones
too), and a torrent's own speed limits, peer cap, seed ratio and idle limits and file selection.

Speeds are Transmission's kB/s (1000 bytes); a limit that is not enabled is 0 (unlimited) for the engine.
A seed limit mode 0 follows the session's setting, 1 the torrent's own, 2 none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .entry import TorrentEntry


def session_rates(settings: dict[str, Any]) -> tuple[int, int]:
    """The session's (download, upload) limits in bytes/s, 0 for none."""
    s = settings
    if s["alt-speed-enabled"]:
        down, up = s["alt-speed-down"], s["alt-speed-up"]
    else:
        down = s["speed-limit-down"] if s["speed-limit-down-enabled"] else 0
        up = s["speed-limit-up"] if s["speed-limit-up-enabled"] else 0
    return int(down) * 1000, int(up) * 1000


def apply_torrent_settings(entry: TorrentEntry, settings: dict[str, Any]) -> None:
    """A torrent's own limits, seed limits, peer cap and file selection onto its handle (``settings``: the
    session's)."""
    h = entry.handle
    down = entry.setting("downloadLimit") * 1000 if entry.setting("downloadLimited") else 0
    up = entry.setting("uploadLimit") * 1000 if entry.setting("uploadLimited") else 0
    h.set_rate_limits(int(down), int(up))
    h.honor_session_limits(bool(entry.setting("honorsSessionLimits")))
    h.set_max_peers(max(1, int(entry.setting("peer-limit"))))
    apply_seed_limits(entry, settings)
    if h.meta is not None and isinstance(entry.row.settings.get("wanted"), list):
        wanted = entry.wanted()
        if wanted:  # every file unwanted is fine: then no piece is wanted
            h.set_file_priorities([1 if w else 0 for w in wanted])


def apply_seed_limits(entry: TorrentEntry, settings: dict[str, Any]) -> None:
    """The torrent's seed ratio and idle limits (its own, the session's or none) onto its handle."""
    s = settings
    mode = entry.setting("seedRatioMode")
    ratio = (entry.setting("seedRatioLimit") if mode == 1 else
             s["seedRatioLimit"] if mode == 0 and s["seedRatioLimited"] else None)
    mode = entry.setting("seedIdleMode")
    idle = (entry.setting("seedIdleLimit") if mode == 1 else
            s["idle-seeding-limit"] if mode == 0 and s["idle-seeding-limit-enabled"] else None)
    entry.handle.set_seed_limits(float(ratio) if ratio else None, None, float(idle) if idle else None)


__all__ = ["session_rates", "apply_torrent_settings", "apply_seed_limits"]
