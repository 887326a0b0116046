"""Piece selection: ``rarest-first`` (the default), ``sequential`` for streaming, and ``random``.

Rarest first, as every mainstream client does it:

* pieces already started are finished first (fewer partial pieces in memory,
  and complete pieces sooner to share);
* then pieces that the fewest connected peers have, ties broken at random so
  that peers starting together do not all fetch the same pieces;
* until a few pieces are complete, a random order instead, to have something
  to share as soon as possible.

Sequential (for playing a file while it downloads): a read-ahead window of
``sequential.window`` bytes (default :data:`SEQUENTIAL_WINDOW`, 8 MiB, rounded
up to whole pieces, at least one piece) starts at the first piece we do not
have; its pieces are requested strictly in index order before anything else.
Blocks beyond the window are fetched rarest first, so a swarm of streaming
peers still spreads every piece. A request pipeline is about two seconds deep,
so the window delivers roughly ``window / 2 s`` in order: 8 MiB keeps up with
4 MB/s of playback; a bigger window is more in order, a smaller one leaves more
to rarest-first.

Random: pieces in a random order (one shuffle per torrent) among those the
peer has, started pieces first.

Every strategy requests only wanted pieces (``SwarmView.wanted``: selected
with ``--only/--skip``, not verified), and skips unselected pieces until the
selection changes (``SwarmView.selected`` becomes another object).

Readers' read-ahead windows (:mod:`torrentcore.reader`) are not the strategy's
business: the engine requests those urgent pieces before asking any strategy.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from torrentcore.hookspec import Bitfield, Metainfo, PieceStrategy, Setting, SwarmView, TorrentConfig, hookimpl

from ._sizes import parse_size

#: Pieces fetched in random order before rarest-first takes over.
RANDOM_FIRST_PIECES = 4
#: The sequential strategy's read-ahead window in bytes (rounded up to whole pieces).
SEQUENTIAL_WINDOW = 8 * 1024 * 1024


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
        # A seed (most peers of a download) has every started piece: no per-piece test.
        started = list(swarm.partial) if peer_has.complete else [i for i in swarm.partial if peer_has[i]]
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
    """In order inside a read-ahead window from the first missing piece; rarest first beyond it."""

    def __init__(self, window: int = 16, rng: random.Random | None = None) -> None:
        """``window``: pieces in the read-ahead window (at least 1)."""
        self.window = max(1, int(window))
        self._rng = rng
        self._rest: RarestFirst | None = None
        self._cursor = 0
        self._cached: tuple[int, int] | None = None
        self._pieces: list[int] = []
        self._end = 0
        self._selection: object = None  # the swarm.selected the cursor was moved for

    def _window(self, swarm: SwarmView) -> tuple[list[int], int, int]:
        """The window's pieces (selected, not verified, in order), its first index and its end."""
        have, sel, n = swarm.have, swarm.selected, swarm.num_pieces
        if sel is not self._selection:  # the selection changed (a new object): skipped pieces may be wanted now
            self._selection, self._cursor, self._cached = sel, 0, None
        c = self._cursor
        while c < n and (have[c] or (sel is not None and not sel[c])):
            c += 1  # verified or unselected pieces stay skipped (until the selection changes, above)
        self._cursor = c
        if self._cached != (c, have.count):
            pieces: list[int] = []
            i = c
            while i < n and len(pieces) < self.window:
                if not have[i] and (sel is None or sel[i]):
                    pieces.append(i)
                i += 1
            self._pieces, self._end, self._cached = pieces, i, (c, have.count)
        return self._pieces, c, self._end

    def next_pieces(self, swarm: SwarmView, peer_has: Bitfield) -> Iterator[int]:
        """The window's pieces in index order, then the rest rarest first (started pieces first)."""
        pieces, start, end = self._window(swarm)
        for i in pieces:
            if peer_has[i] and swarm.wanted(i):
                yield i
        if end >= swarm.num_pieces:
            return  # the window reaches the last piece; before it, everything is verified or unselected
        if self._rest is None:
            self._rest = RarestFirst(swarm.num_pieces, self._rng)
        for i in self._rest.next_pieces(swarm, peer_has):
            if not start <= i < end:
                yield i


class RandomOrder:
    """Pieces in a random order among those the peer has; started pieces first."""

    def __init__(self, num_pieces: int, rng: random.Random | None = None) -> None:
        self._order = list(range(num_pieces))
        (rng or random.Random()).shuffle(self._order)
        self._cursor = 0
        self._selection: object = None  # the swarm.selected the cursor was moved for

    def next_pieces(self, swarm: SwarmView, peer_has: Bitfield) -> Iterator[int]:
        """Started pieces the peer has, then the others in this torrent's shuffled order."""
        yield from [i for i in swarm.partial if peer_has[i]]
        order, have, sel = self._order, swarm.have, swarm.selected
        if sel is not self._selection:  # the selection changed (a new object): skipped pieces may be wanted now
            self._selection, self._cursor = sel, 0
        c = self._cursor
        while c < len(order) and (have[order[c]] or (sel is not None and not sel[order[c]])):
            c += 1  # skipped: verified or unselected (until the selection changes, above)
        self._cursor = c
        for pos in range(c, len(order)):
            i = order[pos]
            if peer_has[i] and i not in swarm.partial and swarm.wanted(i):
                yield i


def _rarest_first(torrent: Metainfo, options: TorrentConfig) -> PieceStrategy:
    return RarestFirst(torrent.num_pieces)


def window_pieces(window_bytes: int, piece_length: int) -> int:
    """Pieces in a read-ahead window of ``window_bytes`` (rounded up; at least one)."""
    return max(1, -(-max(0, window_bytes) // max(1, piece_length)))


def _sequential(torrent: Metainfo, options: TorrentConfig) -> PieceStrategy:
    settings = options.plugin_settings
    value = (settings.get("sequential") or {}).get("window")
    window = SEQUENTIAL_WINDOW if value in (None, "") else parse_size(value, "sequential.window")
    return Sequential(window_pieces(window, torrent.piece_length))


def _random(torrent: Metainfo, options: TorrentConfig) -> PieceStrategy:
    return RandomOrder(torrent.num_pieces)


@hookimpl
def torrentcore_piece_strategies():
    """Offer ``rarest-first`` (default), ``sequential`` and ``random``."""
    return {"rarest-first": _rarest_first, "sequential": _sequential, "random": _random}


@hookimpl
def torrentcore_plugin_settings():
    """``sequential.window``: the read-ahead window of the sequential strategy."""
    return {
        "sequential": {
            "window": Setting(str, "8M", "sequential strategy: bytes fetched strictly in order from the first "
                                         "missing piece, e.g. 8M (rarest first beyond)"),
        }
    }
