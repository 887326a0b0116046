"""The choking algorithm (BEP 3, as libtorrent and Transmission run it).

Every ``INTERVAL`` seconds the ``slots`` interested peers that give us the
most are unchoked: ranked by their download rate to us while we leech, by our
upload rate to them while we seed (so the peers that can take data fastest
get it). One more peer, the optimistic unchoke, is picked at random among the
other interested peers and rotated every ``OPTIMISTIC_INTERVAL`` seconds, so
that newcomers get a chance to show their rate. Snubbed peers (that stopped
sending to us) do not get regular slots while we leech.
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


class Choker:
    """Decides which peers we upload to."""

    def __init__(self, swarm: SwarmView, slots: int = DEFAULT_SLOTS, rng: random.Random | None = None):
        self.swarm = swarm
        self.slots = max(1, slots)
        self.rng = rng or random.Random()
        self.optimistic: Peer | None = None
        self._optimistic_since = 0.0
        self.rotations = 0

    def peer_interest_changed(self, peer: Peer) -> None:
        """React at once when a slot is free, instead of waiting for the next round."""
        if peer.peer_interested and peer.am_choking:
            unchoked = sum(1 for p in self.swarm.peers.values() if not p.am_choking)
            if unchoked < self.slots + 1:
                peer.unchoke()
        elif not peer.peer_interested and not peer.am_choking and peer is not self.optimistic:
            self.rechoke()

    def rechoke(self, now: float | None = None) -> None:
        """One round of the algorithm."""
        now = time.monotonic() if now is None else now
        peers = [p for p in self.swarm.peers.values() if not p.conn.closed]
        interested = [p for p in peers if p.peer_interested and not p.has.complete]
        # Seeding: every wanted piece is verified (the whole torrent, or the selected files' pieces).
        seeding = self.swarm.complete
        if seeding:
            ranked = sorted(interested, key=lambda p: p.up.rate, reverse=True)
        else:
            # Snubbed peers (they stopped sending to us) get no regular slot; the optimistic one may reach them.
            ranked = sorted((p for p in interested if not p.snubbed), key=lambda p: p.down.rate, reverse=True)
        regular = ranked[: self.slots]
        rest = [p for p in interested if p not in regular]
        opt = self.optimistic
        if opt is None or opt not in rest or now - self._optimistic_since >= OPTIMISTIC_INTERVAL:
            choices = [p for p in rest if p is not opt] or rest
            new = self.rng.choice(choices) if choices else None
            if new is not opt:
                self.rotations += 1
            self.optimistic = new
            self._optimistic_since = now
        keep = set(map(id, regular))
        if self.optimistic is not None:
            keep.add(id(self.optimistic))
        for p in peers:
            if id(p) in keep:
                p.unchoke()
            else:
                p.choke()
