"""Peer wire messages (BEP 3, with the BEP 10 extension message).

Each message on the wire is a 4-byte big-endian length, then (unless the
length is 0, a keep-alive) a 1-byte id and a payload. This module builds
messages as bytes and parses payloads; it does no I/O.
"""

from __future__ import annotations

import struct

from ..errors import ProtocolError

PROTOCOL = b"BitTorrent protocol"
HANDSHAKE_LEN = 1 + len(PROTOCOL) + 8 + 20 + 20

# Message ids (BEP 3, BEP 10).
CHOKE = 0
UNCHOKE = 1
INTERESTED = 2
NOT_INTERESTED = 3
HAVE = 4
BITFIELD = 5
REQUEST = 6
PIECE = 7
CANCEL = 8
PORT = 9
EXTENDED = 20

NAMES = {
    CHOKE: "choke",
    UNCHOKE: "unchoke",
    INTERESTED: "interested",
    NOT_INTERESTED: "not interested",
    HAVE: "have",
    BITFIELD: "bitfield",
    REQUEST: "request",
    PIECE: "piece",
    CANCEL: "cancel",
    PORT: "port",
    EXTENDED: "extended",
}

#: Reserved-byte bit for the extension protocol (BEP 10): byte 5, 0x10.
RESERVED_EXTENSIONS = 5, 0x10
#: Reserved-byte bit for the DHT (BEP 5) and the fast extension (BEP 6).
RESERVED_DHT = 7, 0x01
RESERVED_FAST = 7, 0x04

#: Largest block a peer may ask for (libtorrent, aria2 and Transmission agree on 16 KiB; allow 128 KiB).
MAX_REQUEST_LENGTH = 128 * 1024

_LEN = struct.Struct(">I")
_HAVE = struct.Struct(">IBI")
_REQ = struct.Struct(">IBIII")
_PIECE_HDR = struct.Struct(">IBII")
_TRIPLE = struct.Struct(">III")

KEEPALIVE = b"\x00\x00\x00\x00"


def handshake(info_hash: bytes, peer_id: bytes, reserved: bytes) -> bytes:
    """The 68-byte handshake."""
    return bytes([len(PROTOCOL)]) + PROTOCOL + reserved + info_hash + peer_id


def parse_handshake(data: bytes) -> tuple[bytes, bytes, bytes]:
    """Return ``(reserved, info_hash, peer_id)``; raise ProtocolError on a foreign protocol."""
    if len(data) != HANDSHAKE_LEN or data[0] != len(PROTOCOL) or data[1:20] != PROTOCOL:
        raise ProtocolError("not a BitTorrent handshake")
    return data[20:28], data[28:48], data[48:68]


def reserved_bytes(*bits: tuple[int, int]) -> bytes:
    """Reserved bytes with the given ``(byte, mask)`` bits set."""
    out = bytearray(8)
    for byte, mask in bits:
        out[byte] |= mask
    return bytes(out)


def has_bit(reserved: bytes, bit: tuple[int, int]) -> bool:
    """True if the reserved bytes have ``bit`` set."""
    return bool(reserved[bit[0]] & bit[1])


def simple(msg_id: int) -> bytes:
    """A message with no payload (choke, unchoke, interested, not interested)."""
    return b"\x00\x00\x00\x01" + bytes([msg_id])


def have(index: int) -> bytes:
    """HAVE ``index``."""
    return _HAVE.pack(5, HAVE, index)


def bitfield(bits: bytes) -> bytes:
    """BITFIELD with the given wire bytes."""
    return _LEN.pack(1 + len(bits)) + bytes([BITFIELD]) + bits


def request(index: int, begin: int, length: int) -> bytes:
    """REQUEST a block."""
    return _REQ.pack(13, REQUEST, index, begin, length)


def cancel(index: int, begin: int, length: int) -> bytes:
    """CANCEL a block request."""
    return _REQ.pack(13, CANCEL, index, begin, length)


def piece_header(index: int, begin: int, length: int) -> bytes:
    """The header of a PIECE message carrying ``length`` bytes (the data follows)."""
    return _PIECE_HDR.pack(9 + length, PIECE, index, begin)


def extended(ext_id: int, payload: bytes) -> bytes:
    """An extension-protocol message (BEP 10); id 0 is the extension handshake."""
    return _LEN.pack(2 + len(payload)) + bytes([EXTENDED, ext_id]) + payload


def parse_triple(payload: bytes | memoryview) -> tuple[int, int, int]:
    """The ``(index, begin, length)`` of a REQUEST or CANCEL."""
    if len(payload) != 12:
        raise ProtocolError(f"request/cancel payload of {len(payload)} bytes")
    return _TRIPLE.unpack(payload)


def parse_have(payload: bytes | memoryview) -> int:
    """The index of a HAVE."""
    if len(payload) != 4:
        raise ProtocolError(f"have payload of {len(payload)} bytes")
    return _LEN.unpack(payload)[0]
