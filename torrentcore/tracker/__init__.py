"""Tracker clients: HTTP(S) (BEP 3, 7, 23), UDP (BEP 15, 41) and multi-tracker tiers (BEP 12).

One announce to one tracker::

    resp = announce("udp://tracker.example:6969/announce", AnnounceRequest(info_hash, peer_id, 6881))

``announce`` keeps one client object per URL in a small module-level cache, so an
HTTP tracker's ``tracker id`` is sent back and a UDP tracker's connection id is
reused for up to 60 s. A torrent with an ``announce-list`` uses
:class:`TrackerTiers`, which owns its own client per URL.

Every failure (unreachable tracker, timeout, ``failure reason``, garbage reply,
unsupported scheme) is a :class:`~torrentcore.errors.TrackerError` whose text is
one line naming the tracker.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from ..errors import TrackerError

__all__ = [
    "EVENTS",
    "AnnounceRequest",
    "AnnounceResponse",
    "HTTPTracker",
    "Tracker",
    "TrackerError",
    "TrackerTiers",
    "UDPTracker",
    "announce",
    "make_tracker",
    "tracker_for_url",
]

#: The announce events BEP 3 defines ("" is a regular, periodic announce).
EVENTS = ("", "started", "completed", "stopped")


@dataclass
class AnnounceRequest:
    """What we tell a tracker about ourselves and one torrent."""

    info_hash: bytes  # 20 bytes
    peer_id: bytes  # 20 bytes
    port: int
    uploaded: int = 0
    downloaded: int = 0
    left: int = 0
    event: str = ""  # "", "started", "completed", "stopped"
    numwant: int = 50
    key: int = 0  # random 32-bit, stable per session
    #: MSE/PE (HTTP trackers): we can encrypt (``supportcrypto=1``), or accept only encrypted peers
    #: (``requirecrypto=1``, which asks the tracker for peers that can encrypt).
    supportcrypto: bool = False
    requirecrypto: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.info_hash, (bytes, bytearray)) or len(self.info_hash) != 20:
            raise ValueError("info_hash must be 20 bytes")
        if not isinstance(self.peer_id, (bytes, bytearray)) or len(self.peer_id) != 20:
            raise ValueError("peer_id must be 20 bytes")
        if not 0 <= int(self.port) <= 0xFFFF:
            raise ValueError(f"port {self.port} is out of range")
        if self.event not in EVENTS:
            raise ValueError(f"unknown announce event {self.event!r}")


@dataclass
class AnnounceResponse:
    """A tracker's answer to one announce."""

    interval: int  # seconds
    min_interval: int | None = None
    #: IPv4 and IPv6 (host, port), deduplicated, port 0 dropped. ``host`` is normally an
    #: IP literal; the non-compact (BEP 3 dictionary) form may carry a host name.
    peers: list[tuple[str, int]] = field(default_factory=list)
    complete: int | None = None  # seeders
    incomplete: int | None = None  # leechers
    warning: str | None = None
    tracker_id: bytes | None = None
    url: str = ""  # which tracker answered


@runtime_checkable
class Tracker(Protocol):
    """A client for one tracker URL (``HTTPTracker`` or ``UDPTracker``)."""

    url: str

    def announce(self, req: AnnounceRequest, timeout: float = 15.0) -> AnnounceResponse:
        """Announce ``req``; raise :class:`TrackerError` on any failure."""
        ...


# The clients import the dataclasses above from this package, so they come after them.
from .http import HTTPTracker  # noqa: E402
from .udp import UDPTracker  # noqa: E402


def make_tracker(url: str) -> Tracker:
    """Return a new client for ``url`` (``http``/``https`` or ``udp``).

    Raises :class:`TrackerError` for any other scheme or a URL without a host.
    """
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a bad port
    except ValueError as exc:
        raise TrackerError(f"tracker {url}: invalid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return HTTPTracker(url)
    if scheme == "udp":
        return UDPTracker(url)
    raise TrackerError(f"tracker {url}: unsupported scheme {scheme or '(none)'!r}")


_CACHE_SIZE = 256
_cache: OrderedDict[str, Tracker] = OrderedDict()
_cache_lock = threading.Lock()


def tracker_for_url(url: str) -> Tracker:
    """Return the shared client for ``url`` from a small LRU cache (creating it if needed)."""
    with _cache_lock:
        client = _cache.get(url)
        if client is not None:
            _cache.move_to_end(url)
            return client
    client = make_tracker(url)
    with _cache_lock:
        existing = _cache.get(url)
        if existing is not None:
            return existing
        _cache[url] = client
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return client


def announce(url: str, req: AnnounceRequest, timeout: float = 15.0) -> AnnounceResponse:
    """Announce ``req`` to the single tracker at ``url`` (``http``, ``https`` or ``udp``).

    ``timeout`` bounds the whole exchange. Raises :class:`TrackerError` on a
    ``failure reason``, a garbage reply, a timeout, an unreachable tracker or an
    unsupported scheme.
    """
    return tracker_for_url(url).announce(req, timeout)


from .tiers import TrackerTiers  # noqa: E402
