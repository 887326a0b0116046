"""Piece selection: rarest first (the default), and sequential for streaming.

Rarest first, as every mainstream client does it:

* pieces already started are finished first (fewer partial pieces in memory,
  and complete pieces sooner to share);
* then pieces that the fewest connected peers have, ties broken at random so
  that peers starting together do not all fetch the same pieces;
* until a few pieces are complete, a random order instead, to have something
  to share as soon as possible.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterator

from torrentcore.hookspec import Bitfield, Metainfo, PieceStrategy, SwarmView, hookimpl

#: Pieces fetched in random order before rarest-first takes over.
RANDOM_FIRST_PIECES = 4


class RarestFirst:
    """The rarest-first :class:`~torrentcore.hookspec.PieceStrategy`."""

    def __init__(self, num_pieces: int, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._tiebreak = list(range(num_pieces))
        self._rng.shuffle(self._tiebreak)
        self._order: list[int] = []
        self._cursor = 0
        self._built_for: tuple[int, bool] | None = None

    def _rebuild(self, swarm: SwarmView, random_phase: bool) -> None:
        avail = swarm.availability
        tie = self._tiebreak
        candidates = [
            i for i in range(swarm.num_pieces) if i not in swarm.partial and swarm.wanted(i)
        ]
        if random_phase:
            candidates.sort(key=tie.__getitem__)
        else:
            candidates.sort(key=lambda i: (avail[i], tie[i]))
        self._order = candidates
        self._cursor = 0
        self._built_for = (swarm.version, random_phase)

    def next_pieces(self, swarm: SwarmView, peer_has: Bitfield) -> Iterator[int]:
        """Started pieces the peer has (rarest first), then unstarted ones by rarity."""
        avail = swarm.availability
        started = [i for i in swarm.partial if peer_has[i]]
        if len(started) > 1:
            started.sort(key=avail.__getitem__)
        yield from started
        random_phase = swarm.have.count < RANDOM_FIRST_PIECES
        if self._built_for != (swarm.version, random_phase):
            self._rebuild(swarm, random_phase)
        order = self._order
        # Pieces at the front that were started or finished since the last rebuild are skipped for good.
        while self._cursor < len(order) and not self._fresh(swarm, order[self._cursor]):
            self._cursor += 1
        for pos in range(self._cursor, len(order)):
            i = order[pos]
            if peer_has[i] and self._fresh(swarm, i):
                yield i

    @staticmethod
    def _fresh(swarm: SwarmView, index: int) -> bool:
        return index not in swarm.partial and swarm.wanted(index)


class Sequential:
    """Pieces in file order (for watching while downloading). Started pieces still go first."""

    def __init__(self) -> None:
        self._cursor = 0

    def next_pieces(self, swarm: SwarmView, peer_has: Bitfield) -> Iterator[int]:
        """Started pieces in index order, then the first unstarted pieces the peer has."""
        yield from sorted(i for i in swarm.partial if peer_has[i])
        while self._cursor < swarm.num_pieces and not swarm.wanted(self._cursor):
            self._cursor += 1
        for i in range(self._cursor, swarm.num_pieces):
            if peer_has[i] and i not in swarm.partial and swarm.wanted(i):
                yield i


def _rarest_first(torrent: Metainfo, options: argparse.Namespace) -> PieceStrategy:
    return RarestFirst(torrent.num_pieces)


def _sequential(torrent: Metainfo, options: argparse.Namespace) -> PieceStrategy:
    return Sequential()


@hookimpl
def torrentcore_piece_strategies():
    """Offer ``rarest-first`` (default) and ``sequential``."""
    return {"rarest-first": _rarest_first, "sequential": _sequential}
