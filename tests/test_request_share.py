"""Requests of several fast peers under the piece manager's cap on requested blocks (see request_pipeline.py
FAIR_SHARE and ENDGAME_QUEUE): batches stay large, endgame duplicates few, and the download still completes.

Real :class:`~torrentcore.peer.peer.Peer` and :class:`~torrentcore.piecemanager.PieceManager`; the connection
is a stand-in that records what is sent and hands out zeroed blocks (no socket: the seeders' side is
``benchmarks/swarm.py``'s, with libtorrent). Counts only, no timing.
"""

from __future__ import annotations

import random
import struct

from torrentcore import bencode, metainfo
from torrentcore.bitfield import Bitfield
from torrentcore.hookspec import BLOCK_SIZE
from torrentcore.peer import messages as msg
from torrentcore.peer import peer as peer_mod
from torrentcore.peer import request_pipeline as rp
from torrentcore.piecemanager import PieceManager
from torrentcore_plugins.rarest_first import RarestFirst

PIECE = 16 * BLOCK_SIZE
PIECES = 512  # 8,192 blocks: four times the cap of 2,048 requested blocks


class Conn:
    """What a Peer uses of its connection: send() (requests and cancels counted), prefetch()/take()."""

    def __init__(self, port: int) -> None:
        self.address = ("127.0.0.1", port)
        self.closed = False
        self.encrypted = False
        self.producer = None
        self.request_batches: list[int] = []
        self.cancels = 0
        self._zero = memoryview(bytes(BLOCK_SIZE))

    def send(self, data: bytes) -> None:
        requests = 0
        k = 0
        while k < len(data):
            length, kind = struct.unpack_from(">IB", data, k)
            k += 4 + length
            if kind == msg.REQUEST:
                requests += 1
            elif kind == msg.CANCEL:
                self.cancels += 1
        if requests:
            self.request_batches.append(requests)

    def prefetch(self, n: int) -> None:
        pass

    def take(self, n: int) -> memoryview:
        return self._zero[:n]


class Limit:
    rate = 0


class Port:
    """The torrent as its peers see it (torrentcore.peer.ports.TorrentPort), reduced to what a download uses."""

    def __init__(self, meta) -> None:
        self.meta = meta
        self.have = Bitfield(meta.num_pieces)
        self.manager = PieceManager(meta, self.have, RarestFirst(meta.num_pieces, random.Random(1)))
        self.peers: dict = {}
        self.download_limit = Limit()
        self.wasted = 0
        self.dht_port = None

    def block_arrived(self, n: int) -> None:
        pass

    def stats_wasted(self, n: int) -> None:
        self.wasted += n

    def verify_piece(self, piece) -> None:  # the hash check is not what is tested here
        self.manager.recycle(piece)
        self.manager.piece_verified(piece.index)
        self.have.set(piece.index)

    def wake_requesters(self) -> None:
        pass


def three_peers(monkeypatch, count: int = 3, depth: int = rp.MAX_DEPTH):
    """A torrent of PIECES pieces and ``count`` fast peers with every piece, each with its first requests out
    (``depth`` blocks at most: the pipeline of a peer whose rate is ``depth / QUEUE_SECONDS`` blocks a second)."""
    monkeypatch.setattr(rp.RequestPipeline, "depth", lambda self: depth)
    info = {b"name": b"t", b"piece length": PIECE, b"pieces": b"\x00" * 20 * PIECES, b"length": PIECE * PIECES}
    meta = metainfo.parse(bencode.encode({b"info": info}))
    port = Port(meta)
    peers = []
    for k in range(count):
        p = peer_mod.Peer(port, Conn(7000 + k), b"-LT2110-" + bytes(12), bytes(8), incoming=False)
        port.peers[p.key] = p
        peers.append(p)
        p.has = Bitfield.full(meta.num_pieces)
        port.manager.add_peer_pieces(p.has)
        p.am_interested, p.peer_choking = True, False
    for p in peers:
        p.fill_requests()
    return port, peers


def serve(peers, rounds: int, wake_every: int = 0) -> None:
    """The peers answer in turn, one block each, oldest request first, until none has requests left; with
    ``wake_every``, every that many turns the idle peers are told to request (the engine's periodic
    ``Swarm.wake_requesters``: peers with fewer than 4 blocks outstanding)."""
    for step in range(rounds):
        if wake_every and step % wake_every == 0:
            for p in peers:
                if p.may_request and len(p.outstanding) < 4:
                    p.fill_requests()
        busy = [p for p in peers if p.outstanding]
        if not busy:
            return
        for p in busy:
            if p.outstanding:  # (not if another peer's block just cancelled its last)
                (index, begin), length = next(iter(p.outstanding.items()))
                p._on_piece(index, begin, length)


def test_three_fast_peers_keep_large_request_batches_and_few_endgame_duplicates(monkeypatch):
    port, peers = three_peers(monkeypatch)
    # The seeders answer in turn, one block each, oldest request first (as equally fast peers on loopback).
    serve(peers, 20 * PIECES * 16)
    assert port.have.complete and port.manager.requested_blocks == 0, "the download completes"
    total = PIECES * PIECE // BLOCK_SIZE
    requested = sum(sum(p.conn.request_batches) for p in peers)
    sends = sum(len(p.conn.request_batches) for p in peers)
    duplicates = requested - total
    # Before the fair share, every 32 blocks freed anywhere went out as a batch of 32 (here 659 sends of 15
    # blocks on average, endgame's included); with it 118 sends (an equal share of 682 blocks, refilled by quarters).
    assert requested / sends >= 50, f"{sends} request sends for {requested} blocks"
    # Before ENDGAME_QUEUE each block arriving in endgame asked for 4 duplicates: here 1,858; with it 225.
    assert duplicates <= 6 * rp.ENDGAME_QUEUE, f"{duplicates} endgame duplicates"


def test_fifty_fast_peers_with_short_pipelines_ask_for_few_duplicates_and_scan_little(monkeypatch):
    """50 peers, each with a pipeline shorter than ENDGAME_QUEUE (as 50 seeders sharing the cap get, about 40
    blocks each): in endgame a peer asks for duplicates only at its refill mark, and a piece whose requested
    blocks are all asked of two peers is not scanned again in the epoch."""
    from torrentcore import piecemanager

    port, peers = three_peers(monkeypatch, count=50, depth=40)
    assert all(len(p.outstanding) == 40 for p in peers)
    scanned = [0]
    real = piecemanager.PieceManager._endgame_requests

    def counting(self, peer, has, count):
        scanned[0] += sum(len(p.requesters) for p in self.partial.values() if p.saturated != self._endgame_epoch)
        return real(self, peer, has, count)

    monkeypatch.setattr(piecemanager.PieceManager, "_endgame_requests", counting)
    serve(peers, 20 * PIECES * 16)
    assert port.have.complete and port.manager.requested_blocks == 0, "the download completes"
    duplicates = sum(sum(p.conn.request_batches) for p in peers) - PIECES * PIECE // BLOCK_SIZE
    # With ENDGAME_QUEUE for every pipeline and every requested block scanned at each call: 1,578 duplicates and
    # 515,800 blocks scanned in 444 calls; at the refill mark 582 and 86,747 in 195 calls; with saturated pieces
    # skipped too, 582 and 51,617.
    assert duplicates <= 800, f"{duplicates} endgame duplicates"
    assert scanned[0] <= 65_000, f"{scanned[0]} requested blocks scanned for duplicates"


def test_endgame_finishes_when_a_peer_stalls_with_its_share_requested(monkeypatch):
    """One of the three never answers: once the others run low in endgame, its blocks are asked of them."""
    port, peers = three_peers(monkeypatch)
    serve(peers, 1000)  # a third of the download from all three: each has its share requested
    stalled = peers[2]
    assert not port.have.complete and len(stalled.outstanding) > 4 * rp.ENDGAME_QUEUE
    serve(peers[:2], 20 * PIECES * 16)
    assert port.have.complete, "the blocks of the stalled peer came from the others"
    assert port.manager.requested_blocks == len(stalled.outstanding)  # (its own requests until it times out)


def test_the_fair_share_counts_the_requesting_peers_again_only_after_the_refresh(monkeypatch):
    """FAIR_SHARE_REFRESH: the share is the cap divided among the peers with requests out as last counted; a peer
    that stopped requesting changes it once the refresh time has passed, not before."""
    import types

    port, peers = three_peers(monkeypatch)
    assert all(p.outstanding for p in peers)
    clock = [1000.0]
    monkeypatch.setattr(rp, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    pipe = peers[0].requests
    pipe._share_until = 0.0  # (whatever an earlier fill counted)
    cap = port.manager.max_requested
    assert pipe._fair_share(cap) == cap // 3
    peers[1].requests.drop(send_cancel=False)
    clock[0] += rp.FAIR_SHARE_REFRESH / 2
    assert pipe._fair_share(cap) == cap // 3, "counted a moment ago"
    clock[0] += rp.FAIR_SHARE_REFRESH
    assert pipe._fair_share(cap) == cap // 2
