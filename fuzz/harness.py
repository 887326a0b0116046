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

import ntpath
import posixpath
import struct
import unicodedata
from collections.abc import Iterator

from torrentcore import bencode, metainfo
from torrentcore.bitfield import Bitfield
from torrentcore.errors import BencodeError, MetainfoError, ProtocolError
from torrentcore.peer import encryption as mse
from torrentcore.peer import messages as msg
from torrentcore.peer.connection import MAX_MESSAGE, Connection
from torrentcore.tracker import AnnounceRequest, AnnounceResponse, TrackerError, TrackerTiers
from torrentcore.tracker import http as tracker_http
from torrentcore.tracker import peers as tracker_peers
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
