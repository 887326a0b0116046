"""A torrent's time on the network: what starts when it goes online, and what stops when it goes offline.

:meth:`NetworkRun.start` adds the peers given by hand, starts the once-a-second work
(:class:`~torrentcore.periodic.PeriodicWork`), the swarm's connect loop, PEX, the tracker and DHT loops and
(while incomplete) the web seeds, warns when the torrent has no source of peers at all, reports an already
completed torrent as completed, and sets ``up`` (incoming peers are taken from then on). :meth:`NetworkRun.stop`
undoes all that: ``up`` cleared, the ticks and loops ended, every peer closed, the trackers told ``stopped``.

The torrent is seen only through :class:`NetworkCalls` (callbacks) and its collaborators, never as a whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gevent

from .peer.extensions import UT_PEX

if TYPE_CHECKING:  # pragma: no cover
    import gevent.event

    from .announcer import Announcer
    from .hookspec import ProgressSnapshot
    from .peer.extensions import ExtensionRegistry
    from .peer_list import PeerList
    from .periodic import PeriodicWork
    from .swarm import Swarm
    from .webseed import WebSeeds


@dataclass(frozen=True)
class NetworkCalls:
    """What the network run needs of its torrent, as callbacks."""

    #: Run ``fn(*args)`` as the torrent's background work is run: an exception stops the torrent, one clear line.
    guard: Callable[..., None]
    #: The peers given by hand (``TorrentConfig.peers``; the handle may replace the config).
    manual_peers: Callable[[], Any]
    #: Every wanted piece is verified.
    complete: Callable[[], bool]
    #: The download has completed (``completed_at`` is set).
    completed: Callable[[], bool]
    #: The torrent's progress snapshot now.
    snapshot: Callable[[], ProgressSnapshot]


class NetworkRun:
    """The network loops of one torrent (see the module docstring)."""

    def __init__(self, calls: NetworkCalls, up: gevent.event.Event, periodic: PeriodicWork, swarm: Swarm,
                 peer_list: PeerList, extensions: ExtensionRegistry, announcer: Announcer, dht: Any | None,
                 webseeds: WebSeeds, reporter: Any) -> None:
        self._calls = calls
        self._up = up
        self._periodic = periodic
        self._swarm = swarm
        self._peer_list = peer_list
        self._extensions = extensions
        self._announcer = announcer
        self._dht = dht
        self._webseeds = webseeds
        self._reporter = reporter
        self._greenlets: list[gevent.Greenlet] = []

    def spawn(self, fn: Callable[..., Any], *args: Any) -> gevent.Greenlet:
        """Run ``fn(*args)`` in a guarded greenlet that :meth:`stop` kills."""
        g = gevent.spawn(self._calls.guard, fn, *args)
        self._greenlets.append(g)
        return g

    def start(self) -> None:
        """Go online (see the module docstring)."""
        calls, spawn = self._calls, self.spawn
        network_since = time.monotonic()
        self._peer_list.add(calls.manual_peers(), source="manual")
        self._periodic.start(network_since)  # a report and a choking round now, then on the ticker's ticks
        spawn(self._swarm.connect_loop)
        if UT_PEX in self._extensions.handlers:
            spawn(self._extensions.handlers[UT_PEX].loop)
        if self._announcer.tiers is not None:
            spawn(self._announcer.tracker_loop)
        if self._dht is not None:
            spawn(self._announcer.dht_loop)
        if not calls.complete():
            self._webseeds.start_workers(spawn, fresh=True)
        if self._dht is None and self._announcer.tiers is None and not len(self._peer_list) \
                and not calls.complete() and not self._webseeds.active:
            self._reporter.emit("error", message="this torrent has no trackers and no peers were given", fatal=False)
        if calls.completed():
            self._reporter.emit("completed", snapshot=calls.snapshot())
        self._swarm.connect_now.set()
        self._up.set()

    def stop(self) -> None:
        """Go offline (see the module docstring)."""
        self._up.clear()
        self._periodic.stop()
        for g in self._greenlets:
            g.kill(block=False)
        self._greenlets.clear()
        self._swarm.stop()
        self._announcer.stopped()


__all__ = ["NetworkCalls", "NetworkRun"]
