"""UDP tracker client (BEP 15, with the BEP 41 URL-data option).

An announce is a connect exchange (skipped while a connection id younger than
60 s is cached for the same address) followed by an announce exchange. Each
exchange retransmits its request after ``base_timeout * 2**n`` seconds, for
``n`` up to ``max_retries`` (BEP 15 says 15 s and up to 8 retransmissions,
which is an hour; the defaults here stop after 15 + 30 + 60 s), and the
``timeout`` argument of :meth:`UDPTracker.announce` is a hard cap on the whole
call. Replies with the wrong transaction id or from another address are ignored
and the wait goes on. A connection id is not renewed in the middle of an
exchange; if a tracker rejects a cached id with an error, the client connects
again once and repeats the announce. Name resolution (``getaddrinfo``) is done by the
(gevent-patched) resolver and is not bounded here.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import struct
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import structlog

from ..errors import TrackerError
from . import AnnounceRequest, AnnounceResponse
from .peers import COMPACT_V4_SIZE, COMPACT_V6_SIZE, dedupe_peers, parse_compact

__all__ = [
    "ACTION_ANNOUNCE",
    "ACTION_CONNECT",
    "ACTION_ERROR",
    "CONNECTION_TTL",
    "EVENT_CODES",
    "PROTOCOL_ID",
    "RECV_BUFFER",
    "UDPTracker",
]

log = structlog.get_logger(__name__)

PROTOCOL_ID = 0x41727101980
ACTION_CONNECT = 0
ACTION_ANNOUNCE = 1
ACTION_SCRAPE = 2
ACTION_ERROR = 3
#: BEP 15 event numbers.
EVENT_CODES = {"": 0, "completed": 1, "started": 2, "stopped": 3}
#: A connection id may be used for one minute after it was received.
CONNECTION_TTL = 60.0
#: Largest datagram we accept.
RECV_BUFFER = 64 * 1024
_BEP41_URL_DATA = 2
_MAX_URL_DATA = 1024
_MAX_TEXT = 300
_U64 = 2**64 - 1
_I32 = 2**31 - 1


class _ErrorReply(Exception):
    """The tracker answered with action 3 (error)."""


def _text(raw: bytes) -> str:
    text = " ".join(raw.rstrip(b"\0").decode("utf-8", errors="replace").split())
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."


def _same_address(a: Any, b: Any) -> bool:
    """Whether two socket addresses name the same IP and port (IPv6 scope ids ignored)."""
    try:
        return a[1] == b[1] and ipaddress.ip_address(a[0].split("%")[0]) == ipaddress.ip_address(
            b[0].split("%")[0]
        )
    except (ValueError, IndexError, TypeError, AttributeError):
        return False


def _url_data_option(path: str) -> bytes:
    """BEP 41: the announce URL's path and query as URLData options (255 bytes each)."""
    raw = path.encode("utf-8")[:_MAX_URL_DATA]
    return b"".join(
        bytes((_BEP41_URL_DATA, len(chunk))) + chunk
        for chunk in (raw[i : i + 255] for i in range(0, len(raw), 255))
    )


class UDPTracker:
    """Client for one ``udp://host:port[/path]`` announce URL.

    ``base_timeout`` and ``max_retries`` set the retransmission schedule of each
    exchange; ``clock`` (monotonic seconds) is what the 60 s lifetime of a
    connection id is measured with.
    """

    def __init__(
        self,
        url: str,
        *,
        base_timeout: float = 15.0,
        max_retries: int = 2,
        connection_ttl: float = CONNECTION_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise TrackerError(f"tracker {url}: invalid URL ({exc})") from None
        if parts.scheme.lower() != "udp" or not parts.hostname:
            raise TrackerError(f"tracker {url}: not a udp:// URL with a host")
        if not port:
            raise TrackerError(f"tracker {url}: a udp:// URL needs a port")
        self.url = url
        self.host = parts.hostname
        self.port = port
        self.base_timeout = float(base_timeout)
        self.max_retries = max(0, int(max_retries))
        self.connection_ttl = float(connection_ttl)
        self._clock = clock
        request = parts.path + (f"?{parts.query}" if parts.query else "")
        self._url_data = _url_data_option(request) if request not in ("", "/") else b""
        #: (address, connection id, clock() when received)
        self._conn: tuple[tuple[str, int], int, float] | None = None
        self._log = log.bind(tracker=url)

    def __repr__(self) -> str:
        return f"UDPTracker({self.url!r})"

    @property
    def connection_id(self) -> int | None:
        """The cached connection id while it is still valid, else None."""
        conn = self._conn
        if conn is not None and 0 <= self._clock() - conn[2] < self.connection_ttl:
            return conn[1]
        return None

    def forget_connection(self) -> None:
        """Drop the cached connection id so the next announce connects again."""
        self._conn = None

    def announce(self, req: AnnounceRequest, timeout: float = 15.0) -> AnnounceResponse:
        """Announce ``req``; return the parsed reply or raise :class:`TrackerError`."""
        deadline = time.monotonic() + timeout
        log_ = self._log.bind(announce_event=req.event or "none", info_hash=bytes(req.info_hash).hex())
        family, sockaddr = self._resolve()
        key = (str(sockaddr[0]), int(sockaddr[1]))
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as exc:
            raise TrackerError(f"tracker {self.url}: cannot open a UDP socket ({exc.strerror or exc})") from None
        with sock:
            try:
                sock.connect(sockaddr)
            except OSError as exc:
                raise TrackerError(f"tracker {self.url}: cannot reach {key[0]} ({exc.strerror or exc})") from None
            conn_id, reused = self._cached_connection(key)
            if conn_id is None:
                conn_id = self._connect(sock, sockaddr, key, deadline)
            try:
                result = self._announce(sock, sockaddr, conn_id, req, deadline)
            except _ErrorReply as exc:
                self._conn = None
                if not reused:
                    raise TrackerError(f"tracker {self.url} failed: {exc}") from None
                # The cached id may have been dropped by the tracker (restart): reconnect once.
                log_.debug("error with a reused connection id; reconnecting", error=str(exc))
                conn_id = self._connect(sock, sockaddr, key, deadline)
                try:
                    result = self._announce(sock, sockaddr, conn_id, req, deadline)
                except _ErrorReply as exc2:
                    self._conn = None
                    raise TrackerError(f"tracker {self.url} failed: {exc2}") from None
        log_.debug(
            "announced", interval=result.interval, peers=len(result.peers),
            complete=result.complete, incomplete=result.incomplete,
        )
        return result

    # -- internals -----------------------------------------------------------------

    def _resolve(self) -> tuple[socket.AddressFamily, Any]:
        try:
            infos = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_DGRAM)
        except (OSError, UnicodeError) as exc:
            raise TrackerError(f"tracker {self.url}: cannot resolve {self.host} ({exc})") from None
        for family, _type, _proto, _name, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6):
                return family, sockaddr
        raise TrackerError(f"tracker {self.url}: {self.host} has no IPv4 or IPv6 address")

    def _cached_connection(self, key: tuple[str, int]) -> tuple[int | None, bool]:
        conn = self._conn
        if conn is not None and conn[0] == key and 0 <= self._clock() - conn[2] < self.connection_ttl:
            return conn[1], True
        return None, False

    def _connect(self, sock: socket.socket, sockaddr: Any, key: tuple[str, int], deadline: float) -> int:
        tid = secrets.randbits(32)
        packet = struct.pack(">QII", PROTOCOL_ID, ACTION_CONNECT, tid)
        try:
            reply = self._exchange(sock, sockaddr, packet, tid, ACTION_CONNECT, deadline, "connect")
        except _ErrorReply as exc:
            raise TrackerError(f"tracker {self.url} failed: {exc}") from None
        if len(reply) < 16:
            raise TrackerError(f"tracker {self.url}: connect reply of {len(reply)} bytes is too short")
        (conn_id,) = struct.unpack_from(">Q", reply, 8)
        self._conn = (key, conn_id, self._clock())
        return conn_id

    def _announce(
        self, sock: socket.socket, sockaddr: Any, conn_id: int, req: AnnounceRequest, deadline: float
    ) -> AnnounceResponse:
        tid = secrets.randbits(32)
        numwant = int(req.numwant)
        packet = struct.pack(
            ">QII20s20sQQQIIIiH",
            conn_id,
            ACTION_ANNOUNCE,
            tid,
            bytes(req.info_hash),
            bytes(req.peer_id),
            min(max(0, int(req.downloaded)), _U64),
            min(max(0, int(req.left)), _U64),
            min(max(0, int(req.uploaded)), _U64),
            EVENT_CODES.get(req.event, 0),
            0,  # IP address: the sender's
            int(req.key) & 0xFFFFFFFF,
            -1 if numwant < 0 else min(numwant, _I32),
            int(req.port) & 0xFFFF,
        ) + self._url_data
        reply = self._exchange(sock, sockaddr, packet, tid, ACTION_ANNOUNCE, deadline, "announce")
        if len(reply) < 20:
            raise TrackerError(
                f"tracker {self.url}: announce reply of {len(reply)} bytes is too short"
                " (torrent not served by this tracker?)"
            )
        interval, leechers, seeders = struct.unpack_from(">iii", reply, 8)
        if interval <= 0:
            raise TrackerError(f"tracker {self.url}: announce reply has an invalid interval ({interval})")
        size = COMPACT_V6_SIZE if sock.family == socket.AF_INET6 else COMPACT_V4_SIZE
        try:
            peers = parse_compact(reply[20:], size)  # raises TrackerError on a bad length
        except TrackerError as exc:
            raise TrackerError(f"tracker {self.url}: {exc}") from None
        return AnnounceResponse(
            interval=interval,
            peers=dedupe_peers(peers),
            complete=seeders if seeders >= 0 else None,
            incomplete=leechers if leechers >= 0 else None,
            url=self.url,
        )

    def _exchange(
        self,
        sock: socket.socket,
        sockaddr: Any,
        packet: bytes,
        tid: int,
        action: int,
        deadline: float,
        what: str,
    ) -> bytes:
        """Send ``packet`` (retransmitting per BEP 15) until the matching reply arrives.

        Returns the whole reply datagram. Raises :class:`_ErrorReply` for an error
        reply and :class:`TrackerError` for a timeout, a socket error or a reply
        with the right transaction id but an unexpected action.
        """
        start = time.monotonic()
        attempts = 0
        while attempts <= self.max_retries:
            now = time.monotonic()
            if now >= deadline:
                break
            wait_until = min(now + self.base_timeout * (2**attempts), deadline)
            attempts += 1
            try:
                sock.send(packet)
            except OSError as exc:
                raise TrackerError(f"tracker {self.url}: {what} failed ({exc.strerror or exc})") from None
            while True:
                remaining = wait_until - time.monotonic()
                if remaining <= 0:
                    break
                sock.settimeout(remaining)
                try:
                    data, source = sock.recvfrom(RECV_BUFFER)
                except TimeoutError:
                    break
                except OSError as exc:
                    raise TrackerError(
                        f"tracker {self.url}: {what} failed ({exc.strerror or exc})"
                    ) from None
                if not _same_address(source, sockaddr):
                    self._log.debug("ignoring datagram from another address", source=str(source[:2]))
                    continue
                if len(data) < 8:
                    self._log.debug("ignoring short datagram", size=len(data))
                    continue
                r_action, r_tid = struct.unpack_from(">II", data)
                if r_tid != tid:
                    self._log.debug("ignoring datagram with another transaction id")
                    continue
                if r_action == ACTION_ERROR:
                    raise _ErrorReply(_text(data[8:]) or "(no message)")
                if r_action != action:
                    raise TrackerError(
                        f"tracker {self.url}: {what} reply has action {r_action}, expected {action}"
                    )
                return data
            self._log.debug("no reply; retransmitting", request=what, attempt=attempts)
        waited = time.monotonic() - start
        raise TrackerError(
            f"tracker {self.url}: no {what} reply after {waited:.1f} s ({attempts} attempt"
            f"{'s' if attempts != 1 else ''})"
        )
