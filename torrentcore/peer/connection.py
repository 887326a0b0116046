"""One TCP connection speaking the peer wire protocol: framing, handshake, buffered I/O.

The socket is a (gevent-patched) blocking socket. One greenlet reads
(:meth:`Connection.read_message`), and a writer greenlet owned by the
connection sends whatever :meth:`Connection.send` queued, in batches, so a
slow peer never blocks the engine; when the queue is empty the writer asks
the ``producer`` callback for more (piece data being uploaded) and sends a
keep-alive after ``KEEPALIVE_INTERVAL`` seconds of silence.

Bounds against hostile peers: messages over ``MAX_MESSAGE`` bytes, silence for
``IDLE_TIMEOUT`` between messages or ``MESSAGE_TIMEOUT`` inside one, and more
than ``MAX_QUEUED`` bytes waiting to be sent to a peer that does not read each
end the connection.
"""

from __future__ import annotations

import socket
import struct
import time
import weakref
from collections.abc import Callable

import gevent
import gevent.event

from ..errors import ProtocolError
from . import messages as msg
from .send_all import sender_for

#: Largest message accepted: a 128 KiB block plus header, or a bitfield for 2^21 pieces.
MAX_MESSAGE = 512 * 1024
#: A peer silent for this long is dead (BEP 3 peers send keep-alives every 2 minutes).
IDLE_TIMEOUT = 150.0
KEEPALIVE_INTERVAL = 90.0
HANDSHAKE_TIMEOUT = 15.0
#: Once the first byte of a message has arrived, a peer that sends nothing more for this long is dropped.
#: Read at each message, so a test (or an embedding program) may lower it.
MESSAGE_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0
#: Most bytes of messages queued for a peer that does not read them (uploads are produced on demand, not
#: queued): past this the connection is closed, so a peer provoking replies it never reads costs bounded memory.
MAX_QUEUED = 8 * 1024 * 1024
#: The read buffer of a new connection, and at most what :meth:`Connection.feed` takes...
READ_BUFFER = 64 * 1024
#: ...grown (doubling) up to this while reads fill all of it, that is while the peer sends faster than we read
#: (a recv_into returns what the socket holds, up to the space offered). Read path alone (benchmarks/readpath.py,
#: 256 MiB x 3 rounds, 4 alternating runs, load 2.5), event loop CPU s/GiB, medians: 256 KiB 1.76, 1 MiB 1.38
#: (four times fewer recv_into calls, each a GIL release and re-acquire, and fewer partial blocks moved to the
#: front). Idle and slow peers keep the small buffer: a bytearray is zeroed, so all of it is resident.
READ_BUFFER_MAX = 1024 * 1024
#: ...but beyond READ_BUFFER_FLOOR only while all the connections of the process together have grown theirs by at
#: most READ_BUFFERS_GROWTH bytes beyond READ_BUFFER: a few fast peers still get READ_BUFFER_MAX whatever the
#: number of idle connections, fifty fast ones 256 or 512 KiB each. Fifty fast peers each grew a 1 MiB buffer
#: (64 KiB to 1 MiB: 2 MiB of new zeroed memory per connection, 100 MiB of page faults per download), and those
#: 50 MiB no longer fitted any CPU cache on the way to the pieces: ``Connection._resize`` alone was 1.6 % of the
#: process in py-spy (benchmarks/many_peers.py, 50 peers), peak RSS 144-155 MiB against 80-83 MiB with 3 peers;
#: with the budget 128-143 MiB (CPU per GiB the same within the noise).
READ_BUFFER_FLOOR = 256 * 1024
READ_BUFFERS_GROWTH = 16 * 1024 * 1024
#: A connection refused growth asks the budget (a sum over every open connection) again only after this many
#: more reads that filled its buffer.
GROW_RETRY_READS = 64
#: The connections open (their buffers' growth is counted against READ_BUFFERS_GROWTH).
_OPEN: weakref.WeakSet = weakref.WeakSet()
#: Fairness: the writer yields (gevent.sleep(0)) after sending this many bytes in a row. gevent's sendall
#: returns without switching while the socket buffer has room, so a peer reading as fast as we upload would
#: otherwise keep the event loop (64 blocks of 16 KiB: ~0.5 ms of copying on loopback).
WRITE_YIELD_BYTES = 1024 * 1024

_U32 = struct.Struct(">I")
_U32x2 = struct.Struct(">II")
_PIECE_HDR = struct.Struct(">IBII")  # length, id, index, begin: a PIECE message's 13-byte header
_PIECE_ID = msg.PIECE
_NO_BLOCKS = (0, 0)  # take_blocks' answer when no whole block is buffered (nothing allocated)


class Connection:
    """A peer wire connection. Not thread-safe; greenlet-safe for one reader plus senders."""

    def __init__(self, sock: socket.socket, address: tuple[str, int]) -> None:
        self.sock = sock
        self.address = address
        sock.settimeout(IDLE_TIMEOUT)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self._buf = bytearray(READ_BUFFER)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._grow = False  # the next read first doubles the buffer (see READ_BUFFER_MAX)
        self._grow_refused = 0  # full reads to go before the budget is asked again (see _fill)
        _OPEN.add(self)
        self._out: list[bytes] = []
        self._queued = 0  # bytes in self._out
        self._wake = gevent.event.Event()
        self._writer: gevent.Greenlet | None = None
        self.producer: Callable[[], bytes | None] | None = None
        self.closed = False
        self.close_reason = ""
        self.last_send = time.monotonic()
        self._timeout = IDLE_TIMEOUT
        #: True when the stream is RC4-encrypted (MSE/PE; ``sock`` is then an encryption wrapper).
        self.encrypted = False
        #: Called once (then cleared) when the reader has read every byte received and is about to wait for
        #: the next message, or by the reader's owner at its next yield (:meth:`call_on_drained`).
        self.on_drained: Callable[[], None] | None = None

    @classmethod
    def connect(cls, address: tuple[str, int], timeout: float = CONNECT_TIMEOUT) -> Connection:
        """Open a TCP connection to ``address``."""
        sock = socket.create_connection(address, timeout=timeout)
        return cls(sock, address)

    # --- reading ---------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Buffer ``data``, bytes of this stream already received (during the encryption handshake):
        the next reads return them first. Only before the first read (at most :data:`READ_BUFFER_MAX` bytes)."""
        if self._end or len(data) > READ_BUFFER_MAX:
            raise ValueError("feed() takes at most READ_BUFFER_MAX bytes before the first read")
        if len(data) > len(self._buf):
            self._resize(len(data))
        self._buf[: len(data)] = data
        self._end = len(data)

    def _fill(self, need: int) -> None:
        """Make at least ``need`` bytes available in the buffer."""
        while self._end - self._start < need:
            if self._grow or need > len(self._buf):
                self._resize(need)
            elif self._start == self._end:
                self._start = self._end = 0
            elif len(self._buf) - self._start < need:
                size = self._end - self._start
                self._buf[0:size] = self._buf[self._start : self._end]
                self._start, self._end = 0, size
            space = len(self._buf) - self._end
            n = self.sock.recv_into(self._view[self._end :])
            if not n:
                raise ConnectionError("connection closed by peer")
            self._end += n
            if n == space and 2 * n >= len(self._buf) and len(self._buf) < READ_BUFFER_MAX:
                # A read of half the buffer or more, and it filled it (see READ_BUFFER_MAX): grow if the budget
                # allows; refused, ask again only after GROW_RETRY_READS such reads (the budget is a sum over
                # every connection).
                if self._grow_refused:
                    self._grow_refused -= 1
                elif _may_grow(len(self._buf)):
                    self._grow = True
                else:
                    self._grow_refused = GROW_RETRY_READS

    def _resize(self, need: int) -> None:
        """A new buffer of twice the size (at least ``need``, at most READ_BUFFER_MAX unless ``need`` is more),
        holding the bytes not read yet. Views handed out by :meth:`take` keep the old buffer alive meanwhile."""
        self._grow = False
        size = max(need, min(2 * len(self._buf), READ_BUFFER_MAX))
        live = self._end - self._start
        buf = bytearray(size)
        buf[:live] = self._view[self._start : self._end]
        self._buf, self._view = buf, memoryview(buf)
        self._start, self._end = 0, live

    def prefetch(self, n: int) -> None:
        """Receive until ``n`` bytes (``n`` <= the read buffer) are buffered.

        A following :meth:`read_into` of at most ``n`` bytes then copies them without waiting on the
        socket, that is without letting another greenlet run in between.
        """
        if self._end - self._start < n:
            self._fill(n)

    @property
    def read_buffer_size(self) -> int:
        """Bytes of the read buffer now (READ_BUFFER at first, up to READ_BUFFER_MAX for a fast peer)."""
        return len(self._buf)

    @property
    def buffered(self) -> int:
        """Bytes received and not read yet (the rest of the peer's messages already here)."""
        return self._end - self._start

    def call_on_drained(self) -> None:
        """Run :attr:`on_drained` now if set (once)."""
        hook, self.on_drained = self.on_drained, None
        if hook is not None:
            hook()

    def take(self, n: int) -> memoryview:
        """The next ``n`` bytes, already buffered (:meth:`prefetch`), as a view of the read buffer: consumed, and
        valid only until the next read (copy them before anything else reads this connection)."""
        start = self._start
        if self._end - start < n:
            raise ValueError("take() of more bytes than are buffered")
        self._start = start + n
        return self._view[start : start + n]

    def take_blocks(self, on_block: Callable[[int, int, memoryview], None], most: int, max_bytes: int,
                    max_blocks: int) -> tuple[int, int]:
        """Hand every PIECE message whose whole payload (at most ``most`` bytes) is already buffered to
        ``on_block(index, begin, payload)``, in order, each consumed before its call, the payload a view of the
        read buffer valid only during the call: until the next message is not such a block, the connection is
        closed, or ``max_bytes`` of payload or ``max_blocks`` blocks were handed over (the reader's fairness
        budget). Returns (payload bytes, blocks) handed over; (0, 0): read the next message with
        :meth:`read_message`.

        The download's fast path: a 1 MiB read holds 63 whole blocks of 16 KiB, taken here without waiting,
        without a timeout change (nothing is read from the socket), and without a call, a tuple and a turn of
        the reader's loop per block (taking them one by one cost 106 bytecodes per block, this 80).
        """
        unpack, buf, view = _PIECE_HDR.unpack_from, self._buf, self._view
        start, stop = self._start, self._end  # (on_block reads nothing from this connection: both stay)
        last = stop - 13
        longest = most + 9
        got = blocks = 0
        while start <= last:
            length, msg_id, index, begin = unpack(buf, start)
            end = start + 4 + length
            if msg_id != _PIECE_ID or length < 9 or length > longest or end > stop:
                break
            self._start = end
            on_block(index, begin, view[start + 13 : end])
            got += length - 9
            blocks += 1
            if got >= max_bytes or blocks >= max_blocks or self.closed:
                break
            start = end
        return (got, blocks) if blocks else _NO_BLOCKS

    def read_exact(self, n: int) -> bytes:
        """Read exactly ``n`` bytes (``n`` <= the read buffer)."""
        self._fill(n)
        data = bytes(self._view[self._start : self._start + n])
        self._start += n
        return data

    def read_into(self, dest: memoryview) -> None:
        """Fill ``dest`` completely: first from the buffer, then straight from the socket."""
        start = self._start
        n = len(dest)
        if self._end - start >= n:  # all buffered (always after prefetch): one copy
            dest[:] = self._view[start : start + n]
            self._start = start + n
            return
        have = min(self._end - self._start, len(dest))
        if have:
            dest[:have] = self._view[self._start : self._start + have]
            self._start += have
        pos = have
        while pos < len(dest):
            n = self.sock.recv_into(dest[pos:])
            if not n:
                raise ConnectionError("connection closed by peer")
            pos += n

    def skip(self, n: int) -> None:
        """Discard ``n`` bytes of payload."""
        while n:
            chunk = min(n, READ_BUFFER)
            self._fill(chunk)
            self._start += chunk
            n -= chunk

    def read_message(self) -> tuple[int, object]:
        """Read one message; return ``(id, payload)``; ``(-1, None)`` is a keep-alive.

        For PIECE the payload is ``(index, begin, length)`` and the caller must
        then consume ``length`` bytes with :meth:`read_into` or :meth:`skip`.
        """
        start = self._start
        if self._end - start >= 13 and self._timeout == MESSAGE_TIMEOUT:
            # Fast path (nearly every block of a download): a PIECE header already buffered, in the middle
            # of a stream whose timeout is already the in-message one; one unpack instead of three reads.
            length, msg_id, index, begin = _PIECE_HDR.unpack_from(self._buf, start)
            if msg_id == msg.PIECE and 9 <= length <= MAX_MESSAGE:
                self._start = start + 13
                return msg_id, (index, begin, length - 9)
        if self._end == self._start:
            if self.on_drained is not None:
                self.call_on_drained()
            self._set_timeout(IDLE_TIMEOUT)  # between messages a peer may be quiet (keep-alives every 2 min)
            self._fill(1)
        # From a message's first byte on, the rest must keep coming: a peer stuck mid-message is dropped.
        # The PIECE payload the caller reads next is under the same timeout.
        self._set_timeout(MESSAGE_TIMEOUT)
        try:
            self._fill(4)
            (length,) = _U32.unpack_from(self._buf, self._start)
            self._start += 4
            if length == 0:
                return -1, None
            if length > MAX_MESSAGE:
                raise ProtocolError(f"message of {length} bytes is larger than the {MAX_MESSAGE}-byte limit")
            self._fill(1)
            msg_id = self._buf[self._start]
            self._start += 1
            if msg_id == msg.PIECE:
                if length < 9:
                    raise ProtocolError("piece message too short")
                self._fill(8)
                index, begin = _U32x2.unpack_from(self._buf, self._start)
                self._start += 8
                return msg_id, (index, begin, length - 9)
            return msg_id, self.read_exact(length - 1)
        except TimeoutError:
            raise ProtocolError(f"peer stopped for {self._timeout:g} s in the middle of a message") from None

    def _set_timeout(self, seconds: float) -> None:
        """The socket timeout for the next reads (and the writer's next send), set only when it changes."""
        if seconds != self._timeout:
            self._timeout = seconds
            self.sock.settimeout(seconds)

    # --- handshake -------------------------------------------------------------------------------

    def send_handshake(self, info_hash: bytes, peer_id: bytes, reserved: bytes) -> None:
        """Send our handshake directly (before the writer starts)."""
        self.sock.sendall(msg.handshake(info_hash, peer_id, reserved))

    def read_handshake(self, timeout: float = HANDSHAKE_TIMEOUT) -> tuple[bytes, bytes, bytes]:
        """Read the peer's handshake: ``(reserved, info_hash, peer_id)``."""
        with gevent.Timeout(timeout, ProtocolError("no handshake from peer")):
            self._fill(1)
            if self._buf[self._start] != len(msg.PROTOCOL):
                raise ProtocolError("not a BitTorrent handshake")
            return msg.parse_handshake(self.read_exact(msg.HANDSHAKE_LEN))

    # --- writing ---------------------------------------------------------------------------------

    def start_writer(self) -> None:
        """Start the writer greenlet (after the handshake)."""
        self._writer = gevent.spawn(self._write_loop)

    def send(self, data: bytes) -> None:
        """Queue ``data`` for sending."""
        if self.closed:
            return
        self._out.append(data)
        self._queued += len(data)
        if self._queued > MAX_QUEUED:
            self.close(f"peer does not read what we send ({self._queued} bytes queued)")
            return
        self._wake.set()

    def wake(self) -> None:
        """Ask the writer to poll the producer again."""
        self._wake.set()

    def _write_loop(self) -> None:
        send = sender_for(self.sock)
        try:
            while not self.closed:
                self._wake.wait(KEEPALIVE_INTERVAL)
                self._wake.clear()
                budget = WRITE_YIELD_BYTES
                while not self.closed:
                    if self._out:
                        batch, self._out = self._out, []
                        self._queued = 0
                        data = b"".join(batch)
                    elif self.producer is not None and (more := self.producer()):
                        data = more
                    else:
                        break
                    send(data)
                    self.last_send = time.monotonic()
                    budget -= len(data)
                    if budget <= 0:
                        gevent.sleep(0)
                        budget = WRITE_YIELD_BYTES
                if not self.closed and time.monotonic() - self.last_send >= KEEPALIVE_INTERVAL:
                    self.sock.sendall(msg.KEEPALIVE)
                    self.last_send = time.monotonic()
        except (OSError, ConnectionError) as exc:
            self.close(f"send failed: {exc}")

    def close(self, reason: str = "") -> None:
        """Close the socket (idempotent); the reader then fails with an OSError."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        _OPEN.discard(self)
        self._wake.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


def _may_grow(size: int) -> bool:
    """Whether a read buffer of ``size`` bytes (less than READ_BUFFER_MAX) may double now (see READ_BUFFER_FLOOR,
    READ_BUFFERS_GROWTH)."""
    if 2 * size <= READ_BUFFER_FLOOR:
        return True
    grown = sum(max(0, len(conn._buf) - READ_BUFFER) for conn in list(_OPEN))
    return grown + size <= READ_BUFFERS_GROWTH


def format_address(address: tuple) -> str:
    """``host:port`` for IPv4 and names, ``[v6]:port`` for IPv6 addresses (as URLs and ``--peer`` write them)."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
