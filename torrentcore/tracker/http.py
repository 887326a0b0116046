"""HTTP(S) tracker client (BEP 3 announce, BEP 23 compact peers, BEP 7 ``peers6``).

The query string is built here, with ``info_hash``/``peer_id`` percent-encoded
byte by byte; ``requests`` keeps existing escapes as they are, so nothing is
encoded twice. The reply body is read in chunks and capped (4 MiB by default)
before it is decoded with :func:`torrentcore.bencode.decode`.

Timeouts: ``requests`` gets ``timeout`` as both the connect and the per-read
timeout, and a ``gevent.Timeout`` bounds the whole call (redirects, a server
that trickles its reply a byte at a time, name resolution by the
gevent-patched resolver) to ``timeout`` seconds.

Redirects are followed by hand, at most five, and only to ``http``/``https``
URLs: a tracker that sends us to ``file://`` or ``ftp://`` gets a clear error.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_from_bytes, urljoin, urlsplit, urlunsplit

import gevent
import structlog

from .. import __version__
from ..bencode import decode
from ..errors import BencodeError, TrackerError
from . import AnnounceRequest, AnnounceResponse
from .peers import dedupe_peers, parse_compact_v4, parse_compact_v6, parse_peer_dicts

if TYPE_CHECKING:  # imported where used: requests costs 0.1 s of start-up, needed only once a tracker is HTTP
    import requests

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
_MAX_TEXT = 300
_MAX_REDIRECTS = 5


def _text(value: Any) -> str:
    """A tracker-supplied string as one printable line of bounded length."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", errors="replace")
    text = " ".join(str(value).split())
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."


def _describe(exc: BaseException) -> str:
    """A short, one-line cause for a ``requests`` exception (no query strings)."""
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if match:
        return match.group(1).strip()
    for hint in ("Connection refused", "Connection reset", "Connection aborted", "Name or service not known"):
        if hint.lower() in text.lower():
            return hint
    text = re.sub(r"\?[^\s'\")]*", "?...", text)
    return _text(text) or type(exc).__name__


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
        return _text(data[b"failure reason"])
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
        raise TrackerError(f"tracker {url} failed: {_text(data[b'failure reason']) or '(no reason given)'}")
    interval = data.get(b"interval")
    if not isinstance(interval, int) or interval <= 0:
        raise TrackerError(f"tracker {url}: reply has no valid interval ({_text(repr(interval))})")
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
        warning=_text(warning) if isinstance(warning, bytes) else None,
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

    Keeps a ``requests.Session`` (connection reuse) and the ``tracker id`` the
    tracker handed out for each info-hash, which it sends back as ``trackerid``.
    """

    def __init__(
        self, url: str, *, session: requests.Session | None = None, max_body: int = MAX_BODY
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise TrackerError(f"tracker {url}: not an http(s) URL with a host")
        self.url = url
        self.max_body = max_body
        if session is None:
            import requests

            session = requests.Session()
        self._session = session
        self._tracker_ids: dict[bytes, bytes] = {}
        self._log = log.bind(tracker=url)

    def __repr__(self) -> str:
        return f"HTTPTracker({self.url!r})"

    def tracker_id(self, info_hash: bytes) -> bytes | None:
        """The ``tracker id`` last received for ``info_hash``, if any."""
        return self._tracker_ids.get(bytes(info_hash))

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

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
            resp = self._get(full_url, timeout, log_)
            with resp:
                body = self._read_body(resp, deadline, timeout)
                status, reason = resp.status_code, resp.reason
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            log_.debug("tracker timed out", timeout=timeout)
            raise TrackerError(f"tracker {self.url}: timed out after {timeout:g} s") from None
        finally:
            timer.close()
        if status != 200:
            detail = f"HTTP {status} {_text(reason or '')}".rstrip()
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

    def _get(self, url: str, timeout: float, log_) -> requests.Response:
        """GET ``url`` (streamed), following at most ``_MAX_REDIRECTS`` redirects to http(s) URLs."""
        import requests

        for _ in range(_MAX_REDIRECTS + 1):
            try:
                resp = self._session.get(
                    url,
                    timeout=(timeout, timeout),
                    stream=True,
                    allow_redirects=False,
                    headers={"User-Agent": USER_AGENT},
                )
            except requests.Timeout:
                log_.debug("tracker timed out", timeout=timeout)
                raise TrackerError(f"tracker {self.url}: timed out after {timeout:g} s") from None
            except requests.RequestException as exc:
                log_.debug("tracker unreachable", error=_describe(exc))
                raise TrackerError(f"tracker {self.url}: request failed ({_describe(exc)})") from None
            if not resp.is_redirect:
                return resp
            resp.close()
            try:
                target = urljoin(url, resp.headers["location"])
                parts = urlsplit(target)
                parts.hostname  # noqa: B018 - raises ValueError for a malformed host
            except ValueError:
                raise TrackerError(f"tracker {self.url}: redirected to an invalid URL") from None
            shown = _text(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")))  # no passkeys
            if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
                raise TrackerError(f"tracker {self.url}: redirected to {shown}, which is not an http(s) URL")
            log_.debug("tracker redirected", to=shown)
            url = target
        raise TrackerError(f"tracker {self.url}: more than {_MAX_REDIRECTS} redirects")

    def _read_body(self, resp: requests.Response, deadline: float, timeout: float) -> bytes:
        import requests

        length = resp.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self.max_body:
            raise TrackerError(f"tracker {self.url}: reply of {length} bytes is larger than {self.max_body}")
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in resp.iter_content(chunk_size=_CHUNK):
                size += len(chunk)
                if size > self.max_body:
                    raise TrackerError(f"tracker {self.url}: reply is larger than {self.max_body} bytes")
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise TrackerError(f"tracker {self.url}: timed out after {timeout:g} s reading the reply")
        except requests.Timeout:
            raise TrackerError(f"tracker {self.url}: timed out after {timeout:g} s reading the reply") from None
        except (requests.RequestException, OSError) as exc:
            raise TrackerError(f"tracker {self.url}: reading the reply failed ({_describe(exc)})") from None
        return b"".join(chunks)
