"""The uTP packet (BEP 29): a 20-byte header, a chain of extensions, the payload.

Header, big-endian::

    type (4 bits) | version (4 bits) | extension (8) | connection_id (16)
    timestamp_microseconds (32) | timestamp_difference_microseconds (32)
    wnd_size (32) | seq_nr (16) | ack_nr (16)

Extensions follow as ``next type (8) | length (8) | length bytes``; type 1 is the selective ACK, a
bitmask (the BEP says a multiple of 4 bytes; libtorrent sends other lengths too, 2 seen here) whose
bit ``i`` (least significant bit of each byte first) says that ``ack_nr + 2 + i`` was received.
Unknown extensions are skipped; libtorrent sends type 3 (a close reason) too.

:func:`parse` never raises anything but :class:`PacketError` and never reads past the datagram.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ST_DATA, ST_FIN, ST_STATE, ST_RESET, ST_SYN = range(5)
TYPE_NAMES = ("ST_DATA", "ST_FIN", "ST_STATE", "ST_RESET", "ST_SYN")
VERSION = 1
HEADER = struct.Struct(">BBHIIIHH")
HEADER_SIZE = HEADER.size  # 20
EXT_SACK = 1
#: Longest selective-ack bitmask we accept (libtorrent sends at most 32 bytes; a longer one is cut here,
#: so an absurd extension costs no more work than this).
MAX_SACK_BYTES = 32
#: Most extensions parsed in one packet (each is at least 2 bytes; more is not a real client).
MAX_EXTENSIONS = 8
SEQ_MASK = 0xFFFF


class PacketError(ValueError):
    """A datagram that is not a valid uTP packet."""


@dataclass(slots=True)
class Packet:
    """One parsed packet; ``sack`` is the selective-ack bitmask (b"" when absent)."""

    type: int
    connection_id: int
    timestamp: int
    timestamp_diff: int
    wnd_size: int
    seq_nr: int
    ack_nr: int
    sack: bytes
    payload: bytes


def parse(data: bytes) -> Packet:
    """Parse one datagram; raise :class:`PacketError` if it is not a uTP version 1 packet."""
    size = len(data)
    if size < HEADER_SIZE:
        raise PacketError(f"{size}-byte datagram is shorter than a uTP header")
    tv, ext, conn_id, ts, ts_diff, wnd, seq, ack = HEADER.unpack_from(data, 0)
    ptype, version = tv >> 4, tv & 0x0F
    if version != VERSION:
        raise PacketError(f"uTP version {version}")
    if ptype > ST_SYN:
        raise PacketError(f"unknown packet type {ptype}")
    pos = HEADER_SIZE
    sack = b""
    count = 0
    while ext:
        count += 1
        if count > MAX_EXTENSIONS:
            raise PacketError("too many extensions")
        if pos + 2 > size:
            raise PacketError("truncated extension header")
        nxt, length = data[pos], data[pos + 1]
        pos += 2
        if pos + length > size:
            raise PacketError("extension longer than the packet")
        if ext == EXT_SACK:
            if length == 0:
                raise PacketError("empty selective ack")
            sack = bytes(data[pos : pos + min(length, MAX_SACK_BYTES)])
        pos += length
        ext = nxt
    return Packet(ptype, conn_id, ts, ts_diff, wnd, seq, ack, sack, bytes(data[pos:]) if pos < size else b"")


def build(ptype: int, connection_id: int, timestamp: int, timestamp_diff: int, wnd_size: int, seq_nr: int,
          ack_nr: int, payload: bytes = b"", sack: bytes = b"") -> bytes:
    """The bytes of one packet (``sack``: a bitmask of 4..MAX_SACK_BYTES bytes, a multiple of 4, or b"")."""
    head = HEADER.pack((ptype << 4) | VERSION, EXT_SACK if sack else 0, connection_id & 0xFFFF,
                       timestamp & 0xFFFFFFFF, timestamp_diff & 0xFFFFFFFF, wnd_size & 0xFFFFFFFF,
                       seq_nr & SEQ_MASK, ack_nr & SEQ_MASK)
    if sack:
        return b"".join((head, bytes((0, len(sack))), sack, payload))
    return head + payload if payload else head


def seq_less(a: int, b: int) -> bool:
    """``a`` comes before ``b`` in the wrapping 16-bit sequence space."""
    return a != b and ((b - a) & SEQ_MASK) < 0x8000


def seq_diff(a: int, b: int) -> int:
    """``a - b`` in the wrapping sequence space, in [-32768, 32767]."""
    d = (a - b) & SEQ_MASK
    return d - 0x10000 if d >= 0x8000 else d


__all__ = ["Packet", "PacketError", "parse", "build", "seq_less", "seq_diff", "ST_DATA", "ST_FIN", "ST_STATE",
           "ST_RESET", "ST_SYN", "HEADER_SIZE", "VERSION", "MAX_SACK_BYTES", "TYPE_NAMES"]
