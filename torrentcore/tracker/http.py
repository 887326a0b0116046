"""HTTP(S) tracker client (BEP 3 announce, BEP 23 compact peers, BEP 7 ``peers6``) on :mod:`http.client`.

The query string is built here, with ``info_hash``/``peer_id`` percent-encoded
byte by byte, and the URL is requested as built: nothing is encoded twice (only
a space, a control or a non-ASCII character in a torrent's announce URL is
escaped, as a request line cannot carry one). The reply body is read in chunks
and capped (4 MiB by default) before it is decoded with
:func:`torrentcore.bencode.decode`. ``requests`` is not used: importing it cost
35-48 ms of CPU at every start of a run that announces over HTTP.

Timeouts: ``timeout`` is the socket timeout, for connecting and for each read,
and a ``gevent.Timeout`` bounds the whole call (redirects, a server that
trickles its reply a byte at a time, name resolution by the gevent-patched
resolver) to ``timeout`` seconds.

Redirects are followed by hand, at most five, and only to ``http``/``https``
URLs: a tracker that sends us to ``file://`` or ``ftp://`` gets a clear error.
A URL shown in an error about a redirect has no query (no passkeys).

HTTPS: certificates and host names are verified against certifi's CA bundle
(the system's default CAs if certifi cannot be imported); that context is made
once per process, at the first HTTPS announce.

Proxies come from the environment variables ``requests`` read:
``http_proxy``, ``https_proxy`` or else ``all_proxy`` (either case), with
``no_proxy`` naming the hosts asked directly (host names and domain
suffixes, as :mod:`urllib.request` reads it). Only ``http://`` proxies: an
``http`` tracker is asked with the absolute URL in the request line, an
``https`` one through a ``CONNECT`` tunnel, and a ``user:password`` in the
proxy URL is sent as ``Proxy-Authorization: Basic``. A SOCKS proxy is refused
with an error naming its variable, rather than silently bypassed.

Keep-alive: each :class:`HTTPTracker` keeps at most one idle connection, and
only after a reply read to its end from a server that did not say it would
close. A kept connection the server has closed meanwhile is dropped before
use; a request whose sending or status line fails on a reused connection
(the server closed it as we sent) is sent once more on a new one.

Content coding: the request asks for ``Accept-Encoding: identity``; a reply
sent ``gzip`` or ``deflate`` all the same is decoded, under the same cap on
its decoded size, so a small compressed bomb is refused.

The HTTP helpers (TLS context, proxies, the idle-connection check, content
decoding, error descriptions) are :mod:`torrentcore.tracker.http_transport`.
"""

from __future__ import annotations

import http.client
import re
import ssl
import threading
import time
import zlib
from typing import Any
from urllib.parse import quote, quote_from_bytes, unquote, urljoin, urlsplit, urlunsplit

import gevent
import structlog

from .. import __version__
from ..bencode import decode
from ..errors import BencodeError, TrackerError
from . import AnnounceRequest, AnnounceResponse
from .http_transport import (
    ContentDecoder,
    ascii_host,
    basic_auth,
    connection_dropped,
    content_decoder,
    describe,
    env_proxy,
    one_line,
    tls_context,
    url_host,
)
from .peers import dedupe_peers, parse_compact_v4, parse_compact_v6, parse_peer_dicts

__all__ = ["MAX_BODY", "MAX_REPLY_TOKENS", "HTTPTracker", "build_announce_url", "parse_announce_reply"]

log = structlog.get_logger(__name__)

#: Largest reply body we read from an HTTP tracker.
MAX_BODY = 4 * 1024 * 1024
#: Most bencoded values (keys, strings, integers, lists, dictionaries) decoded from one reply. A reply needs
#: a dozen, plus seven per peer in the dictionary form (at most MAX_PEERS = 5,000 of them are read): this
#: leaves room for 14,000. A valid 4 MiB reply of 2 million tiny values cost 24.5 s of CPU and a 197 MB
#: peak to decode; refused at this count, it costs the strict scan of its first 100,000 values.
MAX_REPLY_TOKENS = 100_000
USER_AGENT = f"torrentcore/{__version__}"
_CHUNK = 64 * 1024
_MAX_REDIRECTS = 5
#: The statuses ``requests`` followed as redirects (with a ``Location``).
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: What sending on a kept-alive connection the server closed meanwhile raises (RemoteDisconnected is both):
#: the request is sent once more, on a new connection.
_STALE = (ConnectionError, http.client.BadStatusLine)
#: A byte a request line cannot carry: escaped in a torrent's URL (``requests`` did the same).
_UNSAFE = re.compile(r"[^\x21-\x7e]")

#: What :meth:`HTTPTracker._send` returns: the connection's key (scheme, host, port, proxy), the connection
#: and the response, its body still to be read.
_Sent = tuple[tuple, http.client.HTTPConnection, http.client.HTTPResponse]

def build_announce_url(base_url: str, req: AnnounceRequest, tracker_id: bytes | None = None) -> str:
    """Return ``base_url`` with the announce query for ``req`` appended (BEP 3).

    An existing query in ``base_url`` (a passkey, say) is kept; a fragment is dropped.
    """
    parts = urlsplit(base_url)
    params = [
        ("info_hash", quote_from_bytes(bytes(req.info_hash), safe="")),
        ("peer_id", quote_from_bytes(bytes(req.peer_id), safe="")),
        ("port", str(int(req.port))),
        ("uploaded", str(max(0, int(req.uploaded)))),
        ("downloaded", str(max(0, int(req.downloaded)))),
        ("left", str(max(0, int(req.left)))),
        ("compact", "1"),
        ("numwant", str(max(0, int(req.numwant)))),
        ("key", f"{int(req.key) & 0xFFFFFFFF:08x}"),
    ]
    if req.event:
        params.append(("event", req.event))
    if req.requirecrypto:
        params.append(("requirecrypto", "1"))
    if req.supportcrypto or req.requirecrypto:
        params.append(("supportcrypto", "1"))
    if tracker_id:
        params.append(("trackerid", quote_from_bytes(tracker_id, safe="")))
    query = "&".join(f"{name}={value}" for name, value in params)
    if parts.query:
        query = f"{parts.query}&{query}"
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", query, ""))


def _optional_count(value: Any) -> int | None:
    return value if isinstance(value, int) and value >= 0 else None


def _failure_reason(body: bytes, max_size: int) -> str | None:
    """The ``failure reason`` in ``body`` if it is a bencoded dictionary that has one."""
    try:
        data = decode(body, max_size=max_size, max_tokens=MAX_REPLY_TOKENS)
    except BencodeError:
        return None
    if isinstance(data, dict) and isinstance(data.get(b"failure reason"), bytes):
        return one_line(data[b"failure reason"])
    return None


def parse_announce_reply(
    body: bytes, url: str, *, max_size: int = MAX_BODY, max_tokens: int = MAX_REPLY_TOKENS
) -> AnnounceResponse:
    """Decode an HTTP tracker's announce reply into an :class:`AnnounceResponse`.

    Raises :class:`TrackerError` for a ``failure reason`` (with its text) and for
    anything that is not a well-formed announce reply, including one of more than
    ``max_tokens`` bencoded values (the cost of decoding is bounded before it starts).
    """
    try:
        data = decode(body, max_size=max_size, max_tokens=max_tokens)
    except BencodeError as exc:
        raise TrackerError(f"tracker {url}: reply is not bencoded ({exc})") from None
    if not isinstance(data, dict):
        raise TrackerError(f"tracker {url}: reply is not a bencoded dictionary")
    if b"failure reason" in data:
        raise TrackerError(f"tracker {url} failed: {one_line(data[b'failure reason']) or '(no reason given)'}")
    interval = data.get(b"interval")
    if not isinstance(interval, int) or interval <= 0:
        raise TrackerError(f"tracker {url}: reply has no valid interval ({one_line(repr(interval))})")
    try:
        peers = _peers(data, url)
    except TrackerError as exc:
        text = str(exc)
        raise TrackerError(text if text.startswith(f"tracker {url}") else f"tracker {url}: {text}") from None
    warning = data.get(b"warning message")
    tracker_id = data.get(b"tracker id")
    return AnnounceResponse(
        interval=interval,
        min_interval=_optional_count(data.get(b"min interval")),
        peers=dedupe_peers(peers),
        complete=_optional_count(data.get(b"complete")),
        incomplete=_optional_count(data.get(b"incomplete")),
        warning=one_line(warning) if isinstance(warning, bytes) else None,
        tracker_id=tracker_id if isinstance(tracker_id, bytes) and tracker_id else None,
        url=url,
    )


def _peers(data: dict, url: str) -> list[tuple[str, int]]:
    """The ``peers`` (compact or dictionaries) and ``peers6`` of a decoded reply."""
    raw_peers = data.get(b"peers", b"")
    if isinstance(raw_peers, bytes):
        peers = parse_compact_v4(raw_peers)
    elif isinstance(raw_peers, list):
        peers = parse_peer_dicts(raw_peers)
    else:
        raise TrackerError(f"tracker {url}: 'peers' is neither a string nor a list")
    raw_peers6 = data.get(b"peers6", b"")
    if not isinstance(raw_peers6, bytes):
        raise TrackerError(f"tracker {url}: 'peers6' is not a string")
    peers.extend(parse_compact_v6(raw_peers6))
    return peers


class HTTPTracker:
    """Client for one ``http://`` or ``https://`` announce URL.

    Keeps one idle connection for the next announce (keep-alive) and the
    ``tracker id`` the tracker handed out for each info-hash, which it sends
    back as ``trackerid``. ``ssl_context`` replaces the process-wide default
    (certifi's CAs) for ``https`` URLs: a private CA, say.
    """

    def __init__(
        self, url: str, *, max_body: int = MAX_BODY, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        try:
            parts = urlsplit(url)
            valid = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
        except ValueError:  # "http://[::1/announce"
            valid = False
        if not valid:
            raise TrackerError(f"tracker {url}: not an http(s) URL with a host")
        self.url = url
        self.max_body = max_body
        self._ssl_context = ssl_context
        #: The kept-alive connection and what it is to: (scheme, host, port, proxy).
        self._idle: tuple[tuple, http.client.HTTPConnection] | None = None
        self._idle_lock = threading.Lock()
        self._tracker_ids: dict[bytes, bytes] = {}
        self._log = log.bind(tracker=url)

    def __repr__(self) -> str:
        return f"HTTPTracker({self.url!r})"

    def tracker_id(self, info_hash: bytes) -> bytes | None:
        """The ``tracker id`` last received for ``info_hash``, if any."""
        return self._tracker_ids.get(bytes(info_hash))

    def close(self) -> None:
        """Close the kept-alive connection, if any (a later announce opens a new one)."""
        with self._idle_lock:
            idle, self._idle = self._idle, None
        if idle is not None:
            idle[1].close()

    def announce(self, req: AnnounceRequest, timeout: float = 15.0) -> AnnounceResponse:
        """Announce ``req``; return the parsed reply or raise :class:`TrackerError`."""
        info_hash = bytes(req.info_hash)
        if not timeout > 0:
            raise TrackerError(f"tracker {self.url}: timed out (no time left to announce)")
        deadline = time.monotonic() + timeout
        full_url = build_announce_url(self.url, req, self._tracker_ids.get(info_hash))
        log_ = self._log.bind(announce_event=req.event or "none", info_hash=info_hash.hex())
        timer = gevent.Timeout(timeout)
        timer.start()
        try:
            status, reason, body = self._fetch(full_url, deadline, timeout, log_)
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            log_.debug("tracker timed out", timeout=timeout)
            raise TrackerError(f"tracker {self.url}: timed out after {timeout:g} s") from None
        finally:
            timer.close()
        if status != 200:
            detail = f"HTTP {status} {one_line(reason or '')}".rstrip()
            failure = _failure_reason(body, self.max_body)
            if failure:
                detail += f": {failure}"
            log_.debug("tracker HTTP error", status=status)
            raise TrackerError(f"tracker {self.url}: {detail}")
        try:
            result = parse_announce_reply(body, self.url, max_size=self.max_body)
        except TrackerError as exc:
            log_.debug("tracker refused or sent garbage", error=str(exc))
            raise
        if result.tracker_id is not None:
            self._tracker_ids[info_hash] = result.tracker_id
        if result.warning:
            log_.info("tracker warning", warning=result.warning)
        log_.debug(
            "announced", interval=result.interval, peers=len(result.peers),
            complete=result.complete, incomplete=result.incomplete,
        )
        return result

    def _fetch(self, url: str, deadline: float, timeout: float, log_) -> tuple[int, str, bytes]:
        """``(status, reason, body)`` of a GET of ``url``; the connection is kept only after a whole reply."""
        key, conn, resp = self._get(url, timeout, log_)
        whole = False
        try:
            body = self._read_body(resp, deadline, timeout)
            whole = True
        finally:
            resp.close()
            if whole and not resp.will_close:
                self._keep(key, conn)
            else:
                conn.close()
        return resp.status, resp.reason, body

    def _get(self, url: str, timeout: float, log_) -> _Sent:
        """GET ``url``, following at most ``_MAX_REDIRECTS`` redirects to http(s) URLs.

        Returns the connection key, the connection and the response, whose body is still to be read.
        """
        for _ in range(_MAX_REDIRECTS + 1):
            key, conn, resp = self._send(url, timeout, log_)
            location = resp.getheader("Location")
            if resp.status not in _REDIRECTS or location is None:
                return key, conn, resp
            resp.close()
            conn.close()
            try:
                target = urljoin(url, location.strip())
                parts = urlsplit(target)
                parts.hostname  # noqa: B018 - raises ValueError for a malformed host
                parts.port  # noqa: B018 - and for a malformed port
            except ValueError:
                raise TrackerError(f"tracker {self.url}: redirected to an invalid URL") from None
            shown = one_line(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")))  # no passkeys
            if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
                raise TrackerError(f"tracker {self.url}: redirected to {shown}, which is not an http(s) URL")
            log_.debug("tracker redirected", to=shown)
            url = target
        raise TrackerError(f"tracker {self.url}: more than {_MAX_REDIRECTS} redirects")

    def _send(self, url: str, timeout: float, log_) -> _Sent:
        """Send one GET of ``url`` and read the reply's status line and headers.

        On the kept-alive connection if it is to the same place, else a new one; a request a reused
        connection fails to carry (the server closed it meanwhile) is sent once more on a new one.
        """
        try:
            parts = urlsplit(url)
            scheme = parts.scheme.lower()
            host = ascii_host(parts.hostname or "")
            port = parts.port or (443 if scheme == "https" else 80)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            target = _UNSAFE.sub(lambda m: quote(m.group()), target)
            headers = {"User-Agent": USER_AGENT}
            if parts.username is not None:  # http://user:password@tracker/: Basic authentication, as requests sent
                headers["Authorization"] = basic_auth(unquote(parts.username), unquote(parts.password or ""))
        except ValueError as exc:  # a port out of range, a host name IDNA cannot encode, a lone surrogate
            raise TrackerError(f"tracker {self.url}: request failed (invalid URL: {describe(exc)})") from None
        proxy = env_proxy(self.url, scheme, host, port)
        if proxy is not None and scheme == "http":
            target = f"http://{url_host(host)}{f':{parts.port}' if parts.port else ''}{target}"
            if proxy[2]:
                headers["Proxy-Authorization"] = proxy[2]
        key = (scheme, host, port, proxy)
        for _ in range(2):
            try:
                conn, reused = self._connection(key, timeout)
            except (OSError, ValueError) as exc:  # no TLS context could be made (an unreadable CA file, say)
                raise TrackerError(f"tracker {self.url}: request failed ({describe(exc)})") from None
            try:
                conn.request("GET", target, headers=headers)
                return key, conn, conn.getresponse()
            except (OSError, http.client.HTTPException, ValueError) as exc:
                conn.close()
                if reused and isinstance(exc, _STALE):
                    log_.debug("kept-alive connection was closed, asking on a new one", error=describe(exc))
                    continue
                if isinstance(exc, TimeoutError):
                    log_.debug("tracker timed out", timeout=timeout)
                    raise TrackerError(f"tracker {self.url}: timed out after {timeout:g} s") from None
                log_.debug("tracker unreachable", error=describe(exc))
                raise TrackerError(f"tracker {self.url}: request failed ({describe(exc)})") from None
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable: the second try is on a new connection")  # pragma: no cover

    def _connection(self, key: tuple, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        """The kept-alive connection if it is for ``key`` and still open (reused: True), else a new one."""
        with self._idle_lock:
            idle, self._idle = self._idle, None
        if idle is not None:
            idle_key, conn = idle
            if idle_key == key and not connection_dropped(conn):
                conn.timeout = timeout
                conn.sock.settimeout(timeout)
                return conn, True
            conn.close()
        scheme, host, port, proxy = key
        context = (self._ssl_context or tls_context()) if scheme == "https" else None
        if proxy is None:
            if context is not None:
                return http.client.HTTPSConnection(host, port, timeout=timeout, context=context), False
            return http.client.HTTPConnection(host, port, timeout=timeout), False
        proxy_host, proxy_port, proxy_auth = proxy
        if context is None:  # the absolute URL goes in the request line
            return http.client.HTTPConnection(proxy_host, proxy_port, timeout=timeout), False
        conn = http.client.HTTPSConnection(proxy_host, proxy_port, timeout=timeout, context=context)
        tunnel_headers = {"User-Agent": USER_AGENT}
        if proxy_auth:
            tunnel_headers["Proxy-Authorization"] = proxy_auth
        conn.set_tunnel(host, port, headers=tunnel_headers)  # CONNECT; TLS to the tracker through it
        return conn, False

    def _keep(self, key: tuple, conn: http.client.HTTPConnection) -> None:
        """Keep ``conn`` as the idle connection (closing the one kept before, if another call kept one)."""
        with self._idle_lock:
            old, self._idle = self._idle, (key, conn)
        if old is not None:
            old[1].close()

    def _read_body(self, resp: http.client.HTTPResponse, deadline: float, timeout: float) -> bytes:
        """The reply body, read in chunks under ``max_body`` (as received and as decoded) and the deadline."""
        length = (resp.getheader("Content-Length") or "").strip()
        if length.isdigit() and int(length) > self.max_body:
            raise TrackerError(f"tracker {self.url}: reply of {length} bytes is larger than {self.max_body}")
        chunked = (resp.getheader("Transfer-Encoding") or "").strip().lower() == "chunked"
        expected = int(length) if length.isdigit() and not chunked else None
        decoder = content_decoder(resp.getheader("Content-Encoding"), self.url)
        chunks: list[bytes] = []
        received = size = 0
        try:
            while True:
                chunk = resp.read1(_CHUNK)
                if not chunk:
                    break
                received += len(chunk)
                if received > self.max_body:
                    raise TrackerError(f"tracker {self.url}: reply is larger than {self.max_body} bytes")
                if decoder is not None:
                    chunk = decoder.decode(chunk, self.max_body - size)
                self._check_size(size := size + len(chunk), decoder)
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise TrackerError(f"tracker {self.url}: timed out after {timeout:g} s reading the reply")
            if decoder is not None:
                chunks.append(tail := decoder.flush())
                self._check_size(size + len(tail), decoder)
        except TimeoutError:
            raise TrackerError(f"tracker {self.url}: timed out after {timeout:g} s reading the reply") from None
        except zlib.error as exc:
            coding = decoder.coding if decoder is not None else "compressed"
            raise TrackerError(f"tracker {self.url}: reading the reply failed (bad {coding} data: {exc})") from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise TrackerError(f"tracker {self.url}: reading the reply failed ({describe(exc)})") from None
        if expected is not None and received < expected:
            raise TrackerError(
                f"tracker {self.url}: reading the reply failed (the connection closed after {received} of"
                f" {expected} bytes)"
            )
        return b"".join(chunks)

    def _check_size(self, size: int, decoder: ContentDecoder | None) -> None:
        if size > self.max_body:
            how = f" once decoded from {decoder.coding}" if decoder is not None else ""
            raise TrackerError(f"tracker {self.url}: reply is larger than {self.max_body} bytes{how}")
