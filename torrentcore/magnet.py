"""Magnet URIs (BEP 9): ``magnet:?xt=urn:btih:<hash>&dn=<name>&tr=<tracker>&x.pe=<peer>&ws=<web seed>``.

``ws=`` (BEP 19) names a web seed: only ``http://`` and ``https://`` URLs are kept (others are dropped),
each once, at most :data:`MAX_WEB_SEEDS`; they are used beside the metadata's own once it arrives.

BitTorrent v2 links (BEP 52) give ``xt=urn:btmh:1220<64 hex>`` (a multihash: 0x12 SHA-256, 0x20 bytes)
instead of, or for a hybrid beside, ``urn:btih``.

Parsing only; fetching the metadata from peers is the engine's job.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from .errors import MetainfoError


@dataclass
class Magnet:
    """What a magnet link tells us: the info-hash(es), and optional hints.

    ``info_hash`` is the 20-byte hash used on the wire: the v1 one, or for a v2-only link the v2 hash
    truncated to 20 bytes; ``info_hash_v2`` is the full SHA-256 when the link has ``urn:btmh``.
    """

    info_hash: bytes
    name: str | None = None
    trackers: list[list[str]] = field(default_factory=list)
    peers: list[tuple[str, int]] = field(default_factory=list)
    exact_length: int | None = None
    info_hash_v2: bytes | None = None
    #: BEP 19 ``ws=`` web seeds (http/https only, at most :data:`MAX_WEB_SEEDS`).
    web_seeds: list[str] = field(default_factory=list)

    @property
    def info_hash_hex(self) -> str:
        """The info-hash in lowercase hex."""
        return self.info_hash.hex()


#: What a usable magnet link looks like, for error messages.
EXPECTED = "expected magnet:?xt=urn:btih:<40 hex or 32 base32 characters>"
#: Characters of a malformed link quoted in an error message.
SHOWN = 100
#: Most ``ws=`` web seeds kept from one link (as many as a torrent's own that are used: webseed.MAX_WEB_SEEDS).
MAX_WEB_SEEDS = 8
#: Longest ``ws=`` URL kept (characters): longer is no mirror's address.
MAX_WEB_SEED_URL = 2048


def is_magnet(text: str) -> bool:
    """True when ``text`` is meant as a magnet URI: anything starting with ``magnet:`` (any case).

    Near-magnets (``magnet:xt=...`` without the ``?``, a bare ``magnet:``) count too, so that
    :func:`parse_magnet` reports them as malformed links instead of the caller looking for a file.
    """
    return text.lstrip().lower().startswith("magnet:")


def _shown(uri: str) -> str:
    """``uri`` quoted for an error message, cut to :data:`SHOWN` characters."""
    return repr(uri if len(uri) <= SHOWN else uri[:SHOWN] + "...")


def _malformed(uri: str, why: str) -> MetainfoError:
    return MetainfoError(f"malformed magnet link {_shown(uri)}: {why} ({EXPECTED})")


def _btih(uri: str, value: str) -> bytes:
    digest = value[len("urn:btih:") :]
    try:
        if len(digest) == 40:
            return bytes.fromhex(digest)
        if len(digest) == 32:
            return base64.b32decode(digest.upper())
    except (ValueError, binascii.Error):
        pass
    raise _malformed(uri, f"invalid info-hash {_shown(digest)}")


def _btmh(uri: str, value: str) -> bytes:
    digest = value[len("urn:btmh:") :]
    if len(digest) == 68 and digest[:4] == "1220":
        try:
            return bytes.fromhex(digest[4:])
        except ValueError:
            pass
    raise MetainfoError(f"malformed magnet link {_shown(uri)}: invalid v2 info-hash {_shown(digest)} "
                        "(expected xt=urn:btmh:1220<64 hex characters>, a SHA-256 multihash)")


def _peer(value: str) -> tuple[str, int] | None:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        return None
    return host.strip("[]"), int(port)


def parse_magnet(uri: str) -> Magnet:
    """Parse a magnet URI; raise :class:`MetainfoError` if it is malformed or has no usable info-hash.

    Every message of a malformed link names it and says what a magnet link looks like.
    """
    uri = uri.strip()
    if not is_magnet(uri):
        raise MetainfoError(f"not a magnet link: {_shown(uri)} ({EXPECTED})")
    rest = uri[len("magnet:") :]
    if not rest.startswith("?"):
        raise _malformed(uri, "the '?' after 'magnet:' is missing" if rest else "nothing follows 'magnet:'")
    query = rest[1:].partition("#")[0]  # a fragment is not part of the query
    params = parse_qsl(query, keep_blank_values=False)
    info_hash = None
    info_hash_v2 = None
    name = None
    trackers: list[list[str]] = []
    peers: list[tuple[str, int]] = []
    length = None
    web_seeds: list[str] = []
    for key, value in params:
        key = key.lower()
        if key == "xt" or key.startswith("xt."):
            if value.lower().startswith("urn:btih:"):
                info_hash = _btih(uri, value)
            elif value.lower().startswith("urn:btmh:"):
                info_hash_v2 = _btmh(uri, value)
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
        elif key == "ws" or key.startswith("ws."):
            url = value.strip()
            if (url.lower().startswith(("http://", "https://")) and len(url) <= MAX_WEB_SEED_URL
                    and url not in web_seeds and len(web_seeds) < MAX_WEB_SEEDS
                    and not any(ord(c) < 33 or c == "\x7f" for c in url)):
                web_seeds.append(url)
    if info_hash is None:
        if info_hash_v2 is None:
            raise _malformed(uri, "no 'xt=urn:btih:' or 'xt=urn:btmh:' info-hash")
        info_hash = info_hash_v2[:20]
    return Magnet(info_hash, name, trackers, peers, length, info_hash_v2, web_seeds)
