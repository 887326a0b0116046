"""Block bookkeeping: which blocks are free, requested, received; availability; endgame.

The piece manager is the :class:`~torrentcore.hookspec.SwarmView` handed to
the piece strategy. It asks the strategy for an order of pieces and turns it
into block requests, tracks who asked for what (several peers per block in
endgame), assembles each piece in memory, and hands complete pieces over for
verification. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence

from .bitfield import Bitfield
from .hookspec import BLOCK_SIZE, PieceStrategy
from .metainfo import Metainfo

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
#: Piece buffers kept for reuse (allocating and faulting in fresh memory per piece is measurable).
SPARE_BUFFERS = 16

Block = tuple[int, int, int]  # (piece index, begin, length)


class Piece:
    """A piece being downloaded: its buffer and the state of each block."""

    __slots__ = ("index", "size", "buffer", "view", "state", "requesters", "free", "received", "senders",
                 "first_free")

    def __init__(self, index: int, size: int, buffer: bytearray | None = None) -> None:
        self.index = index
        self.size = size
        self.buffer = buffer if buffer is not None else bytearray(size)
        #: A memoryview of ``buffer`` made by the first block (see PieceManager.block_buffer); released with it.
        self.view: memoryview | None = None
        nblocks = (size + BLOCK_SIZE - 1) // BLOCK_SIZE
        self.state = bytearray(nblocks)
        self.requesters: dict[int, list[Hashable]] = {}
        self.free = nblocks
        self.received = 0
        self.first_free = 0
        # block number -> peer that delivered it (for banning liars)
        self.senders: dict[int, Hashable] = {}

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


class PieceManager:
    """Request planning for one torrent (implements :class:`~torrentcore.hookspec.SwarmView`)."""

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

    # --- SwarmView ---------------------------------------------------------------------------

    def wanted(self, index: int) -> bool:
        """Selected, not verified and not waiting for its hash check."""
        sel = self.selected
        return not self.have[index] and index not in self.verifying and (sel is None or sel[index])

    @property
    def complete(self) -> bool:
        """Every wanted piece is verified (the whole torrent, or the pieces of the selected files)."""
        return self._missing <= 0

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
        self.partial[index] = piece
        self._unstarted -= 1
        return piece

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

    def _next_requests(self, peer: Hashable, has: Bitfield, count: int) -> list[Block]:
        out: list[Block] = []
        if count <= 0:
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
            state = piece.state
            b = piece.first_free
            nblocks = len(state)
            size = piece.size
            requesters = piece.requesters
            while b < nblocks and len(out) < count:
                if state[b] == FREE:
                    state[b] = REQUESTED
                    requesters[b] = [peer]
                    piece.free -= 1
                    begin = b * BLOCK_SIZE
                    out.append((index, begin, min(BLOCK_SIZE, size - begin)))
                b += 1
            piece.first_free = b
            if len(out) >= count:
                return out
        if self._unstarted == 0 and not any(p.free for p in self.partial.values()):
            self.endgame = True
        if self.endgame and len(out) < count and self._endgame_dry.get(peer) != self._endgame_epoch:
            want = min(count - len(out), ENDGAME_BLOCKS_PER_CALL)
            extra = self._endgame_requests(peer, has, want)
            if len(extra) < want:
                self._endgame_dry[peer] = self._endgame_epoch
            out.extend(extra)
        return out

    def _endgame_requests(self, peer: Hashable, has: Bitfield, count: int) -> list[Block]:
        out: list[Block] = []
        for piece in self.partial.values():
            if not has[piece.index]:
                continue
            for b, who in piece.requesters.items():
                if piece.state[b] == REQUESTED and peer not in who and len(who) < ENDGAME_DUPLICATES:
                    who.append(peer)
                    out.append((piece.index, b * BLOCK_SIZE, piece.block_length(b)))
                    if len(out) >= count:
                        return out
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
                who.remove(peer)
                self.requested_blocks -= 1
                self._endgame_epoch += 1
                if not who:
                    del piece.requesters[b]
                    if piece.state[b] == REQUESTED:
                        piece.state[b] = FREE
                        piece.free += 1
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

    def block_received(self, peer: Hashable, index: int, begin: int) -> tuple[list[Hashable], Piece | None]:
        """Record a block stored via :meth:`block_buffer`.

        Returns the other peers that were also asked for it (send them CANCEL),
        and the piece if it is now complete (it moves to verification).
        """
        piece = self.partial.get(index)
        b = begin // BLOCK_SIZE
        if piece is None or piece.state[b] == RECEIVED:
            return [], None  # completed meanwhile by another peer: a duplicate
        if piece.state[b] == FREE:
            piece.free -= 1
        piece.state[b] = RECEIVED
        piece.received += 1
        piece.senders[b] = peer
        asked = piece.requesters.pop(b, ())
        self.requested_blocks -= len(asked)
        if len(asked) == 1 and asked[0] == peer:
            others = []  # the usual case: asked from this peer only (no list comprehension per block)
        else:
            others = [p for p in asked if p != peer]
        if piece.received == len(piece.state):
            del self.partial[index]
            self.verifying.add(index)
            return others, piece
        return others, None

    def recycle(self, piece: Piece) -> None:
        """The piece's buffer is no longer used (stored, or discarded): keep it for a later piece.

        Every byte of a reused buffer is overwritten by received blocks before it is hashed.
        """
        piece.view = None
        if len(piece.buffer) == self.torrent.piece_length and len(self._spare) < SPARE_BUFFERS:
            self._spare.append(piece.buffer)
        piece.buffer = bytearray()

    def piece_verified(self, index: int) -> None:
        """The piece passed its hash check and is stored."""
        self.verifying.discard(index)
        if self.have.set(index) and (self.selected is None or self.selected[index]):
            self._missing -= 1

    def piece_failed(self, index: int) -> None:
        """The piece failed its hash check: it is wanted again from scratch."""
        self.verifying.discard(index)
        self._unstarted += 1
        self.endgame = False
        self._endgame_epoch += 1
        self.version += 1
