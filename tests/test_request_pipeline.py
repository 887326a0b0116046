"""Our requests to a peer (torrentcore.peer.request_pipeline) and the picker's block runs they are made of.

A batch of requests leaves as one buffer through one ``sendall`` of a real :class:`Connection` (a socket
stand-in counts the calls); the piece manager hands out runs of blocks with the same result as block by block
(short last blocks, released blocks in the middle of a piece). Counts only, no timing.
"""

from __future__ import annotations

import random
import struct

import gevent
from test_request_share import Port

from torrentcore import bencode, metainfo
from torrentcore.bitfield import Bitfield
from torrentcore.hookspec import BLOCK_SIZE
from torrentcore.peer import messages as msg
from torrentcore.peer.connection import Connection
from torrentcore.peer.peer import Peer
from torrentcore.piecemanager import FREE, REQUESTED, PieceManager
from torrentcore_plugins.rarest_first import RarestFirst


class _Socket:
    """What a Connection's writer uses of a socket; every ``sendall`` is kept."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def settimeout(self, seconds) -> None:
        pass

    def setsockopt(self, *args) -> None:
        pass

    def sendall(self, data) -> None:
        self.sent.append(bytes(data))

    def shutdown(self, how) -> None:
        pass

    def close(self) -> None:
        pass


def _meta(pieces: int, piece_length: int, total: int | None = None):
    total = pieces * piece_length if total is None else total
    info = {b"name": b"t", b"piece length": piece_length, b"pieces": b"\x00" * 20 * pieces, b"length": total}
    return metainfo.parse(bencode.encode({b"info": info}))


def _requests_in(data: bytes) -> list[tuple[int, int, int]]:
    out, k = [], 0
    while k < len(data):
        length, kind = struct.unpack_from(">IB", data, k)
        assert kind == msg.REQUEST and length == 13
        out.append(struct.unpack_from(">III", data, k + 5))
        k += 4 + length
    return out


def test_a_batch_of_requests_leaves_in_one_sendall():
    meta = _meta(64, 16 * BLOCK_SIZE)
    port = Port(meta)
    sock = _Socket()
    conn = Connection(sock, ("127.0.0.1", 7001))  # type: ignore[arg-type]
    peer = Peer(port, conn, b"-LT2110-" + bytes(12), bytes(8), incoming=False)
    port.peers[peer.key] = peer
    peer.has = Bitfield.full(meta.num_pieces)
    port.manager.add_peer_pieces(peer.has)
    peer.am_interested, peer.peer_choking = True, False
    conn.start_writer()
    try:
        peer.fill_requests()
        asked = len(peer.outstanding)
        assert asked >= 32, asked  # the first batch (START_DEPTH blocks)
        for _ in range(100):  # bounded: the writer runs at the next switch
            if sock.sent:
                break
            gevent.sleep(0)
        gevent.sleep(0)
        assert len(sock.sent) == 1, [len(s) for s in sock.sent]
        sent = _requests_in(sock.sent[0])
        assert sent == [(i, b, n) for (i, b), n in peer.outstanding.items()]
    finally:
        conn.close("done")


def test_requests_frames_like_request():
    blocks = [(7, k * BLOCK_SIZE, BLOCK_SIZE) for k in range(5)] + [(2**32 - 1, 0, 1)]
    assert msg.requests(blocks) == b"".join(msg.request(*b) for b in blocks)
    assert msg.requests([]) == b""


def test_runs_of_blocks_match_block_by_block_with_short_last_blocks_and_released_ones():
    piece = 5 * BLOCK_SIZE
    meta = _meta(4, piece, 3 * piece + 2 * BLOCK_SIZE + 100)  # the last piece: 2 blocks and 100 bytes
    pm = PieceManager(meta, Bitfield(meta.num_pieces), RarestFirst(meta.num_pieces, random.Random(3)))
    full = Bitfield.full(meta.num_pieces)
    pm.add_peer_pieces(full)
    got = []
    for _ in range(50):  # bounded: 18 blocks, in calls of 3 (runs cut in the middle of pieces)
        blocks = pm._next_requests("a", full, 3)
        if not blocks:
            break
        assert len(blocks) <= 3
        got += blocks
    expected = set()
    for i in range(meta.num_pieces):
        size = meta.piece_size(i)
        expected |= {(i, b, min(BLOCK_SIZE, size - b)) for b in range(0, size, BLOCK_SIZE)}
    assert len(got) == len(expected) and set(got) == expected
    for i in range(meta.num_pieces):
        p = pm.partial[i]
        assert p.free == 0 and set(p.state) == {REQUESTED} and all(p.requesters[b] == ["a"] for b in p.requesters)
    # A block given back in the middle of a piece is handed out again (the block-by-block path) before any
    # endgame duplicate (everything else is requested: the rest of the answer are duplicates of a's blocks).
    index = next(i for i in range(meta.num_pieces) if meta.piece_size(i) == piece)
    pm.release("a", [(index, 2 * BLOCK_SIZE, BLOCK_SIZE)])
    assert pm.partial[index].state[2] == FREE
    again = pm._next_requests("b", full, 10)
    assert again[0] == (index, 2 * BLOCK_SIZE, BLOCK_SIZE) and pm.partial[index].requesters[2] == ["b"]
    assert all(pm.partial[i].requesters[b // BLOCK_SIZE] == ["a", "b"] for i, b, _n in again[1:])


def test_a_run_of_blocks_shares_one_requester_list_that_is_never_changed_in_place():
    """A run of free blocks is requested with one requester list for all its blocks; an endgame duplicate, a
    release and a received block each change only their own block's requesters (the count stays exact)."""
    meta = _meta(2, 8 * BLOCK_SIZE)
    pm = PieceManager(meta, Bitfield(meta.num_pieces), RarestFirst(meta.num_pieces, random.Random(3)))
    full = Bitfield.full(meta.num_pieces)
    pm.add_peer_pieces(full)
    blocks = pm.next_requests("a", full, 16)
    assert len(blocks) == 16 and pm.requested_blocks == 16
    piece = pm.partial[blocks[0][0]]
    assert len({id(who) for who in piece.requesters.values()}) == 1, "one list for the run"
    pm.endgame = True  # every block is requested: b gets duplicates (at most ENDGAME_BLOCKS_PER_CALL)
    dup = pm.next_requests("b", full, 1)
    assert len(dup) == 1
    index, begin, _n = dup[0]
    other = pm.partial[index]
    assert other.requesters[begin // BLOCK_SIZE] == ["a", "b"]
    assert all(who == ["a"] for b, who in other.requesters.items() if b != begin // BLOCK_SIZE)
    # a gives one block of the run back: only that one is free again
    pm.release("a", [(piece.index, 3 * BLOCK_SIZE, BLOCK_SIZE)])
    assert piece.state[3] == FREE and 3 not in piece.requesters
    assert all(who == ["a"] or b == begin // BLOCK_SIZE for b, who in piece.requesters.items())
    # b gives its duplicate back: a still has it
    pm.release("b", [dup[0]])
    assert other.requesters[begin // BLOCK_SIZE] == ["a"] and other.state[begin // BLOCK_SIZE] == REQUESTED
    assert pm.requested_blocks == 15
    assert pm.store_block("a", piece.index, 0, bytes(BLOCK_SIZE)) == ((), None)
    assert 0 not in piece.requesters and all(who == ["a"] for who in piece.requesters.values())
    assert pm.requested_blocks == 14
