"""When a completed torrent stops seeding: the first of a ratio, a time, or a time without interest.

Limits come from :class:`~torrentcore.config.TorrentConfig` (``seed_ratio``, ``seed_time``, ``seed_idle``;
None or 0: no such limit). ``torrentcore run`` seeds until ratio 1.0, 30 minutes, or 2 minutes without any
peer wanting data; ``torrentcore seed`` and a daemon seed until told otherwise.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .config import TorrentConfig


class SeedingLimits:
    """Decides, once a second, whether a complete torrent has seeded enough."""

    def __init__(self, config: TorrentConfig, total_length: int) -> None:
        self.ratio, self.minutes, self.idle = config.seed_limits()
        self.total_length = total_length
        self._last_interest = 0.0

    def reached(self, completed_at: float, downloaded: int, uploaded: int, someone_interested: bool,
                now: float | None = None) -> bool:
        """Whether a limit is reached (``completed_at``: monotonic time the download completed; byte counts
        of this session)."""
        now = time.monotonic() if now is None else now
        base = downloaded or self.total_length
        if self.ratio is not None and base and uploaded / base >= self.ratio:
            return True
        if self.minutes is not None and now - completed_at >= self.minutes * 60:
            return True
        if someone_interested:
            self._last_interest = now
        return self.idle is not None and now - max(self._last_interest, completed_at) >= self.idle * 60


__all__ = ["SeedingLimits"]
