"""Magnet URIs (BEP 9): ``magnet:?xt=urn:btih:<hash>&dn=<name>&tr=<tracker>&x.pe=<peer>``.

Parsing only; fetching the metadata from peers is the engine's job.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from .errors import MetainfoError
from .metainfo import V2_ONLY_MESSAGE


@dataclass
class Magnet:
    """What a magnet link tells us: the v1 info-hash, and optional hints."""

    info_hash: bytes
    name: str | None = None
    trackers: list[list[str]] = field(default_factory=list)
    peers: list[tuple[str, int]] = field(default_factory=list)
    exact_length: int | None = None

    @property
    def info_hash_hex(self) -> str:
        """The info-hash in lowercase hex."""
        return self.info_hash.hex()


def is_magnet(text: str) -> bool:
    """True when ``text`` looks like a magnet URI."""
    return text.lower().startswith("magnet:?")


def _btih(value: str) -> bytes:
    digest = value[len("urn:btih:") :]
    try:
        if len(digest) == 40:
            return bytes.fromhex(digest)
        if len(digest) == 32:
            return base64.b32decode(digest.upper())
    except (ValueError, binascii.Error):
        pass
    raise MetainfoError(f"invalid info-hash in magnet link: {digest!r}")


def _peer(value: str) -> tuple[str, int] | None:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        return None
    return host.strip("[]"), int(port)


def parse_magnet(uri: str) -> Magnet:
    """Parse a magnet URI; raise :class:`MetainfoError` if it has no usable v1 info-hash."""
    parts = urlsplit(uri.strip())
    if parts.scheme.lower() != "magnet":
        raise MetainfoError("not a magnet link")
    params = parse_qsl(parts.query, keep_blank_values=False)
    info_hash = None
    has_v2 = False
    name = None
    trackers: list[list[str]] = []
    peers: list[tuple[str, int]] = []
    length = None
    for key, value in params:
        key = key.lower()
        if key == "xt" or key.startswith("xt."):
            if value.lower().startswith("urn:btih:"):
                info_hash = _btih(value)
            elif value.lower().startswith("urn:btmh:"):
                has_v2 = True
        elif key == "dn":
            name = value
        elif key == "tr" or key.startswith("tr."):
            url = value.strip()
            if "://" in url and all(url not in tier for tier in trackers):
                trackers.append([url])
        elif key == "x.pe":
            peer = _peer(value)
            if peer:
                peers.append(peer)
        elif key == "xl" and value.isdigit():
            length = int(value)
    if info_hash is None:
        raise MetainfoError(V2_ONLY_MESSAGE if has_v2 else "magnet link has no 'xt=urn:btih:' info-hash")
    return Magnet(info_hash, name, trackers, peers, length)
