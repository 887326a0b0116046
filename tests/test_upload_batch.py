"""The upload queue's batches (torrentcore/peer/upload.py): runs of consecutive blocks read at once and sent
as one buffer of PIECE messages, parsed back by the real ``Connection``; the rate limit (one block at a time),
choking (BEP 6 rejects), a failed read, and byte-exact data. End-to-end with real leechers:
tests/test_seeding.py (libtorrent, aria2c; plaintext), tests/test_encryption_interop.py (RC4),
tests/test_utp_interop.py (uTP).
"""

from __future__ import annotations

import os
import socket
import sys
from collections import OrderedDict

import gevent

from torrentcore.peer import messages as msg
from torrentcore.peer import peer as peer_mod
from torrentcore.peer.connection import Connection
from torrentcore.peer.upload import UPLOAD_BATCH_BYTES, piece_messages, take_run

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "fuzz"))
import harness  # noqa: E402

B = 16384


def _queue(*blocks) -> OrderedDict:
    return OrderedDict.fromkeys(blocks)


def test_take_run_takes_consecutive_blocks_of_one_piece_within_the_budget():
    q = _queue((3, 0, B), (3, B, B), (3, 2 * B, B), (3, 4 * B, B), (5, 5 * B, B), (5, 6 * B, 100))
    assert take_run(q, 2 * B) == (3, 0, [B, B])  # the budget stops it
    assert take_run(q, 10 * B) == (3, 2 * B, [B])  # a gap (3 * B missing) stops it
    assert take_run(q, 10 * B) == (3, 4 * B, [B])  # another piece stops it
    assert take_run(q, 0) == (5, 5 * B, [B])  # the first block is always taken
    assert take_run(q, 10 * B) == (5, 6 * B, [100]) and not q


def _read_messages(data: bytes) -> list[tuple[int, int, bytes]]:
    """Parse ``data`` with the real Connection: (index, begin, payload) of every PIECE, in order."""
    a, b = socket.socketpair()
    out = []

    def send() -> None:
        a.sendall(data)
        a.shutdown(socket.SHUT_WR)

    sender = gevent.spawn(send)  # more than a socket buffer: the reader must run meanwhile
    try:
        conn = Connection(b, ("127.0.0.1", 1))
        with gevent.Timeout(10):
            while True:
                try:
                    msg_id, payload = conn.read_message()
                except ConnectionError:
                    return out
                assert msg_id == msg.PIECE, msg_id
                index, begin, length = payload
                buf = bytearray(length)
                conn.read_into(memoryview(buf))
                out.append((index, begin, bytes(buf)))
    finally:
        sender.kill(block=True, timeout=5)
        a.close()
        b.close()


def test_piece_messages_frame_each_block_of_a_run():
    data = os.urandom(3 * B + 5)
    got = _read_messages(piece_messages(7, 2 * B, [B, B, B + 5], data))
    assert got == [(7, 2 * B, data[:B]), (7, 3 * B, data[B : 2 * B]), (7, 4 * B, data[2 * B :])]
    assert _read_messages(piece_messages(1, 0, [9], b"123456789")) == [(1, 0, b"123456789")]


class _Limit:
    """A rate limit that records what it was asked for (and never sleeps)."""

    rate = 1e6

    def __init__(self) -> None:
        self.asked: list[int] = []

    def consume(self, n: int) -> None:
        self.asked.append(n)


def _peer(port, fast: bool = True) -> peer_mod.Peer:
    a, b = socket.socketpair()
    a.close()
    reserved = msg.reserved_bytes(msg.RESERVED_EXTENSIONS, *([msg.RESERVED_FAST] if fast else []))
    return peer_mod.Peer(port, Connection(b, ("127.0.0.9", 7)), b"-UP0001-" + b"x" * 12, reserved, incoming=True)


def test_produce_batches_runs_and_honours_the_limit_choking_and_failed_reads():
    n, plen = 6, 8 * B
    payload = os.urandom(n * plen)
    port = harness.WirePort(range(n - 1), payload=payload, piece_length=plen)  # the last piece is not ours
    peer = _peer(port)
    peer.am_choking = False
    blocks = [(i, b, B) for i in range(n) for b in range(0, plen, B)]
    peer.serving.uploads = _queue(*blocks)
    sent: list[tuple[int, int, bytes]] = []
    calls = 0
    while peer.serving.uploads and calls < 100:
        out = peer.serving.produce()
        calls += 1
        if out:
            assert len(out) <= UPLOAD_BATCH_BYTES + 2 * B  # one batch: at most the budget and one block over
            reject = bytes([0, 0, 0, 13, msg.REJECT])
            assert (reject in out) == (calls == 3 or out.startswith(reject)), calls
            if not out.startswith(reject):
                sent += _read_messages(out.split(reject)[0])
    # 5 pieces of 8 blocks in batches of 16 blocks: 3 calls (the third also rejects the piece we lack).
    assert calls == 3, calls
    assert [(i, b) for i, b, _ in sent] == [(i, b) for i, b, _ in blocks[: 5 * 8]]
    assert all(data == payload[i * plen + b : i * plen + b + B] for i, b, data in sent)
    assert port.uploaded == 5 * plen and peer.up.total == 5 * plen

    # Under a rate limit: one block per call, each paid for before it is read.
    port.upload_limit = limit = _Limit()
    peer.serving.uploads = _queue(*blocks[:4])
    outs = [peer.serving.produce() for _ in range(4)]
    assert [len(o) for o in outs] == [13 + B] * 4 and limit.asked == [B] * 4 and not peer.serving.uploads

    # Choked: a fast peer's requests outside its allowed-fast set are rejected (BEP 6), one REJECT per block.
    port.upload_limit = harness._NoLimit()
    peer.am_choking = True
    peer.allowed_fast_out = frozenset({2})
    peer.serving.uploads = _queue((1, 0, B), (1, B, B), (2, 0, B))
    out = peer.serving.produce()
    assert out[: 2 * 17] == msg.reject(1, 0, B) + msg.reject(1, B, B)
    assert _read_messages(out[2 * 17 :]) == [(2, 0, payload[2 * plen : 2 * plen + B])]
    peer.conn.close("done")
