"""The per-block counters of a download, and what is derived from them: a block is counted once
(``Peer.down.total`` and the torrent's stats); the request timeout (``last_block``), ``snubbed`` and the
one-second rates are derived from those counts, not kept per block. A rate limit's ``rate`` is a plain
attribute read per block, kept current by its buckets. Real Peer, RequestPipeline and PieceManager; counts only.
"""

from __future__ import annotations

import random
import struct

from torrentcore import bencode, metainfo
from torrentcore.bitfield import Bitfield
from torrentcore.hookspec import BLOCK_SIZE
from torrentcore.peer import peer as peer_mod
from torrentcore.peer import request_pipeline as rp
from torrentcore.piecemanager import PieceManager
from torrentcore.ratelimit import RateLimits, TokenBucket
from torrentcore.ratemeter import RateMeter
from torrentcore.stats import TransferStats
from torrentcore_plugins.rarest_first import RarestFirst


class _Conn:
    """What a Peer uses of its connection here: send() (requests counted), prefetch()/take() of zeroed blocks."""

    def __init__(self) -> None:
        self.address = ("127.0.0.1", 7001)
        self.closed = False
        self.encrypted = False
        self.producer = None
        self._zero = memoryview(bytes(BLOCK_SIZE))

    def send(self, data: bytes) -> None:
        pass

    def prefetch(self, n: int) -> None:
        pass

    def take(self, n: int) -> memoryview:
        return self._zero[:n]


class _Port:
    def __init__(self, meta) -> None:
        self.meta = meta
        self.have = Bitfield(meta.num_pieces)
        self.manager = PieceManager(meta, self.have, RarestFirst(meta.num_pieces, random.Random(1)))
        self.peers: dict = {}
        self.download_limit = RateLimits(TokenBucket(0), TokenBucket(0))
        self.stats = TransferStats()
        self.block_arrived = self.stats.block_arrived
        self.stats_wasted = self.stats.stats_wasted
        self.dht_port = None

    def verify_piece(self, piece) -> None:
        self.manager.recycle(piece)

    def wake_requesters(self) -> None:
        pass


def _peer():
    info = {b"name": b"t", b"piece length": 4 * BLOCK_SIZE, b"pieces": b"\x00" * 20 * 8, b"length": 32 * BLOCK_SIZE}
    port = _Port(metainfo.parse(bencode.encode({b"info": info})))
    p = peer_mod.Peer(port, _Conn(), b"-LT2110-" + bytes(12), bytes(8), incoming=False)
    port.peers[p.key] = p
    p.has = Bitfield.full(8)
    port.manager.add_peer_pieces(p.has)
    p.am_interested, p.peer_choking = True, False
    p.fill_requests()
    return port, p


def _deliver_one(p) -> None:
    (index, begin), length = next(iter(p.outstanding.items()))
    p._on_piece(index, begin, length)


def test_blocks_keep_the_request_timeout_away_and_the_next_block_clears_snubbed():
    port, p = _peer()
    pipe = p.requests
    assert p.outstanding and not p.snubbed
    t0 = pipe.last_block
    _deliver_one(p)
    assert p.down.total == BLOCK_SIZE and port.stats.downloaded == BLOCK_SIZE, "counted once each"
    # Long after the request went out, but a block came since the last check: not a timeout, the clock restarts.
    late = t0 + 10 * rp.REQUEST_TIMEOUT
    p.check_timeouts(late)
    assert p.outstanding and not p.snubbed and pipe.last_block == late
    # Nothing since: snubbed once REQUEST_TIMEOUT passed, its requests given back.
    p.check_timeouts(late + rp.REQUEST_TIMEOUT / 2)
    assert p.outstanding and not p.snubbed
    p.check_timeouts(late + rp.REQUEST_TIMEOUT + 1)
    assert p.snubbed and not p.outstanding and port.manager.requested_blocks == 0
    p.check_timeouts(late + rp.REQUEST_TIMEOUT + 2)
    assert p.snubbed, "still snubbed while no block comes"
    p.fill_requests()
    assert len(p.outstanding) == 2, "a snubbed peer gets 2 requests"
    _deliver_one(p)
    assert not p.snubbed, "the next block clears it at once (no check needed)"


def test_rates_are_what_the_counts_grew_by_between_ticks():
    meter, stats = RateMeter(window=2), TransferStats()
    for n in (1000, 3000):
        meter.add(n)
        stats.block_arrived(n)
        stats.block_uploaded(n // 2)
    meter.total += 4000  # the per-block path's inline form
    meter.tick(2.0)
    stats.tick(2.0)
    assert (meter.total, meter.rate) == (8000, 4000.0)
    assert (stats.downloaded, stats.rate_down, stats.rate_up) == (4000, 2000.0, 1000.0)
    meter.add(2000)
    meter.tick(1.0)
    stats.tick(1.0)
    assert meter.rate == (4000.0 + 2000.0) / 2, "the window averages the samples"
    assert (stats.rate_down, stats.rate_up) == (0.0, 0.0), "nothing since the last tick"


def test_a_chain_of_rate_limits_keeps_its_rate_current():
    own, shared = TokenBucket(0), TokenBucket(0)
    limits = RateLimits(own, shared)
    assert limits.rate == 0
    shared.set_rate(5000)
    assert limits.rate == 5000, "the session's limit applies"
    own.set_rate(2000)
    assert limits.rate == 2000, "the tightest"
    own.set_rate(0)
    assert limits.rate == 5000
    limits.buckets = (own,)  # the torrent stops honouring the session's limits
    assert limits.rate == 0
    shared.set_rate(100)
    assert limits.rate == 0, "a bucket no longer in the chain does not change it"
    limits.buckets = (own, shared)
    assert limits.rate == 100
    other = RateLimits(TokenBucket(300), shared)  # the session's bucket is shared by every torrent
    shared.set_rate(0)
    assert (limits.rate, other.rate) == (0, 300)


def test_the_torrent_counts_each_batch_of_blocks_once_and_before_a_piece_is_handed_over():
    """Peer.run adds the blocks of a take_blocks batch to the torrent's counters at once (not per block): the
    count is exact at each hand-over of a complete piece (where other greenlets may run), and when a bogus
    block ends the run in the middle of a batch."""
    import socket

    from torrentcore.peer.connection import Connection

    info = {b"name": b"t", b"piece length": 4 * BLOCK_SIZE, b"pieces": b"\x00" * 20 * 8, b"length": 32 * BLOCK_SIZE}
    port = _Port(metainfo.parse(bencode.encode({b"info": info})))
    seen: list[tuple[int, int]] = []

    def verify_piece(piece) -> None:
        seen.append((port.stats.downloaded, p.down.total))
        port.manager.recycle(piece)

    port.verify_piece = verify_piece
    port.have_count = 0
    ours, theirs = socket.socketpair()
    try:
        conn = Connection(ours, ("127.0.0.1", 7001))
        p = peer_mod.Peer(port, conn, b"-LT2110-" + bytes(12), bytes(8), incoming=False)
        port.peers[p.key] = p
        p.has = Bitfield.full(8)
        port.manager.add_peer_pieces(p.has)
        p.am_interested, p.peer_choking = True, False
        p.fill_requests()
        asked = sorted(p.outstanding)[:22]  # pieces 0-4 and two blocks of piece 5: two batches of 16 and 6
        stream = b"".join(struct.pack(">IBII", 9 + BLOCK_SIZE, 7, i, b) + bytes(BLOCK_SIZE) for i, b in asked)
        stream += struct.pack(">IBII", 9 + BLOCK_SIZE, 7, 7, 100) + bytes(BLOCK_SIZE)  # never requested
        conn.feed(stream)
        reason = p.run()
    finally:
        conn.close()  # (its grown read buffer leaves the process-wide count: tests/test_framing.py checks it)
        theirs.close()
        ours.close()
    assert reason.startswith("protocol error: block we did not request"), reason
    assert p.down.total == port.stats.downloaded == 22 * BLOCK_SIZE, "every stored block counted, once"
    assert seen == [(k * 4 * BLOCK_SIZE, k * 4 * BLOCK_SIZE) for k in range(1, 6)], "exact at each hand-over"
