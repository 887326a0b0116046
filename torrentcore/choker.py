"""The choking algorithm (BEP 3, as libtorrent and Transmission run it).

Every ``INTERVAL`` seconds the ``slots`` interested peers that give us the
most are unchoked: ranked by their download rate to us while we leech, by our
upload rate to them while we seed (so the peers that can take data fastest
get it). One more peer, the optimistic unchoke, is picked at random among the
other interested peers and rotated every ``OPTIMISTIC_INTERVAL`` seconds, so
that newcomers get a chance to show their rate. Snubbed peers (that stopped
sending to us) do not get regular slots while we leech.

Greedy peers never get a slot, regular or optimistic (issue 13: 200 peers that requested endlessly took
every slot from an honest leecher): one that kept requesting while choked (past the grace for requests
already on the way, :data:`GREEDY_CHOKED_REQUESTS`), or that was sent more than the whole torrent plus
:data:`OVERSERVE_SLACK` (an honest leecher needs each byte once). The optimistic unchoke goes to the
interested peer that has waited longest since it was choked or connected (as libtorrent picks it), so a
peer that stays connected gets its turn before newcomers that keep reconnecting; a slot that frees between
rounds goes the same way.

While seeding, slots go round robin (libtorrent's default ``round_robin`` seed choker): an unchoked peer keeps
its slot until it was sent :data:`SEED_QUOTA` (checked every second by :meth:`Choker.tick`, after at least
:data:`SEED_MIN_TURN` seconds), then the peers that waited longest come first; among equals, the fastest.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .peer.peer import Peer
    from .peer.ports import SwarmView

INTERVAL = 10.0
OPTIMISTIC_INTERVAL = 30.0
DEFAULT_SLOTS = 4
#: Requests while choked (counted by the peer past its grace) that make a peer greedy; the peer is dropped
#: at 50 (``upload.MAX_CHOKED_REQUESTS``), and never unchoked from 10 on.
GREEDY_CHOKED_REQUESTS = 10
#: Bytes beyond the torrent's size we may send one peer before it counts as greedy (re-requests after a
#: failed hash check elsewhere, or after a reconnection, stay far below).
OVERSERVE_SLACK = 16 << 20
#: Seeding: bytes a peer is sent per turn in a slot (libtorrent's ``seeding_piece_quota`` is 20 pieces,
#: 5 MiB with 256 KiB pieces), and the shortest turn in seconds (a choke costs the peer its request queue).
SEED_QUOTA = 8 << 20
SEED_MIN_TURN = 2.0


def greedy(peer, total_length: int = 0) -> bool:
    """Whether a peer asks beyond any honest rate: requests while choked, or more than the torrent again."""
    if getattr(peer, "choked_requests", 0) >= GREEDY_CHOKED_REQUESTS:
        return True
    return bool(total_length) and getattr(peer.up, "total", 0) > total_length + OVERSERVE_SLACK


#: The random draws of every choker that is given no ``rng`` of its own: seeding a ``random.Random()`` costs
#: 32 us, once per torrent otherwise (500 torrents: 16 ms of the session's start-up).
_RNG = random.Random()


class Choker:
    """Decides which peers we upload to."""

    def __init__(self, swarm: SwarmView, slots: int = DEFAULT_SLOTS, rng: random.Random | None = None,
                 total_length: int = 0):
        self.swarm = swarm
        self.total_length = total_length
        self._waiting: dict[int, float] = {}  # id(peer) -> since when it waits for a slot (choked or new)
        self._turn: dict[int, tuple[float, int]] = {}  # id(peer) -> (unchoked at, bytes sent it by then)
        self.slots = max(1, slots)
        self.rng = rng or _RNG
        self.optimistic: Peer | None = None
        self._optimistic_since = 0.0
        self.rotations = 0

    def peer_interest_changed(self, peer: Peer) -> None:
        """React at once when a slot is free, instead of waiting for the next round."""
        if peer.peer_interested and peer.am_choking and not greedy(peer, self.total_length):
            unchoked = sum(1 for p in self.swarm.peers.values() if not p.am_choking)
            if unchoked < self.slots + 1:
                # The free slot goes to whoever waited longest (often not the peer that just said so).
                now = time.monotonic()
                waiting = [p for p in self.swarm.peers.values() if p.am_choking and p.peer_interested
                           and not p.has.complete and not p.conn.closed and not greedy(p, self.total_length)]
                first = min(waiting, key=lambda p: self._waiting.get(id(p), now), default=peer)
                self._unchoke(first, now)
        elif not peer.peer_interested and not peer.am_choking and peer is not self.optimistic:
            self.rechoke()

    def _unchoke(self, peer: Peer, now: float) -> None:
        if peer.am_choking:
            self._turn[id(peer)] = (now, getattr(peer.up, "total", 0))
        peer.unchoke()

    def _turn_over(self, peer: Peer, now: float) -> bool:
        """Seeding: the peer had its quota in this turn (and the shortest turn)."""
        at, sent = self._turn.get(id(peer), (now, getattr(peer.up, "total", 0)))
        return now - at >= SEED_MIN_TURN and getattr(peer.up, "total", 0) - sent >= SEED_QUOTA

    def tick(self, now: float | None = None) -> None:
        """Every second: while seeding, a peer whose turn is over gives its slot to one that waits."""
        if not self.swarm.complete:
            return
        now = time.monotonic() if now is None else now
        peers = self.swarm.peers.values()
        if any(not p.am_choking and p is not self.optimistic and self._turn_over(p, now) for p in peers) and any(
                p.am_choking and p.peer_interested and not p.has.complete and not greedy(p, self.total_length)
                for p in peers):
            self.rechoke(now)

    def rechoke(self, now: float | None = None) -> None:
        """One round of the algorithm."""
        now = time.monotonic() if now is None else now
        peers = [p for p in self.swarm.peers.values() if not p.conn.closed]
        interested = [p for p in peers if p.peer_interested and not p.has.complete
                      and not greedy(p, self.total_length)]
        waiting = {id(p): self._waiting.get(id(p), now) for p in peers}
        # Seeding: every wanted piece is verified (the whole torrent, or the selected files' pieces).
        seeding = self.swarm.complete
        if seeding:
            # Round robin: peers within their turn first, then the longest waiting, then the fastest.
            ranked = sorted(interested, key=lambda p: (p.am_choking or self._turn_over(p, now), waiting[id(p)],
                                                       -p.up.rate))
        else:
            # Snubbed peers (they stopped sending to us) get no regular slot; the optimistic one may reach them.
            ranked = sorted((p for p in interested if not p.snubbed), key=lambda p: p.down.rate, reverse=True)
        regular = ranked[: self.slots]
        rest = [p for p in interested if p not in regular]
        opt = self.optimistic
        if opt is None or opt not in rest or now - self._optimistic_since >= OPTIMISTIC_INTERVAL:
            choices = [p for p in rest if p is not opt] or rest
            new = None
            if choices:  # the one waiting longest; ties (peers that came together) drawn at random
                first = min(waiting[id(p)] for p in choices)
                new = self.rng.choice([p for p in choices if waiting[id(p)] == first])
            if new is not opt:
                self.rotations += 1
            self.optimistic = new
            self._optimistic_since = now
        keep = set(map(id, regular))
        if self.optimistic is not None:
            keep.add(id(self.optimistic))
        # Chokes go out before unchokes: a slot changing hands is never held by both peers at once (their
        # messages leave in this order), so no more than slots + 1 peers are unchoked at any moment.
        for p in peers:
            if id(p) not in keep:
                if not p.am_choking:
                    waiting[id(p)] = now
                p.choke()
        for p in peers:
            if id(p) in keep:
                self._unchoke(p, now)
                waiting[id(p)] = now  # its wait starts again once it is choked
        self._waiting = waiting
        self._turn = {k: v for k, v in self._turn.items() if k in waiting}
