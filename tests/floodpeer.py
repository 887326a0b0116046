"""A peer that floods torrentcore with control messages, and a probe for fresh handshakes.

:class:`Flooder` connects to torrentcore's listening port again and again (gevent greenlets in the test
or benchmark process, 127.0.0.1), does the BitTorrent handshake for the torrent, then sends one kind of
valid but useless message as fast as torrentcore reads it (see :data:`KINDS`), until torrentcore closes
the connection or ``max_bytes`` have gone (more than the kernel's socket buffers on loopback hold: up to
32 MiB received plus 4 MiB sent here, so what the flooder counts as sent is an upper bound of what
torrentcore read, and torrentcore's reason says how many it took). Each connection is recorded
(:class:`FloodConnection`).
:func:`fresh_handshake` opens a new connection meanwhile and reports whether torrentcore answered its
handshake, and how many flood bytes went out while it waited (a count, not a time).

The wire format is written out here (see fakepeer.py), not taken from torrentcore.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

import gevent
from fakepeer import CANCEL, HAVE, INTERESTED, NOT_INTERESTED, REQUEST, handshake, message, recv_exact

EXTENDED = 20
#: Reserved bytes with the extension-protocol bit (BEP 10) only.
EXT_RESERVED = bytes(5) + b"\x10" + bytes(2)
#: torrentcore's local ids for ut_pex and ut_metadata (its BEP 10 handshake; libtorrent uses the same).
OUR_UT_PEX, OUR_UT_METADATA = 1, 2


def bencode(value) -> bytes:
    """Just enough bencoding for the flood messages (dict keys sorted)."""
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, dict):
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in sorted(value.items())) + b"e"
    raise TypeError(type(value))


def extended(ext_id: int, payload: bytes) -> bytes:
    """A BEP 10 message."""
    return message(EXTENDED, bytes([ext_id]) + payload)


#: The honest extension handshake the flooder sends first (it speaks ut_metadata and ut_pex).
EXT_HANDSHAKE = extended(0, bencode({b"m": {b"ut_metadata": 3, b"ut_pex": 4}, b"v": b"flooder 1.0"}))
#: A 58 KiB extension handshake naming 5,000 extensions (the audit's).
BIG_EXT_HANDSHAKE = extended(0, bencode({b"m": {b"e%04d" % i: i % 250 + 1 for i in range(5000)}}))

#: Each kind: (what to send once after the handshake, the message repeated).
KINDS: dict[str, tuple[bytes, bytes]] = {
    "keep-alive": (b"", b"\x00\x00\x00\x00"),
    "have": (b"", message(HAVE, struct.pack(">I", 0))),
    "cancel": (b"", message(CANCEL, struct.pack(">III", 0, 0, 16384))),
    "interest": (b"", message(INTERESTED) + message(NOT_INTERESTED)),
    "ut_metadata": (EXT_HANDSHAKE, extended(OUR_UT_METADATA, bencode({b"msg_type": 0, b"piece": 0}))),
    "ut_pex": (EXT_HANDSHAKE, extended(OUR_UT_PEX, bencode({b"added": b"\x7f\x00\x00\x01\x00\x01",
                                                             b"dropped": b""}))),
    "ext-handshake": (b"", EXT_HANDSHAKE),
    "big-ext-handshake": (b"", BIG_EXT_HANDSHAKE),
    "unknown": (b"", message(0x42, b"?")),
}
#: Against a seeding torrentcore: INTERESTED and 500 REQUESTs (its upload queue full, once it unchokes the
#: flooder), then CANCELs (the first cancels a queued request, the rest are for requests never sent). The
#: requests are filled in by :class:`Flooder` (``request_blocks``).
SEED_KINDS = ("request-cancel",)
#: What torrentcore's reason for dropping each kind says (a tuple: one of these).
REASONS: dict[str, str | tuple[str, ...]] = {
    "keep-alive": "flood of keep-alive messages",
    "have": "flood of redundant have messages",
    "cancel": "flood of cancel messages",
    "interest": "flood of choke/interest messages",
    "ut_metadata": "too many ut_metadata requests",
    "ut_pex": "flood of extension messages",
    "ext-handshake": "flood of extension handshake messages",
    "big-ext-handshake": "bad extension handshake: bencoding has more than",
    "unknown": "flood of unknown id messages",
    # Unchoked at once: its cancels; from an address dropped twice lately (torrentcore.reconnect_throttle) it
    # waits for a choking round, and its requests while choked end it first.
    "request-cancel": ("flood of cancel messages", "too many requests while choked"),
}
#: Bytes per send: the repeated message is batched up to this size.
CHUNK = 64 * 1024


@dataclass
class FloodConnection:
    """One flood connection: its kind, local port, messages and bytes sent, how it ended."""

    kind: str
    local_port: int = 0
    handshake_answered: bool = False
    messages: int = 0
    bytes: int = 0
    closed_by_them: bool = False
    error: str = ""

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` as torrentcore's logs name this connection."""
        return f"127.0.0.1:{self.local_port}"


@dataclass
class Flooder:
    """Floods ``endpoint`` (torrentcore's listening port) with each of ``kinds`` in turn, ``rounds`` times."""

    endpoint: tuple[str, int]
    info_hash: bytes
    kinds: tuple[str, ...] = tuple(KINDS)
    rounds: int = 1
    max_bytes: int = 64 << 20
    #: ``(index, begin, length)`` of blocks the torrent has (for ``request-cancel``).
    request_blocks: tuple = ()
    #: Most bytes a second the flooder sends over all its connections (0: as fast as torrentcore reads).
    rate: int = 0
    connections: list[FloodConnection] = field(default_factory=list)
    sent: int = 0  # bytes over all connections
    active: bool = False  # a flood connection is open and sending

    def __post_init__(self) -> None:
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> Flooder:
        """Flood in a greenlet."""
        self._greenlet = gevent.spawn(self._run)
        return self

    def join(self, timeout: float) -> bool:
        """Wait (bounded) until every round is done; True if it is."""
        return self._greenlet is not None and self._greenlet.join(timeout) is None and self._greenlet.dead

    def stop(self) -> None:
        """Stop flooding (closes the open connection)."""
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=5)

    def _run(self) -> None:
        self._started = time.monotonic()
        for _ in range(self.rounds):
            for kind in self.kinds:
                if not self._one(kind):
                    return  # torrentcore no longer listens

    def _first_and_repeated(self, kind: str) -> tuple[bytes, bytes]:
        if kind == "request-cancel":
            blocks = self.request_blocks[:500]
            return (message(INTERESTED) + b"".join(message(REQUEST, struct.pack(">III", *b)) for b in blocks),
                    message(CANCEL, struct.pack(">III", *blocks[0])))
        return KINDS[kind]

    def _one(self, kind: str) -> bool:
        first, repeated = self._first_and_repeated(kind)
        batch = repeated * max(1, CHUNK // len(repeated))
        per_batch = max(1, CHUNK // len(repeated))
        try:
            sock = socket.create_connection(self.endpoint, timeout=10)
        except OSError:
            return False
        record = FloodConnection(kind)
        self.connections.append(record)
        drain = None
        try:
            record.local_port = sock.getsockname()[1]
            sock.sendall(handshake(self.info_hash, b"-FL0001-" + kind.encode()[:12].ljust(12, b"x"), EXT_RESERVED))
            theirs = recv_exact(sock, 68)
            record.handshake_answered = theirs[28:48] == self.info_hash
            drain = gevent.spawn(_drain, sock)
            if first:
                sock.sendall(first)
            self.active = True
            while record.bytes < self.max_bytes:
                sock.sendall(batch)
                record.messages += per_batch
                record.bytes += len(batch)
                self.sent += len(batch)
                if self.rate:
                    ahead = self.sent / self.rate - (time.monotonic() - self._started)
                    if ahead > 0:
                        gevent.sleep(ahead)
        except (EOFError, ConnectionError):
            record.closed_by_them = True
        except OSError as exc:  # a timeout: torrentcore stopped reading without closing
            record.error = repr(exc)
        finally:
            self.active = False
            if drain is not None:
                drain.kill(block=False)
            sock.close()
        return True


def _drain(sock: socket.socket) -> None:
    """Read and drop what torrentcore sends (its answers), until it closes."""
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


def fresh_handshake(endpoint: tuple[str, int], info_hash: bytes, flooder: Flooder | None = None,
                    timeout: float = 10.0) -> tuple[bool, int]:
    """Connect, send a handshake, wait (at most ``timeout`` s) for torrentcore's; return whether it came
    (for ``info_hash``) and how many flood bytes ``flooder`` sent meanwhile."""
    before = flooder.sent if flooder else 0
    try:
        with socket.create_connection(endpoint, timeout=timeout) as sock:
            sock.sendall(handshake(info_hash, b"-FR0001-freshfreshfr", EXT_RESERVED))
            theirs = recv_exact(sock, 68)
            ok = theirs[28:48] == info_hash
    except (OSError, EOFError):
        ok = False
    return ok, (flooder.sent if flooder else 0) - before
