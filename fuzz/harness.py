"""The properties the fuzz targets check, shared by the atheris targets and the Hypothesis tests.

Each ``check_*`` function takes arbitrary bytes, runs the real torrentcore code on them and
returns normally when the outcome is allowed: a value, or the one error type that code may raise
on bad input. Any other exception, or a broken invariant (``AssertionError``), is a bug.

* :func:`check_bencode`: ``decode`` / ``decode_prefix`` / ``decode_dict_with_spans`` return a
  value or raise ``BencodeError``; what they return re-encodes to something that decodes back to it.
* :func:`check_metainfo`: ``metainfo.parse`` returns a ``Metainfo`` or raises ``MetainfoError``
  or ``BencodeError``; every file path of a ``Metainfo`` stays inside the download folder
  (checked under POSIX and, with Windows' name rules switched on, under Windows path semantics).
* :func:`check_messages`: the peer-wire framing (``Connection.read_message`` fed from memory)
  and the payload parsers of ``peer/messages.py`` yield messages or raise ``ProtocolError``.
* :func:`check_mse`: the MSE/PE handshake state machines (``peer/encryption.py``) fed a peer's stream
  finish with a consistent result or raise ``EncryptionError``, with bounded buffers.
* :func:`check_tracker_reply`: an HTTP tracker's announce reply parses into a sensible
  ``AnnounceResponse`` (its interval raised to the minimum by ``TrackerTiers``) or raises a one-line
  ``TrackerError``; the compact peer lists of HTTP and UDP replies parse or raise ``TrackerError``.
"""

from __future__ import annotations

import hashlib
import ntpath
import posixpath
import random
import socket
import struct
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator

import gevent

from torrentcore import bencode, metainfo
from torrentcore.bitfield import Bitfield
from torrentcore.errors import BencodeError, MetainfoError, ProtocolError
from torrentcore.hookspec import BLOCK_SIZE
from torrentcore.peer import encryption as mse
from torrentcore.peer import messages as msg
from torrentcore.peer.connection import MAX_MESSAGE, MAX_QUEUED, Connection
from torrentcore.piecemanager import PieceManager
from torrentcore.tracker import AnnounceRequest, AnnounceResponse, TrackerError, TrackerTiers
from torrentcore.tracker import http as tracker_http
from torrentcore.tracker import peers as tracker_peers
from torrentcore.tracker import udp as tracker_udp
from torrentcore.tracker.tiers import MIN_ANNOUNCE_INTERVAL
from torrentcore.utp import connection as utp_conn
from torrentcore.utp import packet as utp_packet

#: What :func:`check_metainfo` may see raised for a bad torrent.
METAINFO_ERRORS = (MetainfoError, BencodeError)

WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{dev}{n}" for dev in ("COM", "LPT") for n in "123456789\u00b9\u00b2\u00b3"
}


# --- bencode -------------------------------------------------------------------------------------


def check_bencode(data: bytes) -> None:
    """Every decoder on ``data``: a value that round-trips, or ``BencodeError``."""
    try:
        value = bencode.decode(data)
    except BencodeError:
        value = None
    else:
        # Whatever decodes re-encodes canonically, and the canonical form decodes to the same value.
        assert bencode.decode(bencode.encode(value), strict_order=True) == value
    try:
        prefix, used = bencode.decode_prefix(data)
    except BencodeError:
        assert value is None, "decode accepted what decode_prefix refused"
    else:
        assert 0 < used <= len(data)
        assert bencode.decode(data[:used]) == prefix
        if value is not None:
            assert used == len(data) and prefix == value
    try:
        top, raw = bencode.decode_dict_with_spans(data)
    except BencodeError:
        assert not isinstance(value, dict), "decode accepted a dict that decode_dict_with_spans refused"
    else:
        assert top == value and set(raw) == set(top)
        for key, span in raw.items():
            assert bencode.decode(span) == top[key]


# --- metainfo ------------------------------------------------------------------------------------


def check_metainfo(data: bytes) -> metainfo.Metainfo | None:
    """``metainfo.parse(data)``: a safe ``Metainfo`` or a one-line error; also with Windows' rules."""
    meta = _parse(data)
    saved = metainfo._WINDOWS_NAMES, metainfo._CASE_INSENSITIVE_FS
    metainfo._WINDOWS_NAMES = metainfo._CASE_INSENSITIVE_FS = True
    try:
        win = _parse(data)
    finally:
        metainfo._WINDOWS_NAMES, metainfo._CASE_INSENSITIVE_FS = saved
    if meta is not None:
        assert_consistent(meta)
        assert_paths_safe(meta, windows=False)
    if win is not None:
        assert_consistent(win)
        assert_paths_safe(win, windows=True)
    return meta


def _parse(data: bytes) -> metainfo.Metainfo | None:
    try:
        return metainfo.parse(data)
    except METAINFO_ERRORS as exc:
        text = str(exc)
        assert text and "\n" not in text, f"error message is not one line: {text!r}"
        return None


def assert_consistent(meta: metainfo.Metainfo) -> None:
    """The piece layout and file offsets of a parsed torrent add up."""
    assert meta.piece_length > 0 and meta.total_length > 0
    assert meta.total_length <= metainfo.MAX_TOTAL_SIZE
    assert 0 < meta.num_pieces <= metainfo.MAX_PIECES
    assert (meta.num_pieces - 1) * meta.piece_length < meta.total_length <= meta.num_pieces * meta.piece_length
    assert 0 < meta.piece_size(meta.num_pieces - 1) <= meta.piece_length
    offset = 0
    for f in meta.files:
        assert f.offset == offset and f.length >= 0
        offset += f.length
    assert offset == meta.total_length
    assert len(meta.info_hash) == 20
    if meta.v2:  # BEP 52: every file with data starts a piece; layers are whole hashes; checks never raise
        assert len(meta.info_hash_v2) == 32
        assert all(f.offset % meta.piece_length == 0 for f in meta.files if f.root)
        assert all(len(layer) % 32 == 0 for layer in meta.piece_layers.values())
        if meta.piece_length <= 1 << 22:
            assert meta.piece_ok(0, bytes(meta.piece_size(0))) in (True, False)


def assert_paths_safe(meta: metainfo.Metainfo, windows: bool) -> None:
    """Every file lands inside the download folder, on its own path, with a creatable name."""
    files = [f for f in meta.files if not f.pad]
    keys: set[tuple[str, ...]] = set()
    for f in files:
        assert f.path and f.path[0] == meta.name, f.path
        assert len(f.relpath.encode("utf-8")) <= metainfo.MAX_PATH_BYTES
        for comp in f.path:
            assert comp not in ("", ".", ".."), f.path
            assert not any(c in "/\\" or ord(c) < 32 or c == "\x7f" for c in comp), f.path
            assert len(comp.encode("utf-8")) <= 255, f.path
            if windows:
                assert not any(c in '<>:"|?*' for c in comp), f.path
                assert comp[-1] not in ". ", f.path
                assert comp.partition(".")[0].rstrip(" ").upper() not in WINDOWS_DEVICES, f.path
        root = "/srv/dl"
        full = posixpath.normpath(posixpath.join(root, *f.path))
        assert full.startswith(root + "/"), f.path
        if windows:
            wroot = "C:\\dl"
            full = ntpath.normpath(ntpath.join(wroot, *f.path))
            assert full.startswith(wroot + "\\") and ntpath.splitdrive(full)[0] == "C:", f.path
        key = tuple(unicodedata.normalize("NFC", c).casefold() for c in f.path) if windows else f.path
        assert key not in keys, f"two files share {f.relpath}"
        keys.add(key)
    # No file sits where another file needs a folder.
    folders = {key[:i] for key in keys for i in range(1, len(key))}
    assert not folders & keys


# --- peer wire messages --------------------------------------------------------------------------


class MemorySocket:
    """Just enough of a socket for :class:`Connection` to read ``data``, ``chunk`` bytes at a time."""

    def __init__(self, data: bytes, chunk: int) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._chunk = max(1, chunk)

    def settimeout(self, timeout: float | None) -> None:
        """Timeouts do not apply: reads never block."""

    def setsockopt(self, *args: object) -> None:
        """Options do not apply."""

    def recv_into(self, buffer: memoryview, nbytes: int = 0) -> int:
        """Copy the next chunk; 0 at the end of the data (the peer closed)."""
        n = min(len(buffer), self._chunk, len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        """Nothing to release."""


def read_messages(data: bytes, chunk: int = 4096, handshake: bool = False) -> Iterator[tuple[int, object]]:
    """Frame ``data`` as a peer's byte stream with the real reader; yield ``(id, parsed payload)``.

    Stops at the end of the data (the connection closes); a malformed stream raises ``ProtocolError``.
    The payload is parsed with the same function the engine uses for its message id.
    """
    conn = Connection(MemorySocket(data, chunk), ("fuzz", 0))  # type: ignore[arg-type]
    try:
        if handshake:
            yield -2, conn.read_handshake(timeout=5)
        while True:
            msg_id, payload = conn.read_message()
            yield msg_id, _parse_payload(conn, msg_id, payload)
    except ConnectionError:
        return


def _parse_payload(conn: Connection, msg_id: int, payload: object) -> object:
    if msg_id == msg.PIECE:
        index, begin, length = payload  # type: ignore[misc]
        assert 0 <= length <= MAX_MESSAGE - 9
        block = bytearray(length)
        conn.read_into(memoryview(block))
        return index, begin, bytes(block)
    if msg_id == -1:
        return None
    assert isinstance(payload, bytes) and len(payload) < MAX_MESSAGE
    if msg_id in (msg.HAVE, msg.SUGGEST, msg.ALLOWED_FAST):
        return msg.parse_have(payload)
    if msg_id in (msg.REQUEST, msg.CANCEL, msg.REJECT):
        return msg.parse_triple(payload)
    if msg_id in (msg.HAVE_ALL, msg.HAVE_NONE) and payload:
        raise ProtocolError(f"{msg.NAMES[msg_id]} message with a payload")
    if msg_id == msg.BITFIELD:
        # The engine checks a bitfield against the torrent's piece count: let the first byte pick
        # one that leaves 0-7 spare bits, which must be clear.
        size = max(0, len(payload) * 8 - (payload[0] & 7 if payload else 0))
        return Bitfield(size, payload).count
    if msg_id == msg.EXTENDED and payload[:1] == b"\x00":
        try:
            return bencode.decode(payload[1:], max_size=64 * 1024)
        except BencodeError as exc:
            raise ProtocolError(f"bad extension handshake: {exc}") from None
    return payload


def check_messages(data: bytes) -> None:
    """The framing on ``data``: messages or ``ProtocolError``; the first byte picks the read size."""
    if not data:
        return
    chunk = (data[0] & 0x3F) + 1 if data[0] & 0x40 else 4096
    handshake = bool(data[0] & 0x80)
    stream = data[1:]
    try:
        for n, (msg_id, parsed) in enumerate(read_messages(stream, chunk, handshake)):
            assert n <= len(stream) // 4 + 1, "more messages than the stream can hold"
            if msg_id == msg.PIECE:
                assert isinstance(parsed, tuple) and len(parsed) == 3
    except ProtocolError as exc:
        assert str(exc) and "\n" not in str(exc)


def frame(msg_id: int, payload: bytes) -> bytes:
    """One length-prefixed message (for building streams in tests)."""
    return struct.pack(">IB", 1 + len(payload), msg_id) + payload


# --- MSE/PE handshake ----------------------------------------------------------------------------

#: The torrents a fuzzed responder serves (the second is the one honest streams name).
MSE_SERVED = (b"\x01" * 20, b"\x02" * 20)


def check_mse(data: bytes) -> None:
    """The first byte picks the side, the chunking and whether the peer's key exchange is honest.

    Bits 0-1: 0 responder fed raw bytes, 1 initiator fed raw bytes, 2 responder after an honest
    step 1 (our key, PadA of ``data[1]`` bytes, req1, req2 xor req3), 3 initiator after an honest step 2
    (our key, PadB); in modes 2 and 3 the rest of the input is the plaintext of the encrypted part (so
    libFuzzer explores VC, crypto_provide/select, PadC/PadD and IA). Bits 2-7: read size - 1 (0: all at once).
    """
    if len(data) < 2:
        return
    mode, chunk = data[0] & 3, (data[0] >> 2) or len(data)
    machine: mse.MSEHandshake
    if mode in (0, 2):
        machine = mse.Responder(lambda: MSE_SERVED)
    else:
        machine = mse.Initiator(MSE_SERVED[1], msg.handshake(MSE_SERVED[1], b"-TC0001-fuzzfuzzfuzz", bytes(8)),
                                provide=mse.CRYPTO_RC4 | (mse.CRYPTO_PLAINTEXT if data[1] & 1 else 0))
    stream = data[2:] if mode < 2 else _honest_prefix(machine, mode, data[1], data[2:])
    try:
        for i in range(0, len(stream), chunk):
            machine.receive(stream[i : i + chunk])
            if machine.result is not None:
                break
    except mse.EncryptionError as exc:
        assert str(exc) and "\n" not in str(exc)
        assert machine.result is None
        return
    assert len(machine._in) <= mse.MAX_HANDSHAKE_BYTES + chunk
    if machine.result is not None:
        result = machine.result
        assert result.method in (mse.CRYPTO_RC4, mse.CRYPTO_PLAINTEXT)
        assert result.info_hash == MSE_SERVED[1] if mode == 3 else result.info_hash in MSE_SERVED
        out = machine.outgoing()
        assert mode == 3 or out, "a responder always answers with step 4"


def _honest_prefix(machine: mse.MSEHandshake, mode: int, pad: int, plaintext: bytes) -> bytes:
    """The honest key exchange for ``machine``, then ``plaintext`` encrypted as the peer would."""
    x, ours = mse.keypair()
    secret = mse.shared_secret(x, machine.public_key)
    skey = MSE_SERVED[1]
    if mode == 2:
        key = mse.sha1(b"keyA", secret, skey)
        xored = bytes(a ^ b for a, b in zip(mse.sha1(b"req2", skey), mse.sha1(b"req3", secret)))
        head = ours + bytes(pad) + mse.sha1(b"req1", secret) + xored
    else:
        key = mse.sha1(b"keyB", secret, skey)
        head = ours + bytes(pad)
    return head + mse.rc4(key).update(plaintext)


def mse_seeds() -> list[bytes]:
    """Honest encrypted parts in modes 2 and 3 (and raw starts in modes 0 and 1)."""
    ia = msg.handshake(MSE_SERVED[1], b"-XX0001-fuzzpeer0000", bytes(8))
    step3 = mse.VC + b"\x00\x00\x00\x03" + b"\x00\x04" + bytes(4) + len(ia).to_bytes(2, "big") + ia
    theirs = msg.handshake(MSE_SERVED[1], b"-XX0001-fuzzpeer0001", bytes(8))
    step4 = mse.VC + b"\x00\x00\x00\x02" + b"\x00\x03" + bytes(3) + theirs
    return [
        b"\x02\x00" + step3, b"\x06\x10" + step3, b"\x03\x00" + step4, b"\x07\x01" + step4,
        b"\x00\x00" + bytes(96) + bytes(600), b"\x01\x00" + b"\xff" * 96,
    ]


# --- tracker replies -----------------------------------------------------------------------------

#: The tracker URL the replies are attributed to (errors must name it).
TRACKER_URL = "http://fuzz.invalid/announce"


class _Answers:
    """A tracker client that hands back one parsed reply (to run it through :class:`TrackerTiers`)."""

    def __init__(self, url: str, resp: AnnounceResponse) -> None:
        self.url, self._resp = url, resp

    def announce(self, req: AnnounceRequest, timeout: float = 15.0) -> AnnounceResponse:
        return self._resp


def _assert_peers(peers: list[tuple[str, int]], most: int) -> None:
    assert len(peers) <= most, f"{len(peers)} peers read, more than {most}"
    for host, port in peers:
        assert isinstance(host, str) and host and isinstance(port, int) and 0 < port <= 0xFFFF, (host, port)


def check_tracker_reply(data: bytes) -> None:
    """An HTTP announce reply (``parse_announce_reply``) and the compact peer lists of HTTP and UDP replies.

    Allowed: an :class:`AnnounceResponse` that makes sense (positive interval, at most ``MAX_PEERS`` peers
    per list, no duplicate, real ports, a one-line warning), raised to ``MIN_ANNOUNCE_INTERVAL`` by
    :class:`TrackerTiers`; or a one-line ``TrackerError`` naming the tracker. Decoding stays within the
    reply value budget (``MAX_REPLY_TOKENS``), so no input is slow.
    """
    try:
        resp = tracker_http.parse_announce_reply(data, TRACKER_URL)
    except TrackerError as exc:
        text = str(exc)
        assert text.startswith(f"tracker {TRACKER_URL}") and "\n" not in text, text
    else:
        assert isinstance(resp.interval, int) and resp.interval > 0
        assert resp.min_interval is None or resp.min_interval >= 0
        assert len(set(resp.peers)) == len(resp.peers), "duplicate peers"
        _assert_peers(resp.peers, 2 * tracker_peers.MAX_PEERS)  # peers (either form) and peers6
        assert resp.warning is None or ("\n" not in resp.warning and len(resp.warning) <= 300)
        tiers = TrackerTiers([[TRACKER_URL]], client_factory=lambda url: _Answers(url, resp))
        request = AnnounceRequest(info_hash=b"\x11" * 20, peer_id=b"-TC0001-fuzzfuzzfuzz", port=6881)
        assert tiers.announce(request).interval >= MIN_ANNOUNCE_INTERVAL
    for size in (tracker_peers.COMPACT_V4_SIZE, tracker_peers.COMPACT_V6_SIZE):  # UDP replies end with these
        try:
            peers = tracker_peers.parse_compact(data, size)
        except TrackerError:
            assert len(data) % size, "a compact list of whole entries was refused"
        else:
            _assert_peers(peers, tracker_peers.MAX_PEERS)
    check_udp_reply(data)


#: The UDP tracker the datagrams are attributed to.
UDP_TRACKER_URL = "udp://127.0.0.1:6969/announce"


class _DatagramSocket:
    """A connected UDP socket whose replies are fuzzed datagrams: each reply is ``data`` with, unless the
    mode says otherwise, the transaction id of the request just sent in bytes 4-8 (else libFuzzer could
    never match the random id); after the last one, reads time out."""

    def __init__(self, family: int, replies: list[bytes], keep_tid: bool) -> None:
        self.family = family
        self._replies = replies
        self._keep_tid = keep_tid
        self._tid = b""

    def send(self, packet: bytes) -> int:
        self._tid = packet[12:16]
        return len(packet)

    def settimeout(self, timeout: float | None) -> None:
        """Reads never block."""

    def recvfrom(self, size: int) -> tuple[bytes, tuple[str, int]]:
        if not self._replies:
            raise TimeoutError
        reply = self._replies.pop(0)[:size]
        if not self._keep_tid and len(reply) >= 8:
            reply = reply[:4] + self._tid + reply[8:]
        return reply, ("127.0.0.1", 6969)


def check_udp_reply(data: bytes) -> None:
    """A BEP 15 exchange (connect, then announce) of the real ``UDPTracker`` fed ``data`` as datagrams.

    ``data[0]``: bit 0 the tracker's address is IPv6 (18-byte peers), bit 1 keep the datagram's own
    transaction id, bit 2 skip the connect exchange (a cached connection id). The rest is split at
    ``\xff\xfe\xfd\xfc`` into datagrams. Allowed: an ``AnnounceResponse`` with a positive interval and
    bounded, valid peers, or a one-line ``TrackerError`` naming the tracker.
    """
    if not data:
        return
    mode = data[0]
    family = socket.AF_INET6 if mode & 1 else socket.AF_INET
    tracker = tracker_udp.UDPTracker(UDP_TRACKER_URL, base_timeout=0.001, max_retries=0)
    sock = _DatagramSocket(family, data[1:].split(b"\xff\xfe\xfd\xfc")[:8], keep_tid=bool(mode & 2))
    request = AnnounceRequest(info_hash=b"\x11" * 20, peer_id=b"-TC0001-fuzzfuzzfuzz", port=6881)
    key = ("127.0.0.1", 6969)
    deadline = time.monotonic() + 5
    try:
        if mode & 4:
            conn_id = 0x1234
        else:
            conn_id = tracker._connect(sock, key, key, deadline)  # type: ignore[arg-type]
            assert tracker.connection_id == conn_id
        resp = tracker._announce(sock, key, conn_id, request, deadline)  # type: ignore[arg-type]
    except TrackerError as exc:
        text = str(exc)
        assert text.startswith(f"tracker {UDP_TRACKER_URL}") and "\n" not in text, text
    except tracker_udp._ErrorReply as exc:  # announce() turns it into a TrackerError naming the tracker
        assert len(str(exc)) <= 300 and "\n" not in str(exc), str(exc)
    else:
        assert isinstance(resp.interval, int) and resp.interval > 0
        assert len(set(resp.peers)) == len(resp.peers), "duplicate peers"
        _assert_peers(resp.peers, tracker_peers.MAX_PEERS)
        assert resp.complete is None or resp.complete >= 0
        assert resp.incomplete is None or resp.incomplete >= 0


# --- peer message dispatcher (a Peer's state machine) --------------------------------------------

#: The torrent a fuzzed peer talks about: 5 pieces of 2 blocks (32 KiB), the last one 1 block + 5 bytes.
WIRE_PIECE_LENGTH = 2 * BLOCK_SIZE
WIRE_PAYLOAD = bytes((i * 7 + i // 251) & 0xFF for i in range(4 * WIRE_PIECE_LENGTH + BLOCK_SIZE + 5))
_WIRE_META: list[metainfo.Metainfo] = []


def wire_meta() -> metainfo.Metainfo:
    """The (real, parsed) metainfo of :data:`WIRE_PAYLOAD`, built once."""
    if not _WIRE_META:
        _WIRE_META.append(_meta_of(WIRE_PAYLOAD, WIRE_PIECE_LENGTH))
    return _WIRE_META[0]


def _meta_of(payload: bytes, pl: int) -> metainfo.Metainfo:
    hashes = b"".join(hashlib.sha1(payload[i : i + pl]).digest() for i in range(0, len(payload), pl))
    info = {b"name": b"wire.bin", b"piece length": pl, b"pieces": hashes, b"length": len(payload)}
    return metainfo.parse(bencode.encode({b"info": info}))


class _NoLimit:
    rate = 0.0

    def consume(self, n: int) -> None:
        """No rate limit."""


class WirePort:
    """A :class:`~torrentcore.peer.ports.TorrentPort` (and PEX ``SwarmView``) of real parts: the parsed
    metainfo, a real ``PieceManager`` with the rarest-first strategy, a ``Bitfield``; completed pieces are
    hashed against the metainfo here, as the verifier does (a piece is ``have`` only if its hash matched)."""

    def __init__(self, have: Iterable[int] = (), payload: bytes | None = None, piece_length: int = 0) -> None:
        """The torrent of :data:`WIRE_PAYLOAD` (or of ``payload`` in pieces of ``piece_length``); we have ``have``."""
        from torrentcore_plugins.rarest_first import RarestFirst

        self.payload = WIRE_PAYLOAD if payload is None else payload
        self.meta = wire_meta() if payload is None else _meta_of(payload, piece_length)
        n = self.meta.num_pieces
        self.have = Bitfield(n)
        for i in have:
            self.have.set(i)
        self.manager = PieceManager(self.meta, self.have, RarestFirst(n, rng=random.Random(0)))
        self.peers: dict = {}
        self.candidates: dict = {}
        self.download_limit = self.upload_limit = _NoLimit()
        self.listen_port, self.dht_port, self.version, self.encryption = 6881, None, "0-fuzz", "prefer"
        self.arrived = self.uploaded = self.wasted = self.interest_changes = 0
        self.added: list = []
        self.verified: list[int] = []

    @property
    def complete(self) -> bool:
        return self.have.complete

    def add_peers(self, addresses, source: str = "tracker") -> None:
        self.added += list(addresses)[:1000]

    def block_arrived(self, n: int) -> None:
        self.arrived += n

    def block_uploaded(self, n: int) -> None:
        self.uploaded += n

    def stats_wasted(self, n: int) -> None:
        self.wasted += n

    def verify_piece(self, piece) -> None:
        if hashlib.sha1(bytes(piece.buffer[: piece.size])).digest() == self.meta.piece_hash(piece.index):
            self.manager.piece_verified(piece.index)
            self.verified.append(piece.index)
        else:
            self.manager.piece_failed(piece.index)
        self.manager.recycle(piece)

    def read_block(self, index: int, begin: int, length: int) -> bytes | None:
        if not self.have[index]:
            return None
        start = index * self.meta.piece_length + begin
        return self.payload[start : start + length]

    def wake_requesters(self) -> None:
        """One peer only: nobody else to wake."""

    def interest_changed(self, peer) -> None:
        self.interest_changes += 1


class ScriptedSocket:
    """A socket whose reads follow a script: chunks of the peer's bytes, and engine actions run between
    them (while the reader waits in ``recv_into``, as other greenlets act while a real reader blocks)."""

    def __init__(self, script: list, on_action: Callable[[int, int], None]) -> None:
        self.script = script
        self.on_action = on_action
        self.sent = bytearray()
        self.closed = False

    def settimeout(self, timeout: float | None) -> None:
        """Reads never block."""

    def setsockopt(self, *args: object) -> None:
        """Options do not apply."""

    def recv_into(self, buffer: memoryview, nbytes: int = 0) -> int:
        while self.script:
            item = self.script[0]
            if isinstance(item, tuple):  # an engine action
                self.script.pop(0)
                self.on_action(*item)
                continue
            n = min(len(buffer), len(item))
            buffer[:n] = item[:n]
            if n == len(item):
                self.script.pop(0)
            else:
                self.script[0] = item[n:]
            return n
        return 0  # the peer closed the connection

    def sendall(self, data: bytes) -> None:
        if self.closed:
            raise OSError("closed")
        if len(self.sent) < 16 << 20:
            self.sent += data

    def shutdown(self, how: int) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True


def parse_wire_script(data: bytes) -> tuple[int, list]:
    """``(mode, script)`` from a fuzz input: byte 0 is the mode; then records, each a byte ``op``:
    below 0xF0 the next ``op + 1`` bytes are what the peer sends; 0xF0-0xF7 an engine action with one
    argument byte (see :func:`check_peer`)."""
    mode, script, i = data[0], [], 1
    while i < len(data):
        op = data[i]
        if op < 0xF0:
            script.append(bytes(data[i + 1 : i + 2 + op]))
            i += op + 2
        else:
            script.append((op & 7, data[i + 1] if i + 1 < len(data) else 0))
            i += 2
    return mode, script


def wire_record(chunk: bytes) -> bytes:
    """Script records carrying ``chunk`` as the peer's bytes (for building seeds)."""
    out = bytearray()
    for i in range(0, len(chunk), 0xF0):
        part = chunk[i : i + 0xF0]
        out += bytes([len(part) - 1]) + part
    return bytes(out)


def check_peer(data: bytes) -> None:
    """A real :class:`~torrentcore.peer.peer.Peer` runs on a scripted stream (:func:`parse_wire_script`).

    Mode byte: bit 0 the peer set the fast bit (BEP 6), bit 1 the extension bit (BEP 10), bits 2-3 which
    pieces we have (none, the even ones, all, all but the last). Actions: 0 unchoke the peer, 1 choke it,
    2 the writer asks for ``arg`` uploads, 3 request timeouts pass, 4 another peer delivers our
    ``arg``-th outstanding block first (endgame: we cancel ours), 5 top up requests, 6/7 nothing.

    Allowed: the peer's read loop ends (the script ends, or a ``ProtocolError``, a flood among them)
    with a one-line reason. Always: its state stays bounded (queues, requests, allowed-fast set), what it
    sent frames cleanly (requests within pieces the peer has, blocks only of pieces we have, byte-exact),
    only hash-checked pieces become ours, and once it is gone (as the swarm cleans up) no availability
    and no request is left in the piece manager.
    """
    from torrentcore.peer import budget, request_pipeline
    from torrentcore.peer import peer as peer_mod
    from torrentcore.peer.extensions import ExtensionRegistry, MetadataServer, PexHandler

    if not data:
        return
    mode, script = parse_wire_script(data)
    n = wire_meta().num_pieces
    have = [(), range(0, n, 2), range(n), range(n - 1)][(mode >> 2) & 3]
    port = WirePort(have)
    reserved = msg.reserved_bytes(*([msg.RESERVED_FAST] if mode & 1 else []),
                                  *([msg.RESERVED_EXTENSIONS] if mode & 2 else []))
    registry = ExtensionRegistry({"ut_metadata": MetadataServer(port.meta.raw_info), "ut_pex": PexHandler(port)})
    holder: list = []

    def act(action: int, arg: int) -> None:
        p = holder[0]
        if action == 0:
            p.unchoke()
        elif action == 1:
            p.choke()
        elif action == 2:
            for _ in range(arg % 8 + 1):
                p.serving.produce()
        elif action == 3:
            p.requests.last_block -= request_pipeline.REQUEST_TIMEOUT + 1
            p.check_timeouts(time.monotonic())
        elif action == 4 and p.outstanding:  # another peer delivers one of our blocks first (endgame)
            index, begin = list(p.outstanding)[arg % len(p.outstanding)]
            length = p.outstanding[(index, begin)]
            dest = port.manager.block_buffer(index, begin, length)
            if dest is not None:
                start = index * WIRE_PIECE_LENGTH + begin
                dest[:] = WIRE_PAYLOAD[start : start + length]
                others, piece = port.manager.block_received(("10.9.9.9", 1), index, begin)
                if p.key in others:
                    p.cancel_block(index, begin)
                if piece is not None:
                    port.verify_piece(piece)
        elif action == 5:
            p.fill_requests()
        _assert_peer_bounded(p)

    sock = ScriptedSocket(script, act)
    conn = Connection(sock, ("127.0.0.2", 6881))  # type: ignore[arg-type]
    p = peer_mod.Peer(port, conn, b"-FZ0001-" + b"f" * 12, reserved, incoming=bool(mode & 0x10),
                      extensions=registry)
    p.budget = budget.MessageBudget(clock=lambda: 0.0)  # no refill: the same input always ends the same way
    holder.append(p)
    port.peers[p.address] = p
    reason = p.run()
    assert isinstance(reason, str) and reason and "\n" not in reason, reason
    _assert_peer_bounded(p)
    gevent.sleep(0)  # the writer sends what is queued
    conn.close(reason)
    if conn._writer is not None:
        conn._writer.join(timeout=5)
    # What we sent frames cleanly, and says only what is true.
    out = Connection(MemorySocket(bytes(sock.sent), 1 << 20), ("ours", 0))  # type: ignore[arg-type]
    for _ in range(len(sock.sent) // 4 + 1):
        try:
            msg_id, payload = out.read_message()
        except ConnectionError:
            break
        if msg_id == msg.REQUEST:
            index, begin, length = msg.parse_triple(payload)  # type: ignore[arg-type]
            assert p.has[index] and 0 < length <= BLOCK_SIZE, (index, begin, length)
            assert begin + length <= port.meta.piece_size(index)
        elif msg_id == msg.PIECE:
            index, begin, length = payload  # type: ignore[misc]
            block = out.read_exact(length)
            assert port.have[index], f"sent a block of piece {index}, which we do not have"
            start = index * WIRE_PIECE_LENGTH + begin
            assert block == WIRE_PAYLOAD[start : start + len(block)]
        elif msg_id == msg.BITFIELD:
            assert Bitfield(n, payload).count == len(have)  # type: ignore[arg-type]
    for index in port.have.indices():
        assert index in have or index in port.verified
    # The peer is gone: the swarm releases its requests and its pieces' availability.
    p.requests.drop(send_cancel=False)
    port.manager.remove_peer_pieces(p.has)
    assert port.manager.requested_blocks == 0, port.manager.requested_blocks
    assert not any(port.manager.availability), list(port.manager.availability)


def _assert_peer_bounded(p) -> None:
    from torrentcore.peer import request_pipeline as rp
    from torrentcore.peer import upload

    assert len(p.serving.uploads) <= upload.OUR_REQQ
    assert len(p.outstanding) <= rp.MAX_DEPTH
    assert len(p.requests.awaiting_answer) <= rp.MAX_AWAITING_ANSWER
    assert len(p.requests.allowed_fast_in) <= rp.MAX_ALLOWED_FAST_IN
    assert p.has.size == p.torrent.meta.num_pieces
    assert p.serving.bad_requests <= upload.MAX_BAD_REQUESTS + 1
    assert p.serving.cancels_in <= p.serving.requests_in + upload.CANCEL_SLACK + 1
    assert p.conn._queued <= MAX_QUEUED + MAX_MESSAGE or p.conn.closed
    assert p.torrent.manager.requested_blocks >= 0


def peer_seeds() -> list[bytes]:
    """Conversations a real peer could have: a seeder serving our requests, a leecher asking for blocks,
    BEP 6 greetings, BEP 10 handshakes with ut_metadata / ut_pex messages, cancels and chokes."""
    meta = wire_meta()
    n = meta.num_pieces
    ext = msg.extended(0, bencode.encode({b"m": {b"ut_metadata": 3, b"ut_pex": 4}, b"p": 6881, b"reqq": 250,
                                          b"v": b"fuzz", b"metadata_size": len(meta.raw_info)}))
    blocks = b"".join(msg.piece_header(i, b, min(BLOCK_SIZE, meta.piece_size(i) - b))
                      + WIRE_PAYLOAD[i * WIRE_PIECE_LENGTH + b : i * WIRE_PIECE_LENGTH + b + BLOCK_SIZE]
                      for i in range(n) for b in range(0, meta.piece_size(i), BLOCK_SIZE))
    full = Bitfield.full(n).to_bytes()
    seeder = wire_record(ext + msg.bitfield(full) + msg.simple(msg.UNCHOKE)) + bytes([0xF5, 0]) + wire_record(blocks)
    leecher = (wire_record(ext + msg.simple(msg.INTERESTED)) + bytes([0xF0, 0])
               + wire_record(b"".join(msg.request(i, 0, BLOCK_SIZE) for i in range(n)) + msg.cancel(0, 0, BLOCK_SIZE))
               + bytes([0xF2, 7, 0xF1, 0]) + wire_record(msg.KEEPALIVE + msg.have(1)))
    fast = wire_record(msg.simple(msg.HAVE_ALL) + msg.allowed_fast(2) + msg.suggest(3) + msg.simple(msg.UNCHOKE)
                       + msg.simple(msg.CHOKE)) + bytes([0xF3, 0, 0xF5, 0]) + wire_record(msg.reject(2, 0, BLOCK_SIZE))
    meta_pex = wire_record(ext + msg.extended(2, bencode.encode({b"msg_type": 0, b"piece": 0}))
                           + msg.extended(1, bencode.encode({b"added": b"\x0a\x00\x00\x01\x1a\xe1", b"dropped": b""}))
                           + msg.extended(9, b"x") + msg.port(6881) + harness_frame_unknown())
    flood = wire_record(msg.KEEPALIVE * 64 + msg.have(1) * 64)
    return [b"\x03" + seeder, b"\x02" + seeder, b"\x0b" + leecher, b"\x09" + leecher, b"\x01" + fast,
            b"\x1f" + fast, b"\x06" + meta_pex, b"\x00" + flood, b"\x0e" + seeder + bytes([0xF4, 1])]


def harness_frame_unknown() -> bytes:
    """A message of an id nobody defines (ignored, within a budget)."""
    return frame(0x42, b"?")




# --- uTP (BEP 29): the packet parser and one connection's state machine ------------------------------------


def check_utp_packet(data: bytes) -> utp_packet.Packet | None:
    """``packet.parse``: a Packet whose fields are in range and that builds back to a packet parsing the
    same, or PacketError. The selective ack never exceeds ``MAX_SACK_BYTES`` (an absurd one is cut)."""
    try:
        p = utp_packet.parse(data)
    except utp_packet.PacketError as exc:
        assert "\n" not in str(exc)
        return None
    assert 0 <= p.type <= utp_packet.ST_SYN and len(p.sack) <= utp_packet.MAX_SACK_BYTES
    assert len(p.payload) <= len(data) - utp_packet.HEADER_SIZE
    again = utp_packet.parse(utp_packet.build(p.type, p.connection_id, p.timestamp, p.timestamp_diff, p.wnd_size,
                                              p.seq_nr, p.ack_nr, p.payload, p.sack))
    assert again == p, (again, p)
    return p


def utp_datagrams(data: bytes) -> Iterator[bytes]:
    """Split fuzz input into datagrams: a 2-byte big-endian length, then that many bytes (at most 64)."""
    pos = 0
    for _ in range(64):
        if pos + 2 > len(data):
            return
        (n,) = struct.unpack_from(">H", data, pos)
        pos += 2
        yield data[pos : pos + n]
        pos += n


def check_utp_connection(data: bytes) -> None:
    """Datagrams fed to a connected responder (after an honest SYN), with time passing between them: never
    an exception, and the buffers stay within their caps whatever the peer sends."""
    sent: list[bytes] = []
    now = 1000.0
    conn = utp_conn.UTPConnection(sent.append, 0x1235, 0x1234, now)
    syn = utp_packet.parse(utp_packet.build(utp_packet.ST_SYN, 0x1234, 0, 0, 65536, 0xFFF0, 0))
    conn.accept(syn, now)
    conn.write(b"x" * 5000, now)
    for i, datagram in enumerate(utp_datagrams(data)):
        p = check_utp_packet(datagram)
        now += (i % 7) * 0.1
        if p is not None:
            p.connection_id = conn.recv_id
            conn.on_packet(p, now)
        conn.tick(now)
        conn.flush_ack()
        assert len(conn.reorder) <= utp_conn.MAX_REORDER
        assert conn.reorder_bytes == sum(map(len, conn.reorder.values()))
        assert len(conn.recv_buf) + conn.reorder_bytes <= utp_conn.RECV_WINDOW + 2 * utp_conn.MAX_PACKET
        assert len(conn.recv_buf) <= utp_conn.RECV_WINDOW + 2 * utp_conn.MAX_PACKET
        assert len(conn.send_buf) <= utp_conn.SEND_BUFFER
        assert conn.in_flight >= 0 and len(conn.outbuf) <= 0x8000
        assert all(len(d) <= utp_conn.MAX_PACKET for d in sent)
        sent.clear()
        if conn.finished:
            break
    conn.read(1 << 20, now)


def check_utp(data: bytes) -> None:
    """Both: the input as one datagram, then as a stream of datagrams for a connection."""
    check_utp_packet(data)
    check_utp_connection(data)


def utp_seeds() -> list[bytes]:
    """Honest packets: data in order and out of order, acks with selective acks, FIN, RESET, a SYN again."""
    b = utp_packet.build
    def frame(*packets: bytes) -> bytes:
        return b"".join(struct.pack(">H", len(p)) + p for p in packets)
    data = [b(utp_packet.ST_DATA, 0x1235, 1, 2, 65536, (0xFFF1 + i) & 0xFFFF, 0, b"%d" % i * 50) for i in range(20)]
    return [
        frame(*data),
        frame(*reversed(data)),
        frame(data[0], data[2], data[3], data[4], b(utp_packet.ST_STATE, 0x1235, 1, 2, 65536, 0xFFF1, 0,
                                                   sack=b"\x07\x00\x00\x00"), data[1]),
        frame(*data[:3], b(utp_packet.ST_FIN, 0x1235, 1, 2, 65536, 0xFFF4, 0)),
        frame(b(utp_packet.ST_RESET, 0x1235, 0, 0, 0, 0, 0)),
        frame(b(utp_packet.ST_SYN, 0x1234, 0, 0, 65536, 0xFFF0, 0)),
        b(utp_packet.ST_STATE, 0x1235, 0, 0, 0, 0, 0, sack=b"\xff" * 252),
    ]
