"""Block bookkeeping: which blocks are free, requested, received; availability; endgame.

The piece manager is the :class:`~torrentcore.hookspec.SwarmView` handed to
the piece strategy. It asks the strategy for an order of pieces and turns it
into block requests, tracks who asked for what (several peers per block in
endgame), assembles each piece in memory, and hands complete pieces over for
verification. Nothing here does I/O.

Urgent pieces (:meth:`PieceManager.set_urgent`) are the engine's own priority,
above every strategy: the read-ahead windows of open readers
(:mod:`torrentcore.reader`). Their free blocks are handed out before the
strategy is asked anything, window by window in order, so no strategy plugin
can ignore them; once a whole window is requested, the blocks of its first
:data:`URGENT_DUPLICATE_PIECES` pieces may also be asked of a second peer, as
in endgame, so that one slow peer does not hold a waiting read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Iterator, Sequence
from typing import Any

from .bitfield import Bitfield
from .hookspec import BLOCK_SIZE, PieceStrategy
from .metainfo import Metainfo
from .pad_blocks import pad_blocks

FREE, REQUESTED, RECEIVED = 0, 1, 2
#: In endgame, a block is requested from at most this many peers at once...
ENDGAME_DUPLICATES = 2
#: ...and a peer is given at most this many duplicate blocks per call, so that near the end deep
#: pipelines are not copied wholesale (measured: 3 copies of full queues wasted 5% of a 256 MiB download).
ENDGAME_BLOCKS_PER_CALL = 4
#: Blocks requested from all peers together, at most (in bytes): every started piece holds a buffer, and
#: 48 peers with pipelines of 1,000 blocks each requested a small torrent's every block at once (350 MiB
#: of buffers, and endgame from the first second). 32 MiB is 0.07 s at 500 MB/s, 0.3 s at 100 MB/s.
MAX_OUTSTANDING_BYTES = 32 * 1024 * 1024
#: Once that limit is reached, blocks are handed out again only this many at a time.
MIN_BATCH = 32
#: HAVE messages move ``version`` once per ``num_pieces // HAVES_PER_VERSION`` of them (see add_peer_piece).
HAVES_PER_VERSION = 16
#: Piece buffers kept for reuse (allocating and faulting in fresh memory per piece is measurable)...
SPARE_BUFFERS = 16
#: ...or as many as fit in this many bytes, if more: requests start pieces in batches (up to 256 one-block
#: pieces at once with 16 KiB pieces) while stored pieces come back one at a time, so 16 spares left nearly
#: every 16 KiB piece a fresh buffer (benchmarks/large_torrent.py), and with 256 KiB pieces a fresh buffer
#: (zeroed, so every page faulted in) cost 1.4 % of a 200-file download's samples (py-spy, swarm.py tree).
SPARE_BUFFER_BYTES = 8 * 1024 * 1024
#: A v1 piece's SHA-1 is fed on the event loop, HASH_RUN bytes at a time, with the blocks that arrived in order
#: (and at its last block with the rest), while those bytes are still in this core's cache. The worker thread
#: that hashed whole pieces, on the other core and a few ms later, got 1.05 GB/s out of SHA-1 here (perf: a
#: third of the process's CPU); the same code gets 1.9-2.0 GB/s from bytes the same core just wrote (openssl
#: speed: 1.93). Each feed releases the GIL (hashlib does for 2 KiB or more), so the workers run meanwhile.
#: Measured (benchmarks/swarm.py, against the code hashing whole pieces in the workers, 8 rounds each): CPU
#: 0.92-0.97x (user 1.98 -> 1.73-1.77 s/GiB on the tree, sys +0.02-0.17), wall 0.94-1.03x (the loop is now busy
#: ~94 % of a download, against 77 % and 15 % waiting for data). Runs of 16 KiB in chunks under 2 KiB (no GIL
#: release) made the loop the bottleneck, 128 and 256 KiB were the same as 64 within the noise (0.94-1.06).
HASH_RUN = 64 * 1024
#: The first pieces of each urgent window (those a read waits for, or soon will) whose requested blocks may
#: be asked of a second peer once the whole window is requested (at most ENDGAME_DUPLICATES peers per block,
#: ENDGAME_BLOCKS_PER_CALL duplicates per call, as in endgame).
URGENT_DUPLICATE_PIECES = 2

Block = tuple[int, int, int]  # (piece index, begin, length)
_REQUESTED_STATE = bytes([REQUESTED])
#: block_received's and store_block's usual answer: no other peer to cancel, the piece not complete yet.
_NOTHING: tuple[tuple[()], None] = ((), None)
#: :meth:`PieceManager.store_block`'s answer for the usual block (asked from that peer only, not its piece's last):
#: always this one tuple, so the caller tests ``is STORED`` instead of unpacking it.
STORED = _NOTHING


def _others(asked: Sequence[Hashable], peer: Hashable) -> list[Hashable]:
    """The peers of ``asked`` other than ``peer`` (out of line: a comprehension in the per-block path made its
    ``peer`` a closure cell, read through one more indirection on every block)."""
    return [p for p in asked if p != peer]


def hashes_on_arrival(torrent: Metainfo) -> bool:
    """Whether the pieces' hashes are fed on the event loop as the blocks arrive (v1 torrents: SHA-1, see
    HASH_RUN): the verifier's workers then only finish them and write. v2 and hybrid pieces are hashed whole there."""
    return bool(torrent.pieces) and torrent.info_hash_v2 is None


class Piece:
    """A piece being downloaded: its buffer and the state of each block."""

    __slots__ = ("index", "size", "buffer", "view", "state", "requesters", "free", "received", "senders",
                 "first_free", "saturated", "sha1", "hashed", "contiguous")

    def __init__(self, index: int, size: int, buffer: bytearray | None = None) -> None:
        self.index = index
        self.size = size
        self.buffer = buffer if buffer is not None else bytearray(size)
        #: A memoryview of ``buffer`` made by the first block (see PieceManager.block_buffer); released with it.
        self.view: memoryview | None = None
        nblocks = (size + BLOCK_SIZE - 1) // BLOCK_SIZE
        self.state = bytearray(nblocks)
        #: block number -> the peers it is requested from. A list may be shared by several blocks (a run
        #: requested at once): replace it, never change it in place.
        self.requesters: dict[int, list[Hashable]] = {}
        self.free = nblocks
        self.received = 0
        self.first_free = 0
        # block number -> peer that delivered it (for banning liars)
        self.senders: dict[int, Hashable] = {}
        #: The endgame epoch in which every requested block was found asked of ENDGAME_DUPLICATES peers
        #: (PieceManager._endgame_requests skips the piece until the epoch moves; -1: not found so).
        self.saturated = -1
        #: v1 torrents: the SHA-1 of ``buffer[:hashed]``, fed as the blocks arrive (see HASH_RUN and
        #: :meth:`PieceManager.store_block`); None for v2 and hybrid torrents, whose pieces are hashed whole.
        self.sha1: Any = None
        self.hashed = 0
        #: ``buffer[:contiguous]`` holds blocks received through store_block, in order from the first.
        self.contiguous = 0

    def block_length(self, block: int) -> int:
        """Length of block number ``block``."""
        return min(BLOCK_SIZE, self.size - block * BLOCK_SIZE)


class Availability(Sequence):
    """How many connected peers have each piece: a count per piece, plus the seeds counted once for all.

    A seed (a peer with every piece) joining or leaving changes every piece's availability alike, so it
    costs O(1) here and reorders nothing; ``availability[i]`` is ``counts[i] + seeds``.
    """

    __slots__ = ("counts", "seeds")

    def __init__(self, num_pieces: int) -> None:
        self.counts = [0] * num_pieces
        self.seeds = 0

    def __len__(self) -> int:
        return len(self.counts)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [c + self.seeds for c in self.counts[index]]
        return self.counts[index] + self.seeds

    def __iter__(self) -> Iterator[int]:
        seeds = self.seeds
        return (c + seeds for c in self.counts)


#: The urgent window's owner for pieces lost after being trusted (see :meth:`PieceManager.piece_lost`).
LOST_PIECES = "pieces lost from the resume record"


class PieceManager:
    """Request planning for one torrent (implements :class:`~torrentcore.hookspec.SwarmView`).

    Over 400 lines: the block bookkeeping (free, requested, received, in verification, endgame
    duplicates) and the per-block store path share one set of structures, and the hot paths
    (``store_block``, ``next_requests``) stay inline because they run 65,536 times per GiB. The next part to
    move out is endgame (its duplicates and cancels), which only reads that state.
    """

    def __init__(
        self, torrent: Metainfo, have: Bitfield, strategy: PieceStrategy, selected: Bitfield | None = None
    ) -> None:
        self.torrent = torrent
        self.num_pieces = torrent.num_pieces
        self.have = have
        self.strategy = strategy
        #: Pieces overlapping a file the user selected (``--only``/``--skip``); ``None``: every piece.
        self.selected = selected
        self.availability = Availability(self.num_pieces)
        # Bitfields counted as seeds (by id; kept alive here, so an id is never reused while listed).
        self._seed_bitfields: dict[int, Bitfield] = {}
        # The strategy's optional incremental listener (see hookspec.PieceStrategy), if it has one.
        self._availability_changed = getattr(strategy, "availability_changed", None)
        self.partial: dict[int, Piece] = {}
        #: The started pieces that still have a free (unrequested) block, in the order they started: what a
        #: strategy offers first (``SwarmView.partial_open``). Most started pieces are fully requested
        #: (all of them with one-block pieces), so scanning ``partial`` per request batch cost O(pieces in
        #: flight): 2,048 of them with 16 KiB pieces (benchmarks/large_torrent.py).
        self.partial_open: dict[int, Piece] = {}
        self.verifying: set[int] = set()
        self.version = 0
        #: Blocks requested and not yet received or released, over all peers (endgame duplicates count).
        self.requested_blocks = 0
        self.max_requested = max(256, MAX_OUTSTANDING_BYTES // BLOCK_SIZE)
        # Endgame: a peer whose last scan found nothing is not scanned again until a block is released,
        # a piece fails or a peer announces a piece (nothing else can give it a block to duplicate).
        self._endgame_epoch = 0
        self._endgame_dry: dict[Hashable, int] = {}
        self._haves = 0
        self._haves_per_version = max(1, self.num_pieces // HAVES_PER_VERSION)
        self.endgame = False
        # Number of wanted pieces that are neither started nor being verified.
        self._unstarted = self.num_pieces - have.count
        if selected is not None:
            self._unstarted = sum(1 for i in selected.indices() if not have[i])
        # Selected pieces not verified yet (kept up to date by piece_verified()).
        self._missing = self._unstarted
        self._spare: list[bytearray] = []
        #: v1 only: each piece's SHA-1 is fed as its blocks arrive (see Piece.sha1).
        self._hash_on_arrival = hashes_on_arrival(torrent)
        self._spare_max = max(SPARE_BUFFERS, SPARE_BUFFER_BYTES // max(1, torrent.piece_length))
        # Urgent windows by owner (a reader), each in its own order; ``urgent`` is all of them merged.
        self._urgent_windows: dict[Hashable, list[int]] = {}
        #: Urgent pieces, fetched before anything the strategy picks: the windows interleaved (the first
        #: piece of each window, then the second of each, ...), each piece once.
        self.urgent: list[int] = []
        #: Piece -> its blocks made only of pad-file bytes (BEP 47): received as zeros at start, never requested.
        self.pad_blocks = pad_blocks(torrent)

    # --- SwarmView ---------------------------------------------------------------------------

    def wanted(self, index: int) -> bool:
        """Selected, not verified and not waiting for its hash check."""
        sel = self.selected
        return not self.have[index] and index not in self.verifying and (sel is None or sel[index])

    @property
    def complete(self) -> bool:
        """Every wanted piece is verified (the whole torrent, or the pieces of the selected files)."""
        return self._missing <= 0

    # --- wanted pieces and urgent windows ------------------------------------------------------

    def set_wanted(self, selected: Bitfield | None) -> None:
        """Change the wanted pieces while the torrent runs (``None``: every piece).

        Pieces in flight (started, or waiting for their hash check) stay wanted even when ``selected``
        leaves them out, so that no received block is thrown away; they are part of the selection from
        now on. ``selected`` is copied: :attr:`selected` becomes a new object (strategies that skip
        unselected pieces for good notice it that way) and :attr:`version` moves.
        """
        n = self.num_pieces
        have, partial, verifying = self.have, self.partial, self.verifying
        if selected is None:
            self.selected = None
            self._missing = n - have.count
            self._unstarted = n - have.count - len(partial) - len(verifying)
        else:
            if len(selected) != n:
                raise ValueError(f"a selection of {len(selected)} pieces for a torrent of {n}")
            mask = Bitfield(n, selected.to_bytes())
            for index in (*partial, *verifying):
                mask.set(index)
            self.selected = mask
            missing = [i for i in mask.indices() if not have[i]]
            self._missing = len(missing)
            self._unstarted = sum(1 for i in missing if i not in partial and i not in verifying)
        self.endgame = False
        self._endgame_epoch += 1
        self.version += 1

    def set_urgent(self, owner: Hashable, pieces: Iterable[int]) -> None:
        """Make ``pieces`` (in this order) ``owner``'s urgent window, replacing its previous one.

        Urgent pieces are requested before anything the strategy picks (see the module docstring); only
        wanted ones are requested (select a file before asking for its pieces). An empty window is
        :meth:`clear_urgent`. Indices out of range are ignored.
        """
        n = self.num_pieces
        window = [i for i in dict.fromkeys(pieces) if 0 <= i < n]
        if not window:
            self.clear_urgent(owner)
            return
        if self._urgent_windows.get(owner) == window:
            return
        self._urgent_windows[owner] = window
        self._merge_urgent()

    def clear_urgent(self, owner: Hashable) -> None:
        """Drop ``owner``'s urgent window (a reader closed); nothing if it has none."""
        if self._urgent_windows.pop(owner, None) is not None:
            self._merge_urgent()

    def _merge_urgent(self) -> None:
        windows = list(self._urgent_windows.values())
        merged: dict[int, None] = {}
        for rank in range(max((len(w) for w in windows), default=0)):
            for window in windows:
                if rank < len(window):
                    merged.setdefault(window[rank])
        self.urgent = list(merged)
        self._endgame_epoch += 1

    # --- availability --------------------------------------------------------------------------

    def add_peer_pieces(self, has: Bitfield) -> None:
        """A peer's bitfield arrived (a seed's costs O(1): see :class:`Availability`)."""
        if has.complete:
            self.availability.seeds += 1
            self._seed_bitfields[id(has)] = has
            return
        counts = self.availability.counts
        indices = list(has.indices())
        for i in indices:
            counts[i] += 1
        self.version += 1
        if self._availability_changed is not None and indices:
            self._availability_changed(indices, 1)

    def add_peer_piece(self, index: int) -> None:
        """A peer announced one more piece (HAVE).

        ``version`` moves only every :data:`HAVES_PER_VERSION` of the piece count in HAVEs: a strategy
        rebuilds its whole order (O(n log n)) when it moves, and a swarm sends HAVEs for every piece,
        so one rebuild per HAVE made a download cost O(n^2 log n) (measured: 2.7 ms per piece at 10k
        pieces, benchmarks/picker.py). Orders are then a little stale between rebuilds, never wrong.
        A strategy with ``availability_changed`` (rarest-first) is told at once and moves the piece in
        O(1) instead: its order is exact and never rebuilt.
        """
        self.availability.counts[index] += 1
        self._endgame_epoch += 1
        self._haves += 1
        if self._haves >= self._haves_per_version:
            self._haves = 0
            self.version += 1
        if self._availability_changed is not None:
            self._availability_changed((index,), 1)

    def remove_peer_pieces(self, has: Bitfield) -> None:
        """A peer left; forget its pieces (a peer that joined as a seed costs O(1))."""
        if self._seed_bitfields.pop(id(has), None) is not None:
            self.availability.seeds -= 1
            return
        counts = self.availability.counts
        indices = list(has.indices())
        for i in indices:
            counts[i] -= 1
        self.version += 1
        if self._availability_changed is not None and indices:
            self._availability_changed(indices, -1)

    def interesting(self, has: Bitfield) -> bool:
        """Whether a peer with ``has`` has any piece we still want."""
        if self.complete:
            return False
        if has.complete:
            return True
        return any(self.wanted(i) for i in has.indices())

    # --- requests ------------------------------------------------------------------------------

    def _start(self, index: int) -> Piece:
        size = self.torrent.piece_size(index)
        spare = self._spare.pop() if self._spare and size == self.torrent.piece_length else None
        piece = Piece(index, size, spare)
        if self._hash_on_arrival:
            piece.sha1 = hashlib.sha1()
        pads = self.pad_blocks.get(index)
        if pads:
            self._fill_pads(piece, pads)
        self.partial[index] = piece
        self.partial_open[index] = piece
        self._unstarted -= 1
        return piece

    @staticmethod
    def _fill_pads(piece: Piece, pads: tuple[int, ...]) -> None:
        """Mark the pad blocks of a piece received, as zeros (see :mod:`torrentcore.pad_blocks`)."""
        buffer, state = piece.buffer, piece.state
        for b in pads:
            begin = b * BLOCK_SIZE
            end = min(begin + BLOCK_SIZE, piece.size)
            buffer[begin:end] = bytes(end - begin)  # a reused buffer holds an older piece's bytes
            state[b] = RECEIVED
        piece.free -= len(pads)
        piece.received += len(pads)
        while piece.first_free < len(state) and state[piece.first_free] != FREE:
            piece.first_free += 1

    def next_requests(self, peer: Hashable, has: Bitfield, count: int) -> list[Block]:
        """Up to ``count`` blocks to request from ``peer`` (whose pieces are ``has``).

        Fewer (maybe none) while :data:`MAX_OUTSTANDING_BYTES` are requested from all peers together.
        """
        room = self.max_requested - self.requested_blocks
        if room < min(count, MIN_BATCH):
            return []  # wait until a batch is free: a scan for one block per arriving block cost 47% of the CPU
        out = self._next_requests(peer, has, min(count, room))
        self.requested_blocks += len(out)
        return out

    def take_pieces(self, owner: Hashable, indices: Iterable[int]) -> list[Block]:
        """Claim every free block of these pieces for ``owner`` (a web seed asks for whole pieces), starting
        them if needed; pieces not wanted are skipped. Give unreceived blocks back with :meth:`release`."""
        out: list[Block] = []
        for index in indices:
            if not (0 <= index < self.num_pieces) or not self.wanted(index):
                continue
            piece = self.partial.get(index)
            if piece is None:
                piece = self._start(index)
            self._take_free(piece, owner, out, len(out) + piece.free)
        self.requested_blocks += len(out)
        return out

    def _take_free(self, piece: Piece, peer: Hashable, out: list[Block], count: int) -> None:
        """Append free blocks of ``piece`` (in offset order) to ``out``, marked requested by ``peer``."""
        state = piece.state
        b = piece.first_free
        nblocks = len(state)
        size = piece.size
        requesters = piece.requesters
        index = piece.index
        if piece.free == nblocks - b:
            # Every block from first_free on is free (no block before it is): most calls, a piece just started
            # or the rest of one a batch cut. Taken as one run, not tested one by one: next_requests' CPU per
            # block 1.42-1.55 -> 1.09-1.13 us (2,048 pieces of 256 KiB, one seed, batches of 250, thread_time).
            end = min(nblocks, b + count - len(out))
            if end <= b:
                return
            state[b:end] = _REQUESTED_STATE * (end - b)
            # One list for the run, shared by its blocks (a new list per block was ~8 bytecodes and an
            # allocation per requested block): requester lists are replaced, never changed in place.
            requesters.update(dict.fromkeys(range(b, end), [peer]))
            out.extend([(index, begin, BLOCK_SIZE) for begin in range(b * BLOCK_SIZE, end * BLOCK_SIZE, BLOCK_SIZE)])
            if end == nblocks and size % BLOCK_SIZE:
                out[-1] = (index, (end - 1) * BLOCK_SIZE, size - (end - 1) * BLOCK_SIZE)
            piece.free -= end - b
            piece.first_free = end
            if not piece.free:
                self.partial_open.pop(index, None)
            return
        while b < nblocks and len(out) < count:
            if state[b] == FREE:
                state[b] = REQUESTED
                requesters[b] = [peer]
                piece.free -= 1
                begin = b * BLOCK_SIZE
                out.append((index, begin, min(BLOCK_SIZE, size - begin)))
            b += 1
        piece.first_free = b
        if not piece.free:
            self.partial_open.pop(index, None)

    def _next_requests(self, peer: Hashable, has: Bitfield, count: int) -> list[Block]:
        out: list[Block] = []
        if count <= 0:
            return out
        if self.urgent:
            self._urgent_requests(peer, has, out, count)
            if len(out) >= count:
                return out
        partial = self.partial
        for index in self.strategy.next_pieces(self, has):
            piece = partial.get(index)
            if piece is not None and not piece.free:
                continue  # started and fully requested (most started pieces): skip before the checks below
            if not (0 <= index < self.num_pieces) or not has[index] or not self.wanted(index):
                continue
            if piece is None:
                piece = self._start(index)
            self._take_free(piece, peer, out, count)
            if len(out) >= count:
                return out
        if self._unstarted == 0 and not self.partial_open:
            self.endgame = True
        if self.endgame and len(out) < count and self._endgame_dry.get(peer) != self._endgame_epoch:
            want = min(count - len(out), ENDGAME_BLOCKS_PER_CALL)
            extra = self._endgame_requests(peer, has, want)
            if len(extra) < want:
                self._endgame_dry[peer] = self._endgame_epoch
            out.extend(extra)
        return out

    def _urgent_requests(self, peer: Hashable, has: Bitfield, out: list[Block], count: int) -> None:
        """Free blocks of urgent pieces the peer has, in window order; then, once every urgent piece the
        peer has is requested, duplicates of the first pieces of each window (see set_urgent)."""
        partial = self.partial
        for index in self.urgent:
            if not has[index] or not self.wanted(index):
                continue
            piece = partial.get(index)
            if piece is None:
                piece = self._start(index)
            elif not piece.free:
                continue
            self._take_free(piece, peer, out, count)
            if len(out) >= count:
                return
        # Here every urgent piece the peer has is requested in full: duplicates of the windows' heads.
        budget = min(count - len(out), ENDGAME_BLOCKS_PER_CALL)
        for window in self._urgent_windows.values():
            heads = 0
            for index in window:
                if heads >= URGENT_DUPLICATE_PIECES:
                    break
                if self.have[index] or index in self.verifying:
                    continue
                heads += 1
                piece = partial.get(index)
                if piece is None or not has[index]:
                    continue
                for b, who in piece.requesters.items():
                    if piece.state[b] == REQUESTED and peer not in who and len(who) < ENDGAME_DUPLICATES:
                        piece.requesters[b] = [*who, peer]  # (a new list: see _take_free)
                        out.append((index, b * BLOCK_SIZE, piece.block_length(b)))
                        budget -= 1
                        if budget <= 0:
                            return

    def _endgame_requests(self, peer: Hashable, has: Bitfield, count: int) -> list[Block]:
        """Up to ``count`` duplicates for ``peer``: requested blocks of pieces it has, asked of fewer than
        ENDGAME_DUPLICATES peers and not of it.

        A piece whose every requested block is asked of ENDGAME_DUPLICATES peers is marked ``saturated`` for the
        epoch and skipped after: within an epoch blocks only gain requesters or arrive (a release, which can free
        one, moves the epoch). Scanning every requested block again at each call was a third of the event loop's
        bytecodes in a 128 MiB download from 50 seeders.
        """
        out: list[Block] = []
        epoch = self._endgame_epoch
        for piece in self.partial.values():
            if piece.saturated == epoch or not has[piece.index]:
                continue
            state, requesters = piece.state, piece.requesters
            open_blocks = False  # a block another peer could still be asked for
            for b, who in requesters.items():
                if len(who) < ENDGAME_DUPLICATES and state[b] == REQUESTED:
                    if peer in who:
                        open_blocks = True
                        continue
                    requesters[b] = [*who, peer]  # (a new list: see _take_free)
                    out.append((piece.index, b * BLOCK_SIZE, piece.block_length(b)))
                    if len(who) + 1 < ENDGAME_DUPLICATES:
                        open_blocks = True
                    if len(out) >= count:
                        return out
            if not open_blocks:
                piece.saturated = epoch
        return out

    def release(self, peer: Hashable, blocks: list[Block]) -> None:
        """``peer`` will not deliver these blocks (choked us, timed out, left): free them."""
        for index, begin, _length in blocks:
            piece = self.partial.get(index)
            if piece is None:
                continue
            b = begin // BLOCK_SIZE
            who = piece.requesters.get(b)
            if who and peer in who:
                who = [p for p in who if p != peer]  # a new list (see _take_free)
                self.requested_blocks -= 1
                self._endgame_epoch += 1
                if who:
                    piece.requesters[b] = who
                else:
                    del piece.requesters[b]
                    if piece.state[b] == REQUESTED:
                        piece.state[b] = FREE
                        piece.free += 1
                        self.partial_open[index] = piece
                        piece.first_free = min(piece.first_free, b)
                        self.endgame = False

    # --- receiving -----------------------------------------------------------------------------

    def block_buffer(self, index: int, begin: int, length: int) -> memoryview | None:
        """Where to store an arriving block, or None if we do not need it (duplicate, unknown)."""
        piece = self.partial.get(index)
        if piece is None or begin % BLOCK_SIZE:
            return None
        b = begin // BLOCK_SIZE
        if b >= len(piece.state) or piece.state[b] == RECEIVED or length != min(BLOCK_SIZE, piece.size - begin):
            return None
        view = piece.view
        if view is None:
            view = piece.view = memoryview(piece.buffer)  # one view per piece, sliced per block
        return view[begin : begin + length]

    def store_block(self, peer: Hashable, index: int, begin: int,
                    data) -> tuple[Sequence[Hashable], Piece | None] | None:
        """Copy an arriving block (``data``: bytes or a memoryview, e.g. of a connection's read buffer) into its
        piece and record it: :meth:`block_buffer`, one copy and :meth:`block_received` in one call (the peer
        wire's per-block path, 65,536 times per GiB).

        None: the block is not needed (duplicate, unknown, wrong length), nothing stored. Otherwise as
        :meth:`block_received` (in the usual case the same empty answer each time, not a new tuple).
        """
        piece = self.partial.get(index)
        if piece is None:
            return None
        n = len(data)
        end = begin + n
        # A whole block at a block boundary: BLOCK_SIZE bytes inside the piece, or the piece's shorter last block.
        if n == BLOCK_SIZE:
            if end > piece.size or begin % BLOCK_SIZE:
                return None
        elif not 0 < n < BLOCK_SIZE or end != piece.size or begin % BLOCK_SIZE:
            return None
        b = begin // BLOCK_SIZE
        state = piece.state
        view = piece.view
        if view is None:  # one view per piece: a copy into it needs no temporary (a bytearray's slice does)
            view = piece.view = memoryview(piece.buffer)
        # The usual block: requested, not the piece's last. Otherwise a duplicate, a free block, or the last one.
        usual = state[b] == REQUESTED and piece.received + 1 != len(state)
        if not usual and state[b] == RECEIVED:
            return None
        view[begin:end] = data
        if begin == piece.contiguous:  # in order: feed the piece's SHA-1 now and then (see HASH_RUN)
            piece.contiguous = end
            if piece.sha1 is not None and (end - piece.hashed >= HASH_RUN or end == piece.size):
                piece.sha1.update(view[piece.hashed : end])
                piece.hashed = end
        if not usual:
            return self._record(piece, b, peer)
        # What _record does, inline for the usual block.
        state[b] = RECEIVED
        piece.received += 1
        piece.senders[b] = peer
        asked = piece.requesters.pop(b, ())
        self.requested_blocks -= len(asked)
        if len(asked) == 1 and asked[0] == peer:
            return _NOTHING
        return _others(asked, peer), None

    def block_received(self, peer: Hashable, index: int, begin: int) -> tuple[Sequence[Hashable], Piece | None]:
        """Record a block stored via :meth:`block_buffer`.

        Returns the other peers that were also asked for it (send them CANCEL),
        and the piece if it is now complete (it moves to verification).
        """
        piece = self.partial.get(index)
        b = begin // BLOCK_SIZE
        if piece is None or piece.state[b] == RECEIVED:
            return _NOTHING  # completed meanwhile by another peer: a duplicate
        return self._record(piece, b, peer)

    def _record(self, piece: Piece, b: int, peer: Hashable) -> tuple[Sequence[Hashable], Piece | None]:
        index = piece.index
        if piece.state[b] == FREE:
            piece.free -= 1
            if not piece.free:
                self.partial_open.pop(index, None)
        piece.state[b] = RECEIVED
        piece.received += 1
        piece.senders[b] = peer
        asked = piece.requesters.pop(b, ())
        self.requested_blocks -= len(asked)
        if len(asked) == 1 and asked[0] == peer:
            others: Sequence[Hashable] = ()  # the usual case: asked from this peer only (nothing allocated)
        else:
            others = _others(asked, peer)
        if piece.received == len(piece.state):
            del self.partial[index]
            self.partial_open.pop(index, None)
            self.verifying.add(index)
            return others, piece
        return (others, None) if others else _NOTHING

    def recycle(self, piece: Piece) -> None:
        """The piece's buffer is no longer used (stored, or discarded): keep it for a later piece.

        Every byte of a reused buffer is overwritten by received blocks before it is hashed.
        """
        piece.view = None
        if len(piece.buffer) == self.torrent.piece_length and len(self._spare) < self._spare_max:
            self._spare.append(piece.buffer)
        piece.buffer = bytearray()

    def piece_verified(self, index: int) -> None:
        """The piece passed its hash check and is stored."""
        self.verifying.discard(index)
        lost = self._urgent_windows.get(LOST_PIECES)
        if lost is not None and index in lost:
            self.set_urgent(LOST_PIECES, [i for i in lost if i != index])
        if self.have.set(index) and (self.selected is None or self.selected[index]):
            self._missing -= 1

    def piece_found(self, index: int) -> None:
        """A piece never started was found good on disk mid-run (a v2 file's layer arrived): as
        :meth:`piece_verified`, and no longer counted unstarted."""
        if self.have[index] or index in self.partial or index in self.verifying:
            return
        if self.selected is None or self.selected[index]:
            self._unstarted -= 1
        self.piece_verified(index)

    def piece_lost(self, index: int) -> None:
        """A piece we had (trusted from a resume record) turned out bad: it is wanted again from scratch,
        first of all (an urgent window of its own: strategies drop verified pieces from their order for good).
        ``have`` is cleared by the caller."""
        if index in self.partial or index in self.verifying:
            return
        self.set_urgent(LOST_PIECES, [*self._urgent_windows.get(LOST_PIECES, ()), index])
        self._unstarted += 1
        if self.selected is None or self.selected[index]:
            self._missing += 1
        self.endgame = False
        self._endgame_epoch += 1
        self.version += 1

    def piece_failed(self, index: int) -> None:
        """The piece failed its hash check: it is wanted again from scratch."""
        self.verifying.discard(index)
        self._unstarted += 1
        self.endgame = False
        self._endgame_epoch += 1
        self.version += 1
