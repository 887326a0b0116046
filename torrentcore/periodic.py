"""A running torrent's once-a-second work, called from the session's ticker (:mod:`torrentcore.ticker`).

From :meth:`PeriodicWork.start` to :meth:`PeriodicWork.stop` (while the network runs), on every tick
:class:`PeriodicWork`: sends a progress report when there is news, moves the rate meters on, runs each
peer's timeouts (and asks another peer for the piece-layer chunks a lost one was asked for), gives the
choker its turn and wakes the requesters, lets the connect loop look for candidates, lets the announcer
announce early, ends the wait for a hybrid's piece layers when it expired, warns once if every peer hangs
up right after our handshake, and ends a torrent whose seeding is done. Every
:data:`~torrentcore.choker.INTERVAL` seconds (and once at the start) it runs a choking round.

A completed torrent at rest (no peer connected, none to dial, no byte moved since the last tick, both rates
0) has none of that to do but notice a seeding limit or a change a progress report shows: it does its work
every :data:`REST_TICKS` ticks only, and every tick again from the first one that finds it busy.

The torrent is seen only through :class:`PeriodicCalls` (callbacks) and its collaborators, never as a whole.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .choker import INTERVAL as CHOKE_INTERVAL
from .errors import EXIT_OK
from .ticker import TICK, Ticker

if TYPE_CHECKING:  # pragma: no cover
    from .announcer import Announcer
    from .choker import Choker
    from .completion import Completion
    from .layer_recheck import LayerRecheck
    from .peer_list import PeerList
    from .piece_layers import PieceLayers
    from .progress_reports import ProgressReports
    from .stats import TransferStats
    from .swarm import Swarm

#: A completed torrent at rest (see the module docstring) does its once-a-second work every this many ticks: a
#: seeding limit is then seen up to REST_TICKS - 1 seconds late, and a report of a change made while it rests
#: (a selection that makes it incomplete ends the rest at once) as late. Measured (500 seeding torrents with
#: no peer, 2026-12-04): the ticker's median tick 4.1-4.3 ms before, 9 us per torrent (cold caches: 4 us when
#: the same ticks run back to back), 1.1-1.4 ms with it (a skipped tick ~2 us per torrent, every fifth a full
#: one); benchmarks/many_torrents.py --idle 60, with the uTP timer stopped too: idle CPU 0.88 -> 0.25 % of a
#: core (libtorrent 0.10).
REST_TICKS = 5


@dataclass(frozen=True)
class PeriodicCalls:
    """What the periodic work needs of its torrent, as callbacks."""

    #: Run ``fn(*args)`` as the torrent's background work is run: an exception stops the torrent, one clear line.
    guard: Callable[..., None]
    #: Every wanted piece is verified.
    complete: Callable[[], bool]
    #: End the torrent with this exit code.
    finish: Callable[[int], None]


class PeriodicWork:
    """The once-a-second work of one torrent (see the module docstring)."""

    def __init__(self, calls: PeriodicCalls, ticker: Ticker, progress: ProgressReports, stats: TransferStats,
                 swarm: Swarm, peer_list: PeerList, choker: Choker, announcer: Announcer, completion: Completion,
                 layers: PieceLayers | None, layer_recheck: LayerRecheck | None, reporter: Any) -> None:
        self._calls = calls
        self._ticker = ticker
        self._progress = progress
        self._token: int | None = None
        self._stats = stats
        self._swarm = swarm
        self._peer_list = peer_list
        self._choker = choker
        self._announcer = announcer
        self._completion = completion
        self._layers = layers
        self._recheck = layer_recheck
        self._reporter = reporter
        self._network_since = self._last_tick = self._last_choke = 0.0
        self._warned_hangups = False
        self._rested = 0  # ticks skipped in a row at rest (see REST_TICKS)

    def start(self, now: float) -> None:
        """The network starts now: a report and a choking round now, then on the ticker's ticks (one greenlet for
        every torrent of the session, see :mod:`torrentcore.ticker`)."""
        self._network_since = self._last_tick = self._last_choke = now
        self._calls.guard(self._progress.report)
        self._calls.guard(self._choker.rechoke)
        self._token = self._ticker.add(self.on_tick)

    def stop(self) -> None:
        """The network stops: no more ticks."""
        if self._token is not None:
            self._ticker.remove(self._token)
            self._token = None

    def on_tick(self, now: float) -> None:
        """The ticker's call, once a second while the network runs."""
        if self._resting(now):
            return
        guard = self._calls.guard
        guard(self._progress.report_if_changed)
        guard(self._tick, now)
        if now - self._last_choke >= CHOKE_INTERVAL - TICK / 2:
            self._last_choke = now
            guard(self._choker.rechoke)

    def _resting(self, now: float) -> bool:
        """Whether this tick is skipped: the torrent is at rest (see the module docstring), and fewer than
        REST_TICKS ticks in a row were. A skipped tick moves the rates' clock on (no byte moved meanwhile)."""
        if (self._swarm.peers or self._completion.completed_at is None or len(self._peer_list)
                or not self._stats.still()):
            self._rested = 0
            return False
        self._rested += 1
        if self._rested < REST_TICKS:
            self._last_tick = now
            return True
        self._rested = 0
        return False

    def _tick(self, now: float) -> None:
        elapsed, self._last_tick = now - self._last_tick, now
        self._stats.tick(elapsed)
        swarm = self._swarm
        if swarm.peers:  # with none, the per-peer work, the choker's turns and the requesters have nothing to do
            self._tick_peers(now, elapsed)
        if len(self._peer_list):
            swarm.connect_now.set()  # candidates to dial (or retry): the connect loop looks once a second
        self._announcer.maybe_announce_early()
        if self._recheck is not None and (expired := self._recheck.wait_expired(now)):
            self._reporter.emit("error", message=expired, fatal=False)
            self._completion.on_complete()
        since = self._network_since
        if not self._warned_hangups and not self._calls.complete() and swarm.everyone_hangs_up(since, now):
            self._warned_hangups = True
            self._reporter.emit("error", fatal=False, message=(
                f"every peer tried ({swarm.closed_by_peer} so far) closed the connection right after "
                "our handshake: they probably accept only encrypted or uTP connections"))
        if self._completion.seeding_done():
            self._calls.finish(EXIT_OK)

    def _tick_peers(self, now: float, elapsed: float) -> None:
        fetching = self._layers is not None and not self._layers.complete
        for peer in list(self._swarm.peers.values()):
            peer.down.tick(elapsed)
            peer.up.tick(elapsed)
            peer.check_timeouts(now)
            if fetching and peer.hashes is not None:  # chunks a lost or silent peer was asked for go
                peer.hashes.request()                  # to another one
        self._choker.tick(now)
        self._swarm.wake_requesters()


__all__ = ["PeriodicCalls", "PeriodicWork", "REST_TICKS"]
