"""Our requests to one peer: how many blocks to keep asked for, which, and what to do when they go astray.

:class:`RequestPipeline` keeps the blocks we asked one peer for (``outstanding``), the ones we gave up on but
may still be answered (``awaiting_answer``), the pieces it rejected lately and its allowed-fast pieces (BEP 6).
It tops the pipeline up from the piece manager in batches, shares the swarm's cap on requested blocks fairly
among the peers, cancels endgame duplicates and gives the requests of a peer that stopped delivering to others.

It sees its peer through :class:`RequestingPeer` (the BEP 3 states, the peer's pieces, the connection, its
rate) and the swarm through the peer's :class:`~torrentcore.peer.ports.TorrentPort`; the peer's message
loop calls it on UNCHOKE / CHOKE / REJECT and (per block, inline) in ``Peer._on_piece``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

from ..bitfield import Bitfield
from ..errors import ProtocolError
from ..hookspec import BLOCK_SIZE
from ..piecemanager import MIN_BATCH
from . import messages as msg

if TYPE_CHECKING:  # pragma: no cover
    from ..piece_layers import PieceLayers
    from ..ratemeter import RateMeter
    from .ports import TorrentPort

#: Pipeline depth bounds (blocks of 16 KiB). The depth follows the peer's rate.
MIN_DEPTH = 16
START_DEPTH = 64
MAX_DEPTH = 1000
#: The pipeline is topped up once 1/REFILL_SHARE of it is free: one picker scan and one send of requests per
#: batch. With 8 (batches of 125 requests at the full depth) the sends of requests were 35 % of the peer
#: greenlet's time on loopback (py-spy, benchmarks/readpath.py; each send wakes the seeder); with 4 half as
#: many, and 3/4 of the pipeline (12 MiB at the full depth) still queued at the seeder. Measured 4 against 8
#: (readpath.py, 8 alternating pairs, load 4-9): 1.30x the MB/s, 0.93x the event loop's CPU per GiB.
REFILL_SHARE = 4
#: FAIR_SHARE: when the peers' pipelines together would pass the piece manager's cap on requested blocks
#: (MAX_OUTSTANDING_BYTES), each peer's depth is cut to an equal share of the cap among the peers with
#: requests outstanding (RequestPipeline._fair_share). Without it three fast seeders (depth 1000 each, cap
#: 2048) all sat just under their refill mark, and every 32 blocks freed anywhere went out as a batch of 32:
#: 1,272 request sends and picker scans per 512 MiB against 135 with one seeder (27 blocks a batch against
#: 243); with it 281, and the event loop's CPU per 512 MiB with 3 seeders 1.70/1.97/1.80 -> 1.54/1.62/1.71 s
#: (paired runs, with ENDGAME_QUEUE).
#: In endgame a peer asks for duplicates of other peers' blocks only once it has at most this many blocks
#: outstanding itself: with three seeders each holding ~680 blocks when endgame began, every arriving block
#: asked for 4 more duplicates, 1,871 of them (5.7 % of a 512 MiB download received twice, 1,748 CANCELs).
#: 64 blocks (1 MiB) keep a fast peer busy while the others' queues drain; a peer that stalls still has all
#: its blocks asked of the others once they run low. Measured: 4-36 duplicates per 512 MiB instead of 1,871.
#: A peer whose whole pipeline is shorter (many peers share the cap: 50 seeders get about 40 blocks each) waits
#: until its refill mark instead (a quarter of its depth, see REFILL_SHARE): with 64 every one of 50 peers was
#: asking for duplicates from the first moment of endgame, and each ask scanned every requested block
#: (PieceManager._endgame_requests: 463 scans, a third of the event loop's bytecodes in a 128 MiB download
#: from 50 seeders, and 1,593 blocks received twice, 19 % of it).
ENDGAME_QUEUE = 64
#: _fair_share counts the other peers with requests outstanding again after this many seconds. Counting them
#: at every call was 2.1 % of the process with 50 peers (py-spy, benchmarks/many_peers.py): at the cap, every
#: few blocks that arrive anywhere let each peer's next block call fill(), which asks for its share first. Peers
#: come and go far more slowly, and a share a quarter of a second old still leaves the cap itself exact
#: (PieceManager.next_requests hands out nothing beyond it).
FAIR_SHARE_REFRESH = 0.25
#: Seconds of data to keep requested from a peer (libtorrent uses 3).
QUEUE_SECONDS = 2.0
#: The same before the peer's first one-second rate sample, from the rate since our first request.
EARLY_QUEUE_SECONDS = 0.1
#: The peer's request queue when it does not say (BEP 10 'reqq').
DEFAULT_REQQ = 250
#: Seconds without a block while requests are outstanding before they go elsewhere.
REQUEST_TIMEOUT = 20.0
#: Most allowed-fast pieces we accept from one peer, and most answers to cancelled requests we remember.
MAX_ALLOWED_FAST_IN = 100
MAX_AWAITING_ANSWER = 2048
#: Seconds a piece a peer rejected (while unchoking us) is not asked from that peer again (other peers
#: get it meanwhile; a peer that rejects everything is asked again at most this often).
REJECT_BACKOFF = 3.0


class Sender(Protocol):
    """The connection as the pipeline uses it: send bytes, and whether it is closed."""

    closed: bool

    def send(self, data: bytes) -> None: ...


class RequestingPeer(Protocol):
    """What the pipeline reads of its peer (a :class:`~torrentcore.peer.peer.Peer`)."""

    #: The peer's address (the piece manager's name for it).
    key: tuple[str, int]
    #: The peer's pieces (rebound when its BITFIELD / HAVE ALL arrives).
    has: Bitfield
    am_interested: bool
    peer_choking: bool
    conn: Sender
    down: RateMeter

    def set_interested(self, value: bool) -> None:
        """Tell the peer whether we want something it has."""


class RequestPipeline:
    """Our requests to one peer (see the module docstring)."""

    def __init__(self, peer: RequestingPeer, torrent: TorrentPort, log) -> None:
        self._peer = peer
        self._torrent = torrent
        self._log = log
        #: A v2 torrent's piece layers (None for v1; a port without the attribute is a v1 torrent's).
        self._layers: PieceLayers | None = getattr(torrent, "layers", None)
        #: (piece, offset) -> length of the blocks asked for and not yet received (never rebound).
        self.outstanding: dict[tuple[int, int], int] = {}
        #: Cancelled or released blocks: a PIECE or (BEP 6) a REJECT may still come for them (never rebound).
        self.awaiting_answer: dict[tuple[int, int], None] = {}
        #: piece -> until when not to ask this peer for it again (it rejected a request).
        self.rejected: dict[int, float] = {}
        #: Pieces we may request while the peer chokes us (BEP 6 allowed fast).
        self.allowed_fast_in: set[int] = set()
        #: The peer's request queue (BEP 10 'reqq', at most MAX_DEPTH).
        self.reqq = DEFAULT_REQQ
        #: When the last block came, as :meth:`check_timeouts` saw it (to the second), or when our first request of
        #: an empty pipeline went out. Peer._on_block only counts the block (``down.total``): no clock read per block.
        self.last_block = time.monotonic()
        self._seen_down = 0  # down.total at the last check_timeouts
        self._snubbed_at = -1  # down.total when the peer was found snubbed (-1: it is not)
        #: Set by fill(): Peer._on_piece calls it at or below this many outstanding blocks...
        self.refill_below = MAX_DEPTH
        #: ... and when the piece manager has at least this many blocks to hand out.
        self.refill_min_free = 1
        self._first_request = 0.0  # monotonic time of our first request (depth()'s early rate)
        self._others_requesting = 0  # other peers with requests outstanding, as _fair_share last counted them
        self._share_until = 0.0  # ...until then

    @property
    def snubbed(self) -> bool:
        """No block for REQUEST_TIMEOUT while requests were outstanding (cleared by the next block)."""
        return self._snubbed_at == self._peer.down.total

    def depth(self) -> int:
        """How many blocks to keep requested: enough for ``QUEUE_SECONDS`` at the peer's rate."""
        if self.snubbed:
            return 2
        down = self._peer.down
        if not down.measured:
            # No rate sample yet (the first second): estimate the rate from what came since our first
            # request, and keep a shorter horizon. Without it a fast peer was held to 16 blocks (256 KiB)
            # in flight for its whole first second; slow peers still get START_DEPTH / MIN_DEPTH.
            elapsed = max(time.monotonic() - self._first_request, 0.05) if self._first_request else 1.0
            by_rate = int(down.total / elapsed * EARLY_QUEUE_SECONDS / BLOCK_SIZE)
        else:
            by_rate = int(down.rate * QUEUE_SECONDS / BLOCK_SIZE)
        depth = max(START_DEPTH if down.total < 4 * 1024 * 1024 else MIN_DEPTH, by_rate)
        return min(depth, self.reqq, MAX_DEPTH)

    @property
    def may_request(self) -> bool:
        """The one rule for "may we send this peer requests now": we are interested, the connection is
        open, and the peer unchokes us or has allowed-fast pieces for us (BEP 6)."""
        peer = self._peer
        return peer.am_interested and not peer.conn.closed and (not peer.peer_choking or bool(self.allowed_fast_in))

    def fill(self) -> None:
        """Top up the request pipeline if we may (:attr:`may_request`) and there is room."""
        if not self.may_request:
            return
        peer = self._peer
        manager = self._torrent.manager
        outstanding = self.outstanding
        if manager.endgame and len(outstanding) > ENDGAME_QUEUE:
            return  # endgame: duplicates only for a peer about to run dry (see ENDGAME_QUEUE)
        depth = self.depth()
        if manager.requested_blocks - len(outstanding) + depth > manager.max_requested:
            depth = min(depth, self._fair_share(manager.max_requested))
        # Top up only once REFILL_SHARE of the pipeline is free (one scan of the picker per batch). _on_piece
        # skips the call above this mark; it is a hint only (a stale mark costs one batch's delay at most).
        batch = max(1, depth // REFILL_SHARE)
        if manager.endgame and len(outstanding) > batch:
            self.refill_below = batch  # endgame, a short pipeline: duplicates only at its refill mark
            return
        self.refill_below = depth - batch
        self.refill_min_free = min(batch, MIN_BATCH)
        room = depth - len(outstanding)
        if room <= 0 or (outstanding and room < batch):
            return
        if outstanding and manager.max_requested - manager.requested_blocks < min(room, MIN_BATCH):
            return  # all peers together have the most blocks requested: next_requests would hand out none
        has = self._requestable() if peer.peer_choking or self.rejected else peer.has
        if self._layers is not None and self._layers.blocking:
            has = self._layers.requestable(has)  # v2: only pieces whose file's layer is known can be checked
        blocks = manager.next_requests(peer.key, has, room)
        if blocks:
            for index, begin, length in blocks:
                outstanding[(index, begin)] = length
            if len(outstanding) == len(blocks):
                self.last_block = time.monotonic()  # the request clock starts now
                if not self._first_request:
                    self._first_request = self.last_block
            peer.conn.send(msg.requests(blocks))  # one buffer, one wake-up of the writer, one sendall
        elif not outstanding and not manager.interesting(peer.has):
            peer.set_interested(False)

    def _fair_share(self, cap: int) -> int:
        """This peer's part of the blocks all peers may have requested together (``cap``): an equal share among
        the peers with requests outstanding (see FAIR_SHARE), at least MIN_DEPTH. The peers are counted again
        at most every FAIR_SHARE_REFRESH seconds (see there)."""
        now = time.monotonic()
        if now >= self._share_until:
            others = 0
            me = self._peer
            for peer in self._torrent.peers.values():
                if peer.outstanding and peer is not me:
                    others += 1
            self._others_requesting = others
            self._share_until = now + FAIR_SHARE_REFRESH
        return max(cap // (self._others_requesting + 1), MIN_DEPTH)

    def drop(self, send_cancel: bool) -> None:
        """Give every outstanding request back to the piece manager (CANCELs sent if ``send_cancel``)."""
        if not self.outstanding:
            return
        blocks = [(i, b, n) for (i, b), n in self.outstanding.items()]
        self.outstanding.clear()
        self._torrent.manager.release(self._peer.key, blocks)
        self._expect_answers(blocks)
        conn = self._peer.conn
        if send_cancel and not conn.closed:
            conn.send(b"".join(msg.cancel(*b) for b in blocks))
        self._torrent.wake_requesters()

    def cancel_block(self, index: int, begin: int) -> None:
        """Another peer delivered this block first (endgame): cancel ours."""
        length = self.outstanding.pop((index, begin), None)
        if length is not None:
            self._expect_answers([(index, begin, length)])
            self._peer.conn.send(msg.cancel(index, begin, length))

    def check_timeouts(self, now: float) -> None:
        """Called every second: a peer that stopped delivering loses its requests to others."""
        down = self._peer.down.total
        if down != self._seen_down:  # blocks came since the last check
            self._seen_down = down
            self.last_block = now
        if self.outstanding and now - self.last_block > REQUEST_TIMEOUT:
            if not self.snubbed:
                self._log.info("peer snubbed us", outstanding=len(self.outstanding))
            self._snubbed_at = down
            self.drop(send_cancel=True)

    def allow_fast(self, index: int) -> bool:
        """BEP 6 ALLOWED FAST for ``index``: False if it was known already or the set is full."""
        if index in self.allowed_fast_in or len(self.allowed_fast_in) >= MAX_ALLOWED_FAST_IN:
            return False
        self.allowed_fast_in.add(index)
        if self._peer.peer_choking:
            self.fill()
        return True

    def on_reject(self, index: int, begin: int, length: int) -> None:
        """The peer will not send a block we asked for: it goes back to the pool for other peers."""
        torrent = self._torrent
        if index >= torrent.meta.num_pieces:
            raise ProtocolError(f"reject for piece {index} of {torrent.meta.num_pieces}")
        key = (index, begin)
        requested = self.outstanding.get(key)
        if requested is None or requested != length:
            if key in self.awaiting_answer:  # we cancelled or gave it up already
                del self.awaiting_answer[key]
                return
            raise ProtocolError(f"reject for a block we did not request (piece {index}, offset {begin})")
        del self.outstanding[key]
        torrent.manager.release(self._peer.key, [(index, begin, length)])
        if self._peer.peer_choking:
            self.allowed_fast_in.discard(index)  # it no longer serves that piece while choking us
        else:
            self.rejected[index] = time.monotonic() + REJECT_BACKOFF
        self.fill()
        torrent.wake_requesters()

    def on_choked(self, fast: bool) -> None:
        """CHOKE: without the fast extension every request is void; with it (``fast``) the peer rejects what
        it drops.

        Requests for allowed-fast pieces stay outstanding; the others are given to other peers at once
        (their rejects are then expected, and a block that arrives anyway is still taken).
        """
        if not fast:
            self.drop(send_cancel=False)
            return
        drop = [(i, b, n) for (i, b), n in self.outstanding.items() if i not in self.allowed_fast_in]
        if not drop:
            return
        for i, b, _n in drop:
            del self.outstanding[(i, b)]
        self._torrent.manager.release(self._peer.key, drop)
        self._expect_answers(drop)
        self._torrent.wake_requesters()

    def _expect_answers(self, blocks) -> None:
        """Remember blocks we gave up on: a fast peer still answers them (piece or reject, BEP 6), and any
        peer may have sent them already (a block arriving later is no protocol error, see ``Peer._on_piece``)."""
        waiting = self.awaiting_answer
        for index, begin, _length in blocks:
            waiting[(index, begin)] = None
        while len(waiting) > MAX_AWAITING_ANSWER:
            del waiting[next(iter(waiting))]

    def _requestable(self) -> Bitfield:
        """The peer's pieces we may ask it for now: allowed-fast ones while it chokes us, minus recent rejects."""
        now = time.monotonic()
        for index in [i for i, until in self.rejected.items() if until <= now]:
            del self.rejected[index]
        has = self._peer.has
        if self._peer.peer_choking:
            out = Bitfield(has.size)
            for index in self.allowed_fast_in:
                if has[index] and index not in self.rejected:
                    out.set(index)
            return out
        out = Bitfield(has.size, has.to_bytes())
        for index in self.rejected:
            out.clear(index)
        return out


__all__ = ["RequestPipeline", "RequestingPeer", "Sender", "MAX_DEPTH", "ENDGAME_QUEUE", "REQUEST_TIMEOUT"]
