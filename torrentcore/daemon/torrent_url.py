"""A .torrent named by an http(s) URL (``torrent-add`` with ``filename`` a URL, as ``transmission-remote -a
URL`` sends it): fetched into memory with a bounded size, time and number of redirects.

Nothing is written to disk here: the bytes go to :meth:`Daemon.add <torrentcore.daemon.app.Daemon.add>`
like a ``metainfo`` argument. Every failure is one :class:`TorrentUrlError` line naming the URL.
"""

from __future__ import annotations

import re

import gevent
import requests

from ..errors import BadInputError

#: Largest .torrent fetched (the same cap as a .torrent read from the watch folder or an RPC body).
MAX_TORRENT_BYTES = 64 << 20
#: Seconds for the whole fetch (connect, redirects, body): a slow server cannot hold an RPC request longer.
FETCH_TIMEOUT = 60.0
#: Seconds to connect, and at most between two reads of the body.
SOCKET_TIMEOUT = 20.0
#: Redirects followed (a tracker's download link usually redirects once or twice).
MAX_REDIRECTS = 5
_CHUNK = 64 * 1024
_URL = re.compile(r"(?i)https?://")


class TorrentUrlError(BadInputError):
    """The URL could not be fetched, or what it gave is too large."""


def is_url(source: str) -> bool:
    """``source`` is an http:// or https:// URL."""
    return bool(_URL.match(source))


def fetch_torrent(url: str, max_bytes: int = MAX_TORRENT_BYTES, timeout: float = FETCH_TIMEOUT,
                  socket_timeout: float = SOCKET_TIMEOUT, cookies: str | None = None) -> bytes:
    """The body of ``url`` (an http(s) URL), at most ``max_bytes``, within ``timeout`` seconds; ``cookies``
    (torrent-add's ``cookies``: ``name1=value1; name2=value2``) are sent as its Cookie header.

    Raises :class:`TorrentUrlError`: unreachable, an HTTP error status, too many redirects, too large,
    too slow, cookies that are not one line. Whether the bytes are a valid .torrent is the caller's to check."""
    headers = {"Accept": "application/x-bittorrent, */*"}
    if cookies:
        if any(c in cookies for c in "\r\n\0"):
            raise TorrentUrlError("the cookies for a torrent URL must be one line")
        headers["Cookie"] = cookies
    try:
        with gevent.Timeout(timeout, TorrentUrlError(f"cannot fetch {url}: no answer within {timeout:g} s")):
            return _fetch(url, max_bytes, socket_timeout, headers)
    except requests.RequestException as exc:
        raise TorrentUrlError(f"cannot fetch {url}: {_reason(exc)}") from None


def _fetch(url: str, max_bytes: int, socket_timeout: float, headers: dict[str, str]) -> bytes:
    with requests.Session() as session:
        session.max_redirects = MAX_REDIRECTS
        with session.get(url, stream=True, timeout=socket_timeout, headers=headers) as reply:
            if reply.status_code != 200:
                raise TorrentUrlError(f"cannot fetch {url}: HTTP {reply.status_code} {reply.reason or ''}".rstrip())
            declared = reply.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise TorrentUrlError(f"the .torrent at {url} is {int(declared):,} bytes, more than {max_bytes:,}")
            body = bytearray()
            for chunk in reply.iter_content(_CHUNK):
                body += chunk
                if len(body) > max_bytes:
                    raise TorrentUrlError(f"the .torrent at {url} is more than {max_bytes:,} bytes")
            return bytes(body)


def _reason(exc: requests.RequestException) -> str:
    """One line for a requests error (its text can be a nested repr several lines long)."""
    if isinstance(exc, requests.TooManyRedirects):
        return f"more than {MAX_REDIRECTS} redirects"
    text = str(exc)
    # A read timeout while the body streams comes as a ConnectionError (urllib3's ReadTimeoutError inside).
    if isinstance(exc, requests.Timeout) or "timed out" in text:
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        for known in ("Connection refused", "Name or service not known", "No route to host",
                      "Temporary failure in name resolution", "certificate verify failed"):
            if known in text:
                return known.lower()
        return "the connection failed"
    return type(exc).__name__


__all__ = ["fetch_torrent", "is_url", "TorrentUrlError", "MAX_TORRENT_BYTES", "FETCH_TIMEOUT"]
