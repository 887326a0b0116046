"""Peer wire framing (peer/connection.Connection) whatever the reads deliver: a message split at every byte
boundary, many messages in one read, a PIECE spanning many reads; over TCP, MSE's RC4 socket and uTP.

The reads are cut by :class:`Stingy`, a pass-through wrapper around the real socket that hands out at most
the next size of a schedule per ``recv_into`` (the bytes still travel over the real transport).
"""

from __future__ import annotations

import os
import socket

import gevent
import pytest

from torrentcore.errors import ProtocolError
from torrentcore.hookspec import BLOCK_SIZE
from torrentcore.peer import encryption as mse
from torrentcore.peer import messages as msg
from torrentcore.peer.connection import Connection
from torrentcore.utp.multiplexer import Multiplexer

BOUND = 30  # seconds for any one test's network waits

SMALL_BLOCK = os.urandom(40)
BIG_BLOCK = os.urandom(BLOCK_SIZE)
HUGE_BLOCK = os.urandom(4 * BLOCK_SIZE)  # over BLOCK_SIZE: read_into's straight-from-the-socket path


def _stream(block: bytes) -> tuple[bytes, list]:
    """A mix of messages and what a reader must parse from it."""
    parts = [
        (msg.KEEPALIVE, (-1, None)),
        (msg.have(3), (msg.HAVE, (3).to_bytes(4, "big"))),
        (msg.bitfield(b"\xff\x0f"), (msg.BITFIELD, b"\xff\x0f")),
        (msg.piece_header(1, 0, len(block)) + block, (msg.PIECE, (1, 0, block))),
        (msg.extended(1, b"xyz"), (msg.EXTENDED, b"\x01xyz")),
        (msg.request(5, 16384, 16384), (msg.REQUEST, (5).to_bytes(4, "big") + (16384).to_bytes(4, "big") * 2)),
        (msg.piece_header(2, 16384, 7) + b"1234567", (msg.PIECE, (2, 16384, b"1234567"))),
    ]
    return b"".join(p[0] for p in parts), [p[1] for p in parts]


class Stingy:
    """Forwards to ``sock``; each ``recv_into`` asks for at most the next size of ``schedule`` (then any)."""

    def __init__(self, sock, schedule: list[int]) -> None:
        self.sock = sock
        self.schedule = list(reversed(schedule))
        self.reads = 0

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:
        view = memoryview(buffer)
        limit = len(view) if not nbytes else min(nbytes, len(view))
        want = min(limit, self.schedule[-1]) if self.schedule else limit
        n = self.sock.recv_into(view[:want])
        if self.schedule and n:
            left = self.schedule.pop() - n
            if left > 0:
                self.schedule.append(left)
        self.reads += 1
        return n

    def __getattr__(self, name):
        return getattr(self.sock, name)


def _read(conn: Connection, count: int, take_blocks: bool = False) -> list:
    """``count`` messages as ``(id, payload)``, a PIECE's payload as ``(index, begin, bytes)``. With
    ``take_blocks``, as Peer.run reads: first :meth:`Connection.take_blocks` (the whole PIECEs of at most
    BLOCK_SIZE already buffered, here at most the messages still wanted), else :meth:`Connection.read_message`."""
    out: list = []

    def on_block(index: int, begin: int, data) -> None:
        out.append((msg.PIECE, (index, begin, bytes(data))))

    while len(out) < count:
        if take_blocks and conn.take_blocks(on_block, BLOCK_SIZE, 1 << 30, count - len(out))[1]:
            continue
        msg_id, payload = conn.read_message()
        if msg_id == msg.PIECE:
            index, begin, length = payload
            if length <= BLOCK_SIZE:
                conn.prefetch(length)
            data = bytearray(length)
            conn.read_into(memoryview(data))
            payload = (index, begin, bytes(data))
        out.append((msg_id, payload))
    return out


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        left = socket.create_connection(server.getsockname())
        right, _ = server.accept()
    return left, right


@pytest.fixture(params=[False, True], ids=["read_message", "take_blocks"])
def take_blocks(request) -> bool:
    """Read as :func:`_read` does with or without :meth:`Connection.take_blocks` first (as Peer.run does)."""
    return request.param


@pytest.fixture(params=["tcp", "rc4", "utp"])
def transport(request):
    """``make(schedule) -> (send, Connection, Stingy)``: a sender of raw stream bytes and the reading Connection."""
    closers = []

    def make(schedule: list[int]):
        if request.param == "utp":
            udp = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
            for s in udp:
                s.bind(("127.0.0.1", 0))
            accepted = []
            client = Multiplexer(udp[0]).start()
            server = Multiplexer(udp[1], lambda sock, addr: accepted.append(sock)).start()
            closers.extend([client.stop, server.stop, udp[0].close, udp[1].close])
            with gevent.Timeout(BOUND):
                left = client.connect(server.address, timeout=10)
                while not accepted:
                    gevent.sleep(0.01)
            right = accepted[0]
            stingy = Stingy(right, schedule)
            return left.sendall, Connection(stingy, ("127.0.0.1", 1)), stingy
        left, right = _tcp_pair()
        closers.extend([left.close, right.close])
        stingy = Stingy(right, schedule)
        if request.param == "tcp":
            return left.sendall, Connection(stingy, ("127.0.0.1", 1)), stingy
        key_a, key_b = os.urandom(20), os.urandom(20)
        a = mse.RC4Socket(left, mse.rc4(key_a), mse.rc4(key_b))
        b = mse.RC4Socket(stingy, mse.rc4(key_b), mse.rc4(key_a))
        return a.sendall, Connection(b, ("127.0.0.1", 1)), stingy

    yield make
    for close in closers:
        close()


def test_every_split_point_of_every_message(transport, take_blocks):
    """The stream sent once per split point k, read as two reads cut at k: every message boundary and
    every byte inside a length prefix, an id, a PIECE header and a payload is a read boundary once."""
    stream, expected = _stream(SMALL_BLOCK)
    schedule = []
    for k in range(1, len(stream)):
        schedule += [k, len(stream) - k]
    send, conn, stingy = transport(schedule)
    sender = gevent.spawn(send, stream * (len(stream) - 1))
    with gevent.Timeout(BOUND):
        for _ in range(len(stream) - 1):
            assert _read(conn, len(expected), take_blocks) == expected
        sender.get()


def test_many_messages_in_one_read(transport, take_blocks):
    """Whole batches of messages (blocks among them) arrive in one read and are all parsed from it."""
    stream, expected = _stream(BIG_BLOCK)
    send, conn, stingy = transport([])
    sender = gevent.spawn(send, stream * 8)
    with gevent.Timeout(BOUND):
        sender.get()
        gevent.sleep(0.05)  # let it all arrive: the first reads then carry many messages each
        got = _read(conn, 8 * len(expected), take_blocks)
    assert got == expected * 8
    assert stingy.reads < len(got) // 2  # several messages per read (one per read would be len(got))


@pytest.mark.parametrize("block", [BIG_BLOCK, HUGE_BLOCK], ids=["16KiB", "64KiB"])
def test_a_piece_spanning_many_reads(transport, block, take_blocks):
    """Reads of 1,000 bytes (and odd sizes): a block's payload is gathered from many reads, byte exact."""
    stream, expected = _stream(block)
    send, conn, stingy = transport([1000, 1, 3, 4093] * 200)
    sender = gevent.spawn(send, stream * 2)
    with gevent.Timeout(BOUND):
        assert _read(conn, 2 * len(expected), take_blocks) == expected * 2
        sender.get()


def test_take_blocks_takes_only_whole_piece_messages_already_buffered():
    """take_blocks hands over a PIECE only when all of it is in the buffer and its payload is at most ``most``
    bytes; anything else (another message, a part of a block, a larger block, a malformed length) is left
    untouched for read_message, which then reads it (or refuses it) as before."""
    left, right = _tcp_pair()
    got: list = []

    def on_block(index: int, begin: int, data) -> None:
        got.append((index, begin, bytes(data)))

    try:
        conn = Connection(right, ("127.0.0.1", 1))
        block = os.urandom(BLOCK_SIZE)
        with gevent.Timeout(BOUND):
            left.sendall(msg.have(3) + msg.piece_header(4, 16384, BLOCK_SIZE) + block[:100])
            conn.prefetch(9 + 13 + 100)
            assert conn.take_blocks(on_block, BLOCK_SIZE, 1 << 20, 64) == (0, 0), "a HAVE is not a block"
            assert conn.read_message() == (msg.HAVE, (3).to_bytes(4, "big"))
            assert conn.take_blocks(on_block, BLOCK_SIZE, 1 << 20, 64) == (0, 0), "13 + 100 bytes of 16 KiB"
            assert conn.buffered == 13 + 100 and not got, "nothing consumed"
            left.sendall(block[100:] + msg.piece_header(5, 0, 2 * BLOCK_SIZE) + bytes(2 * BLOCK_SIZE))
            conn.prefetch(13 + BLOCK_SIZE)
            assert conn.take_blocks(on_block, BLOCK_SIZE, 1 << 20, 64) == (BLOCK_SIZE, 1)
            assert got == [(4, 16384, block)]
            conn.prefetch(13 + 2 * BLOCK_SIZE)
            assert conn.take_blocks(on_block, BLOCK_SIZE, 1 << 20, 64) == (0, 0), "over BLOCK_SIZE: read_message's"
            assert conn.read_message() == (msg.PIECE, (5, 0, 2 * BLOCK_SIZE))
            conn.skip(2 * BLOCK_SIZE)
            left.sendall((8).to_bytes(4, "big") + bytes([msg.PIECE]) + bytes(8))  # a PIECE too short for a header
            conn.prefetch(12)
            assert conn.take_blocks(on_block, BLOCK_SIZE, 1 << 20, 64) == (0, 0)
            with pytest.raises(ProtocolError):
                conn.read_message()
            assert len(got) == 1
    finally:
        left.close()
        right.close()


def test_take_blocks_stops_at_its_budget_and_at_close():
    """take_blocks hands over at most ``max_bytes`` of payload (the block that reaches it included) and at most
    ``max_blocks`` blocks per call, the rest left buffered in order (the reader's fairness yield comes between);
    it stops after the block during which the connection was closed."""
    blocks = [os.urandom(BLOCK_SIZE) for _ in range(10)]
    conn = Connection(_Preloaded(b"".join(msg.piece_header(1, i * BLOCK_SIZE, BLOCK_SIZE) + b
                                          for i, b in enumerate(blocks))), ("127.0.0.1", 1))
    conn.prefetch(10 * (13 + BLOCK_SIZE))
    got: list = []

    def on_block(index: int, begin: int, data) -> None:
        got.append(bytes(data))
        if len(got) == 8:
            conn.closed = True

    assert conn.take_blocks(on_block, BLOCK_SIZE, 2 * BLOCK_SIZE + 1, 64) == (3 * BLOCK_SIZE, 3)
    assert conn.take_blocks(on_block, BLOCK_SIZE, 1 << 20, 2) == (2 * BLOCK_SIZE, 2)
    assert conn.take_blocks(on_block, BLOCK_SIZE, 1 << 20, 64) == (3 * BLOCK_SIZE, 3), "closed during the 8th"
    assert got == blocks[:8]
    assert conn.buffered == 2 * (13 + BLOCK_SIZE)


class _Preloaded:
    """A socket whose peer already sent ``data``: each recv_into gets as much of it as the buffer offered holds
    (as a real socket does with that much queued), then end of stream."""

    def __init__(self, data: bytes, most: int = 1 << 30) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.most = most  # at most this many bytes per read (a slow peer's trickle)
        self.offered: list[int] = []

    def recv_into(self, view) -> int:
        n = min(len(view), len(self.data) - self.pos, self.most)
        view[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        self.offered.append(len(view))
        return n

    def settimeout(self, timeout) -> None:
        pass

    def setsockopt(self, *args) -> None:
        pass

    def shutdown(self, how) -> None:
        pass

    def close(self) -> None:
        pass


def test_the_read_buffer_grows_for_a_peer_that_fills_it_and_stays_small_otherwise():
    """Reads that fill the whole buffer double it up to READ_BUFFER_MAX (the peer sends faster than we read);
    a peer whose reads never fill it keeps READ_BUFFER; a message larger than the buffer (a bitfield of 2^21
    pieces is 256 KiB) is read whole on a fresh connection. Every byte comes out in order meanwhile."""
    from torrentcore.peer.connection import READ_BUFFER, READ_BUFFER_MAX

    assert READ_BUFFER < READ_BUFFER_MAX
    blocks = [(i, 0, os.urandom(BLOCK_SIZE)) for i in range(160)]  # 2.5 MiB, all "queued" at once
    fast = Connection(_Preloaded(b"".join(msg.piece_header(i, b, len(d)) + d for i, b, d in blocks)), ("h", 1))
    assert fast.read_buffer_size == READ_BUFFER
    got = _read(fast, len(blocks), take_blocks=True)
    assert got == [(msg.PIECE, blk) for blk in blocks]
    assert fast.read_buffer_size == READ_BUFFER_MAX
    assert max(fast.sock.offered) > READ_BUFFER_MAX // 2, "reads of up to a whole 1 MiB buffer"

    slow = Connection(_Preloaded(b""), ("h", 1))
    for n in range(50):  # one small message per read: never a full buffer
        slow.sock.data, slow.sock.pos = memoryview(msg.have(n)), 0
        assert slow.read_message() == (msg.HAVE, n.to_bytes(4, "big"))
    assert slow.read_buffer_size == READ_BUFFER

    bits = os.urandom(1 << 18)
    big = Connection(_Preloaded(msg.bitfield(bits) + msg.have(7), most=4000), ("h", 1))
    assert big.read_message() == (msg.BITFIELD, bits)
    assert big.read_message() == (msg.HAVE, (7).to_bytes(4, "big"))


def test_read_buffers_beyond_the_floor_grow_only_within_the_process_wide_budget():
    """Fast connections grow to READ_BUFFER_FLOOR whatever the others hold; beyond it only while the growth of
    all open buffers stays within READ_BUFFERS_GROWTH (idle connections' READ_BUFFER not counted): with the
    budget taken by others a fast peer stops at the floor (every byte still in order); once they are closed a
    new fast peer grows to READ_BUFFER_MAX again, with any number of idle connections open."""
    from torrentcore.peer import connection as connection_mod
    from torrentcore.peer.connection import READ_BUFFER, READ_BUFFER_FLOOR, READ_BUFFER_MAX, READ_BUFFERS_GROWTH

    blocks = [(i, 0, os.urandom(BLOCK_SIZE)) for i in range(160)]
    stream = b"".join(msg.piece_header(i, b, len(d)) + d for i, b, d in blocks)
    want = [(msg.PIECE, blk) for blk in blocks]
    assert not any(len(c._buf) > READ_BUFFER for c in connection_mod._OPEN), "grown buffers of earlier tests open"
    hogs = []
    while sum(len(c._buf) - READ_BUFFER for c in hogs) + READ_BUFFER_FLOOR <= READ_BUFFERS_GROWTH:
        hog = Connection(_Preloaded(stream), ("h", 2))
        assert _read(hog, len(blocks), take_blocks=True) == want
        hogs.append(hog)
    assert hogs[0].read_buffer_size == READ_BUFFER_MAX
    fast = Connection(_Preloaded(stream), ("h", 1))
    assert _read(fast, len(blocks), take_blocks=True) == want
    assert fast.read_buffer_size == READ_BUFFER_FLOOR
    assert max(fast.sock.offered) <= READ_BUFFER_FLOOR
    for conn in [*hogs, fast]:
        conn.close()
    idle = [Connection(_Preloaded(b""), ("h", 3)) for _ in range(300)]
    again = Connection(_Preloaded(stream), ("h", 4))
    assert _read(again, len(blocks), take_blocks=True) == want
    assert again.read_buffer_size == READ_BUFFER_MAX
    for conn in [*idle, again]:
        conn.close()
