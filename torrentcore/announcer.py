"""Finding peers for one torrent: its trackers (BEP 3, 12, 15) and the session's DHT node (BEP 5).

:class:`Announcer` runs two loops: the tracker loop (``started``, then every interval, ``completed``
once, an early announce while short of peers, back-off after failures) and the DHT loop (look up and
announce our port at start, then every few minutes, sooner while short of peers). It reads the torrent
through :class:`AnnounceState`, a handful of callables, and hands the addresses it finds to ``add_peers``.
On shutdown, :meth:`Announcer.stopped` tells the trackers (bounded in time).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event
import structlog

from .errors import TrackerError
from .tracker import AnnounceRequest, TrackerTiers

log = structlog.get_logger(__name__)

#: Announce early when fewer peers than this are connected.
WANT_MORE_PEERS = 8
#: DHT lookups: bound of one lookup, period, and period while short of peers (seconds).
DHT_LOOKUP_TIMEOUT = 30.0
DHT_INTERVAL = 300.0
DHT_SHORT_INTERVAL = 30.0
#: Seconds one tracker announce may take (each tracker), and the ``stopped`` announce at shutdown.
ANNOUNCE_TIMEOUT = 15.0
STOPPED_TIMEOUT = 4.0


@dataclass
class AnnounceState:
    """What the announcer reads of its torrent (all callables: the values change while it runs)."""

    info_hash: bytes
    peer_id: bytes
    listen_port: Callable[[], int]
    uploaded: Callable[[], int]
    downloaded: Callable[[], int]
    left: Callable[[], int]
    complete: Callable[[], bool]
    peer_count: Callable[[], int]
    #: Some known address may be dialled now (then there is no point asking a tracker early).
    has_waiting_candidates: Callable[[], bool]
    add_peers: Callable[[Iterable[tuple[str, int]], str], Any]
    #: A non-fatal problem for the user (reported as a warning).
    warn: Callable[[str], None]
    #: The other hashes the torrent is known by: a hybrid's truncated v2 hash joins the v2 swarm (BEP 52).
    other_hashes: tuple[bytes, ...] = ()


class Announcer:
    """Tracker and DHT loops of one torrent (``tiers`` None: no tracker; ``dht`` None: no DHT)."""

    def __init__(self, state: AnnounceState, tiers: TrackerTiers | None, dht: Any | None, name: str = "",
                 encryption: str = "prefer") -> None:
        self.state = state
        self.encryption = encryption
        self.tiers = tiers
        self.dht = dht
        self.log = log.bind(torrent=name)
        self.announce_now = gevent.event.Event()
        #: Set after each tracker announce ended (answered or failed): a download that stops at completion
        #: waits for its "completed" announce on this, not for a fixed delay.
        self.announced = gevent.event.Event()
        self.last_announce = 0.0
        self._early_at = 0.0  # no early announce before this (monotonic): min interval or back-off

    @property
    def _key(self) -> int:
        return int.from_bytes(self.state.peer_id[-4:], "big")

    def announce(self, event: str, timeout: float = ANNOUNCE_TIMEOUT):
        """One announce round over the tiers; raises TrackerError."""
        s = self.state
        req = AnnounceRequest(info_hash=s.info_hash, peer_id=s.peer_id, port=s.listen_port() or 6881,
                              uploaded=s.uploaded(), downloaded=s.downloaded(), left=s.left(), event=event,
                              numwant=200 if not s.complete() else 50, key=self._key,
                              supportcrypto=self.encryption != "disable", requirecrypto=self.encryption == "require")
        # One bound for the whole round, DNS look-ups included (requests and getaddrinfo have none).
        limit = timeout * 4
        with gevent.Timeout(limit, TrackerError(f"no tracker answered within {limit:g} s")):
            resp = self.tiers.announce(req, timeout=timeout, total_timeout=limit)
        for other in s.other_hashes:  # a hybrid is in two swarms: its peers from both (as libtorrent does)
            try:
                with gevent.Timeout(limit, TrackerError("timeout")):
                    extra = self.tiers.announce(dataclasses.replace(req, info_hash=other), timeout=timeout,
                                                total_timeout=limit)
            except TrackerError as exc:
                self.log.info("tracker announce of the other info-hash failed", error=str(exc))
                continue
            resp.peers = [*resp.peers, *extra.peers]
        return resp

    def tracker_loop(self) -> None:
        """Announce until killed."""
        s = self.state
        event = "started"
        failures = 0
        completed_sent = s.complete()
        while True:
            if s.complete() and not completed_sent and event != "started":
                event = "completed"
            try:
                resp = self.announce(event)
            except TrackerError as exc:
                failures += 1
                self.tiers.unreported_failures()  # each one is in this message already
                s.warn(f"tracker: {exc}")
                wait = min(300.0, 5.0 * 2 ** min(failures, 6))
                self._early_at = time.monotonic() + wait
            else:
                failures = 0
                if event == "completed" or (event == "started" and s.complete()):
                    completed_sent = True
                event = ""
                self.last_announce = time.monotonic()
                min_interval = float(resp.min_interval or min(resp.interval, 60))
                self._early_at = self.last_announce + max(min_interval, 15.0)
                for failure in self.tiers.unreported_failures():  # another tracker answered in its place
                    s.warn(f"tracker {failure}")
                if resp.warning:
                    s.warn(f"tracker warning: {resp.warning}")
                s.add_peers(resp.peers, "tracker")
                wait = float(max(resp.interval, 1))
            self.announced.set()
            self.announce_now.clear()
            self.announce_now.wait(wait)

    def maybe_announce_early(self) -> None:
        """Ask the tracker for more peers when we are short of them (respecting min interval and back-off)."""
        s = self.state
        if self.tiers is None or s.complete() or s.peer_count() >= WANT_MORE_PEERS:
            return
        if s.has_waiting_candidates():
            return
        if time.monotonic() >= self._early_at:
            self.announce_now.set()

    def dht_loop(self) -> None:
        """Find peers through the DHT and announce our port: at start, then every few minutes (sooner while
        we are short of peers)."""
        s = self.state
        warned = False
        while True:
            port = s.listen_port() or None
            try:
                peers = list(self.dht.get_peers(s.info_hash, timeout=DHT_LOOKUP_TIMEOUT, announce_port=port))
                for other in s.other_hashes:
                    peers += self.dht.get_peers(other, timeout=DHT_LOOKUP_TIMEOUT, announce_port=port)
            except Exception as exc:  # noqa: BLE001 - a DHT bug costs this peer source, never the download
                self.log.warning("dht lookup failed", error=repr(exc), exc_info=True)
                peers = []
            added = s.add_peers(peers, "dht")
            self.log.info("dht peers", found=len(peers), new=added, announced_port=port)
            if not warned and self.tiers is None and not s.peer_count() and not len(self.dht.table) and not peers:
                # The only peer source has nobody to ask: say so once instead of showing "0 peers" forever.
                warned = True
                self.log.warning("the DHT knows no node yet (bootstrap nodes unreachable?) and the torrent has "
                                 "no tracker: try --dht-bootstrap HOST:PORT or --peer HOST:PORT")
            short = not s.complete() and s.peer_count() < WANT_MORE_PEERS
            gevent.sleep(DHT_SHORT_INTERVAL if short else DHT_INTERVAL)

    def stopped(self) -> None:
        """Tell the trackers we stop (only if we announced at all); bounded, failures ignored."""
        if self.tiers is None or not self.last_announce:
            return
        self.last_announce = 0.0  # once per run of the network (a pause, then the shutdown, send one each)
        try:
            with gevent.Timeout(STOPPED_TIMEOUT + 1, TrackerError("timed out")):
                self.announce("stopped", timeout=STOPPED_TIMEOUT)
        except (TrackerError, gevent.Timeout):
            pass


__all__ = ["Announcer", "AnnounceState", "WANT_MORE_PEERS"]
