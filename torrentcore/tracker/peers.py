"""Peer lists as trackers send them: compact IPv4 (BEP 23), compact IPv6 (BEP 7), dictionaries (BEP 3).

Every function returns ``(host, port)`` tuples with ``host`` a normalised IP
literal (``"10.0.0.1"``, ``"2001:db8::1"``); only the dictionary form may also
carry a host name. Compact lists whose length is not a multiple of the entry
size are garbage and raise :class:`~torrentcore.errors.TrackerError`.

A lying tracker gains little: entries with port 0 or an address no peer can
have (unspecified ``0.0.0.0``/``::``, multicast, IPv4 broadcast and the reserved
240/4) are dropped, and at most :data:`MAX_PEERS` entries of one reply are read.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
from collections.abc import Iterable
from typing import Any

from ..errors import TrackerError

__all__ = [
    "COMPACT_V4_SIZE",
    "COMPACT_V6_SIZE",
    "dedupe_peers",
    "normalise_host",
    "parse_compact",
    "parse_compact_v4",
    "parse_compact_v6",
    "parse_peer_dicts",
]

COMPACT_V4_SIZE = 6
COMPACT_V6_SIZE = 18
#: Most peer entries read from one reply (per list); the engine remembers at most 2000 addresses anyway.
MAX_PEERS = 5000

#: A DNS name (RFC 1123 labels). A pattern, compiled (and cached by ``re``) when first used, not at import.
_HOSTNAME = (
    r"^(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


def _ip_text(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """Text form of ``ip``; an IPv4-mapped IPv6 address becomes plain IPv4."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _bogus(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """An address no peer can listen on (dialling ``0.0.0.0`` would even reach this very host)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified or ip.is_multicast:
        return True
    return isinstance(ip, ipaddress.IPv4Address) and ip.is_reserved  # 240/4, 255.255.255.255 included


def parse_compact(data: bytes, size: int = COMPACT_V4_SIZE, limit: int = MAX_PEERS) -> list[tuple[str, int]]:
    """Parse a compact peer string of ``size``-byte entries (6: IPv4, 18: IPv6).

    Entries with port 0 or a bogus address are dropped; only the first ``limit``
    entries are read; duplicates are kept (see :func:`dedupe_peers`).
    """
    if size not in (COMPACT_V4_SIZE, COMPACT_V6_SIZE):
        raise ValueError(f"compact peer entries are 6 or 18 bytes, not {size}")
    if len(data) % size:
        raise TrackerError(f"compact peer list of {len(data)} bytes is not a multiple of {size}")
    family = socket.AF_INET if size == COMPACT_V4_SIZE else socket.AF_INET6
    addr_len = size - 2
    peers: list[tuple[str, int]] = []
    view = memoryview(data)
    for off in range(0, min(len(data), max(0, limit) * size), size):
        (port,) = struct.unpack_from(">H", view, off + addr_len)
        if port == 0:
            continue
        raw = bytes(view[off : off + addr_len])
        if family == socket.AF_INET:
            ip = ipaddress.IPv4Address(raw)
            if _bogus(ip):
                continue
            host = socket.inet_ntop(family, raw)
        else:
            ip6 = ipaddress.IPv6Address(raw)
            if _bogus(ip6):
                continue
            host = _ip_text(ip6)
        peers.append((host, port))
    return peers


def parse_compact_v4(data: bytes) -> list[tuple[str, int]]:
    """Parse a BEP 23 compact IPv4 peer string (6 bytes per peer)."""
    return parse_compact(data, COMPACT_V4_SIZE)


def parse_compact_v6(data: bytes) -> list[tuple[str, int]]:
    """Parse a BEP 7 compact IPv6 peer string (18 bytes per peer)."""
    return parse_compact(data, COMPACT_V6_SIZE)


def normalise_host(host: str | bytes) -> str | None:
    """Return ``host`` as a normalised IP literal or lower-case host name, or None if invalid."""
    if isinstance(host, (bytes, bytearray)):
        try:
            host = bytes(host).decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(host, str):
        return None
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return None if _bogus(ip) else _ip_text(ip)
    if re.match(_HOSTNAME, host) and not host.replace(".", "").isdigit():
        return host.rstrip(".").lower()
    return None


def parse_peer_dicts(items: Iterable[Any], limit: int = MAX_PEERS) -> list[tuple[str, int]]:
    """Parse the BEP 3 list-of-dictionaries peer form, skipping invalid entries.

    Each entry needs ``ip`` (IP literal or host name, not a bogus address) and
    ``port`` (1..65535); ``peer id`` is ignored. Only the first ``limit`` entries
    are looked at.
    """
    peers: list[tuple[str, int]] = []
    for n, item in enumerate(items):
        if n >= limit:
            break
        if not isinstance(item, dict):
            continue
        port = item.get(b"port")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port <= 0xFFFF:
            continue
        host = normalise_host(item.get(b"ip", b""))
        if host is None:
            continue
        peers.append((host, port))
    return peers


def dedupe_peers(peers: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """Drop duplicates and port-0 entries, keeping the first occurrence's order."""
    seen: set[tuple[str, int]] = set()
    out: list[tuple[str, int]] = []
    for peer in peers:
        if peer[1] == 0 or peer in seen:
            continue
        seen.add(peer)
        out.append(peer)
    return out
