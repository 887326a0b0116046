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

Web seeds (``WebSeedRuns.web_seed_run``): rarest-first starts a web seed's
run at a piece as rare as the rarest unstarted one (what peers can least
provide), the lowest-numbered such piece so that runs stay contiguous, then
takes the wanted unstarted pieces after it, up to the run's size. Sequential
runs start at the first wanted unstarted piece of its window (in order, as
playback needs); random keeps the engine's default.

Readers' read-ahead windows (:mod:`torrentcore.reader`) are not the strategy's
business: the engine requests those urgent pieces before asking any strategy.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Iterable, Iterator

from torrentcore.hookspec import Bitfield, Metainfo, PieceStrategy, Setting, SwarmView, TorrentConfig, hookimpl

from ._sizes import parse_size

#: Pieces fetched in random order before rarest-first takes over.
RANDOM_FIRST_PIECES = 4
#: Pieces web_seed_run looks at from its cursor for the lowest-numbered piece as rare as the rarest.
WEB_SEED_SCAN = 4096
#: The sequential strategy's read-ahead window in bytes (rounded up to whole pieces).
SEQUENTIAL_WINDOW = 8 * 1024 * 1024
#: Ties are broken extent by extent: the extents (runs of EXTENT_BYTES of pieces, at least one piece) come
#: in a random order per torrent, the pieces of one extent in index order (libtorrent's 4 MiB
#: ``piece_extent_affinity``). A download from seeds then writes its files a few at a time instead of all at
#: once, so that each file is finished (and fsync'ed in the background: plugins/_sync_ahead.py) while the
#: download goes on, not all of them at the end. swarm.py tree (512 MiB, 200 files), same run as the order
#: piece by piece, load 2-3: "download complete" to exit 0.06-0.09 s instead of 0.21-0.28 s (1 and 3 seeders).
EXTENT_BYTES = 4 << 20
#: ...but a torrent has at least this many extents (a small one smaller extents), so that peers downloading
#: it at the same time still start in different places.
MIN_EXTENTS = 16


class RarestFirst:
    """The rarest-first :class:`~torrentcore.hookspec.PieceStrategy`, kept up to date incrementally.

    The order is one array of every piece, grouped in buckets of equal availability (rarest first), in the
    manner of libtorrent's piece picker: ``_bound[b]`` is where bucket ``b`` starts, and the pieces before
    ``_bound[0]`` are gone (verified, or not selected: until the selection changes, when the buckets are
    built again). A piece whose availability moves by one
    (``availability_changed``: a HAVE, a leecher's bitfield arriving or leaving) swaps places with the
    last (or first) piece of its bucket and the boundary moves: O(1), never a rebuild. Seeds change every
    piece alike and reorder nothing (the engine does not even report them). Inside a bucket, pieces start
    in a random order per torrent (``rng``; runs of ``extent`` pieces in index order, the runs shuffled:
    :data:`EXTENT_BYTES`) and stay shuffled by the swaps. Before :data:`RANDOM_FIRST_PIECES` pieces are
    verified, pieces come in that random order alone.
    """

    def __init__(self, num_pieces: int, rng: random.Random | None = None, extent: int = 1) -> None:
        self._rng = rng or random.Random()
        self._num_pieces = num_pieces
        self._by_tie = _extent_order(num_pieces, extent, self._rng)  # the random order of the start and of ties
        self._random_cursor = 0
        self._random_selection: object = None
        self._built_for: int | None = None  # id() of the SwarmView the buckets describe
        self._selection: object = None  # the swarm.selected they were built for (a new one: build again)
        self._order = array("l")
        self._pos = array("l")
        self._level: list[int] = []
        self._bound: list[int] = []
        self._all: Bitfield | None = None  # every piece: what a web seed has
        self._ws_cursor = 0  # below it every piece is verified (web_seed_run)
        # Pieces moved before _bound[0] because they were started or waiting for their hash check when the
        # scan met them (else every request batch walked over all pieces in flight again: 2,048 of them
        # with 16 KiB pieces). Put back when swarm.version moves (a failed piece is wanted again).
        self._parked: set[int] = set()
        self._parked_version: int | None = None

    # --- the bucketed order -----------------------------------------------------------------------

    def _rebuild(self, swarm: SwarmView, random_phase: bool = False) -> None:
        """Build the buckets from ``swarm.availability`` (once per SwarmView: later changes are incremental)."""
        n = swarm.num_pieces
        # Levels are the per-piece counts without the seeds (which every piece has alike): exactly what
        # availability_changed moves, so a level never goes below 0.
        counts = getattr(swarm.availability, "counts", None)
        level = list(counts if counts is not None else swarm.availability)
        buckets: list[list[int]] = [[] for _ in range(max(level, default=0) + 1)]
        add = [bucket.append for bucket in buckets]
        # Gone: verified, or not selected (few verified pieces at the first request: a set).
        skip = set(swarm.have.indices())
        sel = swarm.selected
        if sel is not None:
            skip.update(i for i in range(n) if not sel[i])
        gone = [i for i in self._by_tie if i in skip] if skip else []
        for i in self._by_tie:  # tie order inside each bucket (a counting sort: O(n))
            if i not in skip:
                add[level[i]](i)
        order = array("l", gone)
        bound = [len(gone)]
        for bucket in buckets:
            order.extend(bucket)
            bound.append(len(order))
        positions = [0] * n  # (a list is filled faster than an array, then packed)
        for p, i in enumerate(order):
            positions[i] = p
        pos = array("l", positions)
        self._order, self._pos, self._level, self._bound = order, pos, level, bound
        self._built_for, self._selection = id(swarm), sel
        self._parked, self._parked_version = set(), swarm.version

    def availability_changed(self, pieces: Iterable[int], delta: int) -> None:
        """Move each of ``pieces`` one bucket up (``delta`` 1) or down (-1): O(1) per piece."""
        if self._built_for is None:
            return  # built from the availability itself at the first request
        move = self._up if delta > 0 else self._down
        for i in pieces:
            move(i)

    def _swap(self, i: int, p: int) -> None:
        """Put piece ``i`` at position ``p``, and the piece there where ``i`` was."""
        order, pos = self._order, self._pos
        q = pos[i]
        j = order[p]
        order[p], order[q] = i, j
        pos[i], pos[j] = p, q

    def _up(self, i: int) -> None:
        if self._pos[i] < self._bound[0]:
            self._level[i] += 1  # gone: only its level (a parked piece may come back)
            return
        bound = self._bound
        b = self._level[i]
        if b + 2 >= len(bound):
            bound.append(bound[-1])  # a new, empty top bucket
        last = bound[b + 1] - 1
        self._swap(i, last)
        bound[b + 1] = last
        self._level[i] = b + 1

    def _down(self, i: int) -> None:
        b = self._level[i]
        if b == 0:
            return  # (a level below 0 would be a count below 0: never reported)
        if self._pos[i] < self._bound[0]:
            self._level[i] = b - 1  # gone: only its level (a parked piece may come back)
            return
        bound = self._bound
        first = bound[b]
        self._swap(i, first)
        bound[b] = first + 1
        self._level[i] = b - 1

    def _remove(self, i: int) -> None:
        """Move piece ``i`` (verified, or never wanted) before ``_bound[0]``: O(its bucket number)."""
        bound = self._bound
        for b in range(self._level[i], -1, -1):
            first = bound[b]
            self._swap(i, first)
            bound[b] = first + 1

    def _restore(self, i: int) -> None:
        """Put a gone piece ``i`` back into the bucket of its level (the inverse of :meth:`_remove`)."""
        bound = self._bound
        level = self._level[i]
        while len(bound) < level + 2:
            bound.append(bound[-1])  # new, empty top buckets
        for b in range(level + 1):
            last = bound[b] - 1  # the last gone piece (b == 0), else the last of bucket b - 1
            self._swap(i, last)
            bound[b] = last

    def _unpark(self, swarm: SwarmView) -> None:
        """``swarm.version`` moved: parked pieces that are wanted and not started again go back in order."""
        self._parked_version = swarm.version
        partial, have = swarm.partial, swarm.have
        for i in list(self._parked):
            if have[i]:
                self._parked.discard(i)  # verified: gone for good
            elif i not in partial and swarm.wanted(i):
                self._parked.discard(i)
                self._restore(i)

    # --- PieceStrategy ----------------------------------------------------------------------------

    def next_pieces(self, swarm: SwarmView, peer_has: Bitfield) -> Iterator[int]:
        """Started pieces the peer has (rarest first), then unstarted ones by rarity."""
        avail = swarm.availability
        # Started pieces with a free block (``partial_open`` when the engine keeps it; else every started
        # piece). A seed (most peers of a download) has every started piece: no per-piece test.
        opened = getattr(swarm, "partial_open", swarm.partial)
        started = list(opened) if peer_has.complete else [i for i in opened if peer_has[i]]
        if len(started) > 1:
            # By the per-piece counts when the engine keeps them (the seeds add the same to every piece), a
            # plain list: a C-level key instead of a Python one per started piece.
            started.sort(key=getattr(avail, "counts", avail).__getitem__)
        yield from started
        if swarm.have.count < RANDOM_FIRST_PIECES:
            yield from self._random_first(swarm, peer_has)
            return
        if self._built_for != id(swarm) or swarm.selected is not self._selection:
            self._rebuild(swarm, False)  # first request, or the selection changed: unselected pieces may be back
        elif swarm.version != self._parked_version:
            self._unpark(swarm)
        have, sel, partial, order = swarm.have, swarm.selected, swarm.partial, self._order
        parked = self._parked
        p = self._bound[0]
        end = len(order)
        while p < end:
            i = order[p]
            if peer_has[i]:  # (first: a leecher lacks most of what it is shown; one test then)
                if have[i] or (sel is not None and not sel[i]):
                    self._remove(i)  # only pieces visited already come to p: go on after it
                elif i not in partial and swarm.wanted(i):
                    yield i
                else:  # started or being hash-checked: out of the scan until the version moves
                    self._remove(i)
                    parked.add(i)
            p += 1

    def web_seed_run(self, swarm: SwarmView, max_pieces: int) -> list[int]:
        """A run from a piece as rare as the rarest unstarted wanted one: the lowest-numbered such piece
        among the next :data:`WEB_SEED_SCAN` from a cursor, else the rarest itself; then the unstarted
        wanted pieces after it. Ties go to the lowest index, so that runs stay long and contiguous (with
        random ties they were cut by each other: 141 requests for 256 MiB in 4 MiB runs)."""
        if self._all is None or len(self._all) != swarm.num_pieces:
            self._all = Bitfield.full(swarm.num_pieces)  # a web seed has every piece
        partial, avail = swarm.partial, swarm.availability
        rarest = next((i for i in self.next_pieces(swarm, self._all) if i not in partial and swarm.wanted(i)), None)
        if rarest is None:
            return []
        level = avail[rarest]
        c, n = self._ws_cursor, swarm.num_pieces
        while c < n and swarm.have[c]:
            c += 1  # verified pieces stay behind the cursor (a failed piece is only ever not verified)
        self._ws_cursor = c
        for i in range(c, min(n, c + WEB_SEED_SCAN)):
            if avail[i] == level and i not in partial and swarm.wanted(i):
                return _run_from(swarm, i, max_pieces)
        return _run_from(swarm, rarest, max_pieces)

    def _random_first(self, swarm: SwarmView, peer_has: Bitfield) -> Iterator[int]:
        """The first few pieces, in this torrent's random order (something to share as soon as possible)."""
        by_tie, have, sel = self._by_tie, swarm.have, swarm.selected
        if sel is not self._random_selection:  # the selection changed: skipped pieces may be wanted now
            self._random_selection, self._random_cursor = sel, 0
        c = self._random_cursor
        while c < len(by_tie) and (have[by_tie[c]] or (sel is not None and not sel[by_tie[c]])):
            c += 1  # skipped: verified or unselected (until the selection changes, above)
        self._random_cursor = c
        for pos in range(c, len(by_tie)):
            i = by_tie[pos]
            if peer_has[i] and self._fresh(swarm, i):
                yield i

    @staticmethod
    def _fresh(swarm: SwarmView, index: int) -> bool:
        return index not in swarm.partial and swarm.wanted(index)


def _extent_order(num_pieces: int, extent: int, rng: random.Random) -> array:
    """Every piece: runs of ``extent`` pieces (the last one may be shorter) in a random order, each in order."""
    extent = max(1, extent)
    starts = list(range(0, num_pieces, extent))
    rng.shuffle(starts)
    if extent == 1:
        return array("l", starts)
    order = array("l")
    for s in starts:
        order.extend(range(s, min(s + extent, num_pieces)))
    return order


def extent_pieces(piece_length: int, num_pieces: int) -> int:
    """Pieces in one extent: :data:`EXTENT_BYTES` of them, at most 1/:data:`MIN_EXTENTS` of the torrent, at
    least one."""
    return max(1, min(EXTENT_BYTES // max(1, piece_length), num_pieces // MIN_EXTENTS))


def _run_from(swarm: SwarmView, first: int, max_pieces: int) -> list[int]:
    """``first`` and the wanted, unstarted pieces right after it (at most ``max_pieces`` in all)."""
    run = [first]
    nxt = first + 1
    while len(run) < max_pieces and nxt < swarm.num_pieces and nxt not in swarm.partial and swarm.wanted(nxt):
        run.append(nxt)
        nxt += 1
    return run


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

    def availability_changed(self, pieces: Iterable[int], delta: int) -> None:
        """Keep the rarest-first part beyond the window up to date (see :meth:`RarestFirst.availability_changed`)."""
        if self._rest is not None:
            self._rest.availability_changed(pieces, delta)

    def web_seed_run(self, swarm: SwarmView, max_pieces: int) -> list[int]:
        """From the first unstarted wanted piece of the window on (in order); beyond it, rarest first."""
        pieces, _start, _end = self._window(swarm)
        for i in pieces:
            if i not in swarm.partial and swarm.wanted(i):
                return _run_from(swarm, i, max_pieces)
        if self._rest is None:
            self._rest = RarestFirst(swarm.num_pieces, self._rng)
        return self._rest.web_seed_run(swarm, max_pieces)

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
    return RarestFirst(torrent.num_pieces, extent=extent_pieces(torrent.piece_length, torrent.num_pieces))


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
