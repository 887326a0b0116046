"""The rules of the per-block receive path, all in one stream of consecutive blocks (what a batched fast path,
such as storing a run of blocks of one piece in one call, must keep): a block never requested ends the
connection, a duplicate is wasted and not stored, endgame peers asked for a block get a CANCEL, a complete piece
is handed over once with its bytes, its senders and the counts exact. Real Connection (a socket pair, the stream
fed in), Peer, RequestPipeline and PieceManager.

A run path was built and measured (session 5, branch ``s5-blockrun-runs``: ``Connection.take_blocks``'
``on_run``, ``Peer._on_run``, ``PieceManager.store_run``; this test ran against it with runs and block by
block) and not kept: see docs/performance.md.
"""

from __future__ import annotations

import socket
import struct

from test_receive_counters import _Port

from torrentcore import bencode, metainfo
from torrentcore.bitfield import Bitfield
from torrentcore.hookspec import BLOCK_SIZE
from torrentcore.peer import messages as msg
from torrentcore.peer import peer as peer_mod
from torrentcore.peer.connection import Connection

BLOCKS = 4  # per piece
PIECES = 4


def _block(index: int, begin: int) -> bytes:
    return bytes([index * 16 + begin // BLOCK_SIZE + 1]) * BLOCK_SIZE


def _piece_msg(index: int, begin: int, data: bytes | None = None) -> bytes:
    data = _block(index, begin) if data is None else data
    return struct.pack(">IBII", 9 + len(data), msg.PIECE, index, begin) + data


class _Sent:
    """A second peer's connection: what is sent to it is kept (its CANCELs)."""

    def __init__(self) -> None:
        self.address = ("127.0.0.1", 7002)
        self.closed = False
        self.encrypted = False
        self.producer = None
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(bytes(data))


def _cancels(sent: list[bytes]) -> list[tuple[int, int]]:
    data, out, pos = b"".join(sent), [], 0
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        if length and data[pos + 4] == msg.CANCEL:
            out.append(struct.unpack_from(">II", data, pos + 5))
        pos += 4 + length
    return sorted(out)


def test_consecutive_blocks_keep_every_rule_of_the_per_block_path(monkeypatch):
    """Four pieces of four blocks, all asked of peer A; B asked (endgame) for duplicates of one piece's blocks.
    A sends, in one batch: the endgame piece (its blocks asked of B too: B gets a CANCEL for each), a normal
    piece, a piece one of whose blocks B delivered first (a duplicate in the middle: wasted, not stored), and the
    last piece followed by a block past its end (the piece completes in the middle of the batch, then the block
    never asked for ends the connection). Each piece is handed over once, with A's bytes, the counts exact at
    each hand-over."""
    monkeypatch.setattr(peer_mod, "READ_YIELD_BYTES", 1 << 20)  # all 17 blocks in one take_blocks batch
    info = {b"name": b"t", b"piece length": BLOCKS * BLOCK_SIZE, b"pieces": b"\x00" * 20 * PIECES,
            b"length": PIECES * BLOCKS * BLOCK_SIZE}
    port = _Port(metainfo.parse(bencode.encode({b"info": info})))
    manager = port.manager
    handed: list[tuple[int, bytes, int, int, dict]] = []

    def verify_piece(piece) -> None:
        handed.append((piece.index, bytes(piece.buffer), port.stats.downloaded, a.down.total, dict(piece.senders)))
        manager.recycle(piece)

    port.verify_piece = verify_piece
    ours, theirs = socket.socketpair()
    try:
        a = peer_mod.Peer(port, Connection(ours, ("127.0.0.1", 7001)), b"-LT2110-" + bytes(12), bytes(8),
                          incoming=False)
        b_conn = _Sent()
        b = peer_mod.Peer(port, b_conn, b"-LT2110-" + bytes(11) + b"1", bytes(8), incoming=False)
        for p in (a, b):
            port.peers[p.key] = p
            p.has = Bitfield.full(PIECES)
            manager.add_peer_pieces(p.has)
            p.am_interested, p.peer_choking = True, False
        a.fill_requests()
        assert len(a.outstanding) == PIECES * BLOCKS
        b.fill_requests()  # endgame: duplicates of the blocks of the first piece A was asked for
        dup_pieces = {i for i, _ in b.outstanding}
        assert manager.endgame and len(b.outstanding) == 4 and len(dup_pieces) == 1, b.outstanding
        (dup,) = dup_pieces
        order = [dup] + [i for i in sorted(manager.partial) if i != dup]
        _normal, early, last = order[1:]
        # B delivers block 1 of piece `early` first (as B's own path would: stored, then A's request cancelled).
        assert manager.store_block(b.key, early, BLOCK_SIZE, _block(early, BLOCK_SIZE)) == ([a.key], None)
        a.cancel_block(early, BLOCK_SIZE)
        stream = b"".join(_piece_msg(i, k * BLOCK_SIZE) for i in order for k in range(BLOCKS))
        stream += _piece_msg(last, BLOCKS * BLOCK_SIZE)  # past the piece's end: never requested
        a.conn.feed(stream)
        reason = a.run()
    finally:
        theirs.close()
        ours.close()
    assert reason.startswith("protocol error: block we did not request"), reason
    assert [h[0] for h in handed] == order, "every piece handed over once, when its last block came"
    for index, data, downloaded, down, senders in handed:
        assert data == b"".join(_block(index, k * BLOCK_SIZE) for k in range(BLOCKS)), index
        assert downloaded == down, "the torrent's count is exact at each hand-over"
        assert senders == {k: (b.key if (index, k) == (early, 1) else a.key) for k in range(BLOCKS)}
    stored = PIECES * BLOCKS - 1
    assert a.down.total == port.stats.downloaded == stored * BLOCK_SIZE
    assert port.stats.wasted == BLOCK_SIZE, "the duplicate is wasted, once"
    assert _cancels(b_conn.sent) == sorted((dup, k * BLOCK_SIZE) for k in range(BLOCKS)), "endgame cancels"
    assert not a.outstanding and not b.outstanding and manager.requested_blocks == 0
    assert not manager.partial and manager.verifying == set(order)
