"""A torrent's progress reports: the snapshot reporters get, and when a tick has news worth sending.

:class:`ProgressReports` builds the :class:`~torrentcore.hookspec.ProgressSnapshot` of one torrent, sends it
as a ``progress`` event on the torrent's ticks (only when something a snapshot shows changed, see
:meth:`ProgressReports.key`) and every tick while the data is checked. It sees the torrent only through
:class:`ProgressCalls` (callbacks for the state that changes) and the parts that stay the same
(metainfo, bitfield, stats, the connected peers), never as a whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gevent

from .stats import make_snapshot
from .ticker import TICK

if TYPE_CHECKING:  # pragma: no cover
    from .bitfield import Bitfield
    from .hookspec import ProgressSnapshot
    from .metainfo import Metainfo
    from .stats import TransferStats


@dataclass(frozen=True)
class ProgressCalls:
    """What the reports need of their torrent, as callbacks (the state they read changes on every call)."""

    #: The torrent's state ("checking", "downloading", "seeding", ...).
    state: Callable[[], str]
    #: False once the torrent is stopping (its snapshots say "stopping").
    running: Callable[[], bool]
    #: The wanted pieces (None: all) and the selected files (None: all), both replaced on a new selection.
    selection: Callable[[], tuple[Bitfield | None, list[int] | None]]
    #: Pieces the start-up check has hashed so far.
    checked: Callable[[], int]
    #: A completed download whose seeding was stopped (a success).
    seeding_stopped: Callable[[], bool]
    #: Send an event to the reporters (a :class:`~torrentcore.events.Reporter`'s ``emit``).
    emit: Callable[..., None]


class ProgressReports:
    """The progress snapshots of one torrent (see the module docstring)."""

    def __init__(self, calls: ProgressCalls, meta: Metainfo, have: Bitfield, stats: TransferStats,
                 peers: Mapping[Any, Any], started_at: float) -> None:
        self._calls = calls
        self._meta = meta
        self._have = have
        self._stats = stats
        self._peers = peers
        self._started_at = started_at
        self._last_key: tuple | None = None  # see key()

    def snapshot(self) -> ProgressSnapshot:
        """The torrent's state now, for reporters."""
        c = self._calls
        selected, selected_files = c.selection()
        return make_snapshot(self._meta, self._have, selected, selected_files, list(self._peers.values()),
                             self._stats, state=c.state() if c.running() else "stopping",
                             elapsed=time.monotonic() - self._started_at, checked=c.checked(),
                             extra={"seeding_stopped": True} if c.seeding_stopped() else {})

    def report(self) -> None:
        """Send a ``progress`` event now."""
        self._last_key = self.key()
        self._calls.emit("progress", snapshot=self.snapshot())

    def key(self) -> tuple | None:
        """What a progress snapshot would show, elapsed time aside; None with a peer connected (always news).

        A torrent with no peer whose key is the one of its last report is not reported on a tick (see
        ``torrentcore_on_progress``): 500 idle seeders spent 80 % of their ticks building, hooking and
        queueing identical snapshots (py-spy, benchmarks/many_torrents.py).
        """
        if self._peers:
            return None
        c, s = self._calls, self._stats
        selected, selected_files = c.selection()
        return (c.state(), c.running(), self._have.count, selected,
                None if selected is None else selected.count, selected_files, s.downloaded, s.uploaded,
                s.wasted, s.rate_down, s.rate_up, c.checked(), c.seeding_stopped())

    def report_if_changed(self) -> None:
        """A tick's report: sent unless nothing a snapshot shows has changed since the last one."""
        key = self.key()
        if key is None or key != self._last_key:
            self.report()

    def report_loop(self) -> None:
        """Progress reports while the data is checked (before the network and its ticks)."""
        while True:
            self.report()
            gevent.sleep(TICK)


__all__ = ["ProgressCalls", "ProgressReports"]
