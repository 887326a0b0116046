"""One torrent of the daemon: its stored row, its session handle, and what the queue decided for it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..handle import TorrentHandle
from .database import TorrentRow

#: Per-torrent RPC settings (Transmission names) and their values for a new torrent.
TORRENT_SETTING_DEFAULTS: dict[str, Any] = {
    "downloadLimit": 100,
    "downloadLimited": False,
    "uploadLimit": 100,
    "uploadLimited": False,
    "seedRatioLimit": 2.0,
    "seedRatioMode": 0,  # 0: the session's, 1: this torrent's, 2: unlimited
    "seedIdleLimit": 30,
    "seedIdleMode": 0,
    "honorsSessionLimits": True,
    "bandwidthPriority": 0,
    "labels": [],
    "peer-limit": 50,
    "priorities": None,  # one per file (-1 low, 0 normal, 1 high); None: all normal
    "wanted": None,  # one 0/1 per file; None: all wanted
}


#: Where the bytes that failed their hash check over every run are kept in the row's settings (Transmission's name).
CORRUPT_KEY = "corruptEver"

#: Where the seconds downloading and seeding are kept in the row's settings (Transmission's field names).
SECONDS_KEYS = ("secondsDownloading", "secondsSeeding")


@dataclass
class TorrentEntry:
    """A torrent the daemon keeps (``row`` is what the database has, ``handle`` the running torrent)."""

    row: TorrentRow
    handle: TorrentHandle
    #: Waiting for a queue slot (paused by the queue, not by the user).
    queued: bool = False
    #: monotonic time the torrent last started running, and last moved data (for "stalled").
    started: float = field(default_factory=time.monotonic)
    last_active: float = 0.0
    #: The totals already in ``row`` when this process started the handle.
    base: tuple[int, int] = (0, 0)
    dirty: bool = False
    #: ``complete`` as the last housekeeping round saw it (None: not seen yet).
    last_complete: bool | None = None
    #: What torrent-get computes once per metainfo (see fields.TorrentView.static).
    cache: dict = field(default_factory=dict)
    #: The metainfo stored lacks piece layers still coming from peers (a v2 magnet link): stored again then.
    layers_pending: bool = False
    #: Seconds spent downloading and seeding over every run (secondsDownloading, secondsSeeding).
    seconds: list[float] = field(default_factory=lambda: [0.0, 0.0])
    #: Bytes that failed their hash check in the runs before this process (``corruptEver`` stored in ``row``).
    base_corrupt: int = 0
    #: Wall-clock time (seconds) the torrent last started running in this process, 0: not yet (``startDate``).
    start_date: int = 0

    def __post_init__(self) -> None:
        stored = [self.row.settings.get(key) for key in SECONDS_KEYS]  # anything but a count is 0
        self.seconds = [float(v) if type(v) in (int, float) and v >= 0 else 0.0 for v in stored]
        corrupt = self.row.settings.get(CORRUPT_KEY)
        self.base_corrupt = corrupt if type(corrupt) is int and corrupt >= 0 else 0

    @property
    def id(self) -> int:
        """The RPC id (the database row's)."""
        return self.row.id

    @property
    def position(self) -> int:
        """Queue position (0 first)."""
        return self.row.queue_position

    @property
    def complete(self) -> bool:
        """Every wanted piece is verified (as of the daemon's last housekeeping round, when there was one)."""
        if self.last_complete is not None:
            return self.last_complete
        s = self.handle.status()
        return s.num_pieces > 0 and s.progress >= 1.0

    @property
    def wants_to_run(self) -> bool:
        """Not stopped by the user (or by reaching its seed limit) and not failed."""
        return not self.row.stopped and not (self.handle.finished and self.handle.error)

    def setting(self, key: str) -> Any:
        """A per-torrent RPC setting (its default when never set)."""
        value = self.row.settings.get(key)
        return TORRENT_SETTING_DEFAULTS[key] if value is None else value

    def totals(self) -> tuple[int, int]:
        """(downloadedEver, uploadedEver): stored totals plus this process's transfers."""
        down, up = self.handle.transferred()
        return self.base[0] + down, self.base[1] + up

    def corrupt_ever(self) -> int:
        """corruptEver: bytes of pieces that failed their hash check, stored total plus this process's."""
        return self.base_corrupt + self.handle.corrupted()

    def sync_totals(self) -> None:
        """Copy the totals, corrupt bytes and seconds downloading and seeding into the row (saved with the next
        write)."""
        down, up = self.totals()
        if (down, up) != (self.row.downloaded_ever, self.row.uploaded_ever):
            self.row.downloaded_ever, self.row.uploaded_ever = down, up
            self.dirty = True
        for key, seconds in zip(SECONDS_KEYS, self.seconds):
            if self.row.settings.get(key, 0) != int(seconds):
                self.row.settings[key] = int(seconds)
                self.dirty = True
        corrupt = self.corrupt_ever()
        if self.row.settings.get(CORRUPT_KEY, 0) != corrupt:
            self.row.settings[CORRUPT_KEY] = corrupt
            self.dirty = True

    def file_count(self) -> int:
        """Data files (0 before a magnet link's metadata)."""
        files = self.cache.get("files")
        if files is not None:
            return len(files)
        meta = self.handle.meta
        return len(meta.data_files) if meta is not None else 0

    def wanted(self) -> list[int]:
        """One 0/1 per data file."""
        n = self.file_count()
        value = self.row.settings.get("wanted")
        return list(value) if isinstance(value, list) and len(value) == n else [1] * n

    def priorities(self) -> list[int]:
        """One -1/0/1 per data file."""
        n = self.file_count()
        value = self.row.settings.get("priorities")
        return list(value) if isinstance(value, list) and len(value) == n else [0] * n


__all__ = ["TorrentEntry", "TORRENT_SETTING_DEFAULTS"]

