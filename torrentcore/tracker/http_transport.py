"""The HTTP side of the HTTP(S) tracker client (:mod:`torrentcore.tracker.http`), on :mod:`http.client`.

What a GET of a tracker needs beyond the standard library: the TLS context (certifi's CAs), the proxy the
environment names (the variables ``requests`` read; ``http://`` proxies only, SOCKS refused with a clear
error), whether a kept-alive connection was closed by the server while idle, undoing a ``gzip``/``deflate``
content coding without producing more than the cap allows, and one short line describing a network, TLS or
HTTP error. The tracker protocol itself (the announce URL, redirects, the reply) is
:mod:`torrentcore.tracker.http`'s.
"""

from __future__ import annotations

import base64
import http.client
import os
import re
import select
import socket
import ssl
import threading
import zlib
from typing import Any
from urllib.parse import unquote, urlsplit

from ..errors import TrackerError

__all__ = ["tls_context", "one_line", "describe", "ascii_host", "url_host", "basic_auth", "env_proxy",
           "connection_dropped", "ContentDecoder", "content_decoder"]

#: Longest tracker-supplied text shown in a message.
MAX_TEXT = 300

_tls_lock = threading.Lock()
_tls_default: ssl.SSLContext | None = None


def tls_context() -> ssl.SSLContext:
    """The process's TLS context for trackers (certifi's CAs, host names checked), made on first use."""
    global _tls_default
    with _tls_lock:
        if _tls_default is None:
            try:
                import certifi
            except ImportError:
                _tls_default = ssl.create_default_context()
            else:
                _tls_default = ssl.create_default_context(cafile=certifi.where())
        return _tls_default


def one_line(value: Any) -> str:
    """A tracker-supplied string as one printable line of bounded length."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", errors="replace")
    text = " ".join(str(value).split())
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


def describe(exc: BaseException) -> str:
    """A short, one-line cause for a network, TLS or HTTP error (no query strings)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return one_line(f"TLS certificate verify failed: {exc.verify_message or exc.reason or 'no reason given'}")
    if isinstance(exc, ssl.SSLError):
        text = re.sub(r"\s*\(_ssl\.c:\d+\)|^\[SSL: \w+\]\s*", "", str(exc.strerror or exc))
        return one_line(f"TLS error: {text or exc.reason or type(exc).__name__}")
    if isinstance(exc, socket.gaierror):
        return one_line(f"name not resolved: {exc.strerror or exc}")
    if isinstance(exc, http.client.RemoteDisconnected):
        return "closed the connection without a reply"
    if isinstance(exc, http.client.BadStatusLine):
        return one_line(f"not an HTTP reply (status line {exc.line!r})")
    if isinstance(exc, http.client.IncompleteRead):
        return "the connection closed in the middle of the reply"
    if isinstance(exc, OSError) and isinstance(exc.strerror, str) and exc.strerror:
        return one_line(exc.strerror)
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if match:
        return match.group(1).strip()
    text = re.sub(r"\?[^\s'\")]*", "?...", text)
    return one_line(text) or type(exc).__name__


def ascii_host(host: str) -> str:
    """``host`` as it goes on the wire: an internationalised name IDNA-encoded (ValueError if it cannot be)."""
    return host if host.isascii() else host.encode("idna").decode("ascii")


def url_host(host: str) -> str:
    """``host`` as written in a URL or ``Host`` header (an IPv6 literal in brackets)."""
    return f"[{host}]" if ":" in host else host


def basic_auth(user: str, password: str) -> str:
    """An ``Authorization``/``Proxy-Authorization`` value for HTTP Basic authentication."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def env_proxy(tracker: str, scheme: str, host: str, port: int) -> tuple[str, int, str | None] | None:
    """``(host, port, Proxy-Authorization or None)`` of the proxy the environment names for this URL, if any.

    The variables are the ones ``requests`` read (``<scheme>_proxy``, else ``all_proxy``, either case;
    ``no_proxy``: names, domain suffixes, addresses and networks such as ``10.0.0.0/8``). Raises
    :class:`TrackerError` for a proxy that is not an ``http://`` URL (SOCKS, say).
    """
    import urllib.request  # cheap, but only an HTTP announce needs it

    proxies = urllib.request.getproxies_environment()
    key = scheme if proxies.get(scheme) else "all"
    value = proxies.get(key)
    if (not value or urllib.request.proxy_bypass_environment(host if ":" in host else f"{host}:{port}", proxies)
            or in_no_proxy_network(host, proxies.get("no", ""))):
        return None
    name = f"{key}_proxy" if os.environ.get(f"{key}_proxy") else f"{key.upper()}_PROXY"
    if "://" not in value:
        value = f"http://{value}"  # "proxy.example:3128", as requests read it
    try:
        parts = urlsplit(value)
        proxy_host, proxy_port = ascii_host(parts.hostname or ""), parts.port or 80
    except ValueError:
        raise TrackerError(f"tracker {tracker}: the proxy in {name} is not a valid URL") from None
    proxy_scheme = parts.scheme.lower()
    if proxy_scheme.startswith("socks"):
        raise TrackerError(
            f"tracker {tracker}: SOCKS proxies are not supported for trackers: unset {name} or add {host} to NO_PROXY"
        )
    if proxy_scheme != "http" or not proxy_host:
        raise TrackerError(
            f"tracker {tracker}: the proxy in {name} is not an http:// URL with a host"
            " (only http:// proxies are supported for trackers)"
        )
    auth = basic_auth(unquote(parts.username), unquote(parts.password or "")) if parts.username is not None else None
    return proxy_host, proxy_port, auth


def in_no_proxy_network(host: str, no_proxy: str) -> bool:
    """Whether ``host``, an IP address, lies in a network that ``no_proxy`` lists (``10.0.0.0/8``, ``fd00::/8``).

    ``requests`` bypassed the proxy for such entries (IPv4) and ``urllib``'s own check does not read them;
    host names and plain addresses are that check's (``proxy_bypass_environment``).
    """
    if "/" not in no_proxy:
        return False
    import ipaddress

    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False  # a name: matched by suffix, not by network
    for entry in no_proxy.split(","):
        entry = entry.strip()
        if "/" in entry:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:  # not a network ("example.com/x"): not ours to judge
                continue
    return False


_original_poll: Any = None


def connection_dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle kept-alive connection is unusable: closed, or readable with no request sent (the
    server closed it, or sent something unasked)."""
    global _original_poll
    if conn.sock is None:
        return True
    try:
        if _original_poll is None:  # the system call, which a zero timeout never blocks; gevent's poll(0) sees nothing
            from gevent.monkey import get_original

            _original_poll = get_original("select", "poll")
        poller = _original_poll()
    except AttributeError:  # no poll() here: the retry on a new connection covers a closed one
        return False
    try:
        poller.register(conn.sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


class ContentDecoder:
    """Undoes a ``gzip`` or ``deflate`` content coding, never producing more than the caller can take."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        # "deflate" should be zlib-wrapped, but some servers send it raw: tried until the first output.
        self._maybe_raw = coding == "deflate"
        self._seen = b""
        self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS if coding == "gzip" else zlib.MAX_WBITS)

    def decode(self, data: bytes, room: int) -> bytes:
        """The decoded bytes of ``data``: at most ``room + 1`` (more than ``room`` means over the cap)."""
        if not self._maybe_raw:
            return self._zlib.decompress(data, room + 1)
        self._seen += data
        try:
            out = self._zlib.decompress(data, room + 1)
        except zlib.error:
            self._maybe_raw = False
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
            out = self._zlib.decompress(self._seen, room + 1)
        if out:
            self._maybe_raw, self._seen = False, b""
        return out

    def flush(self) -> bytes:
        """What is left once every byte of the body went through :meth:`decode` (all input was taken)."""
        return self._zlib.flush()


def content_decoder(header: str | None, tracker: str) -> ContentDecoder | None:
    """The decoder for a ``Content-Encoding`` header (None for none or ``identity``)."""
    codings = [c.strip().lower() for c in (header or "").split(",") if c.strip().lower() not in ("", "identity")]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in ("gzip", "x-gzip", "deflate"):
        return ContentDecoder("deflate" if codings[0] == "deflate" else "gzip")
    raise TrackerError(f"tracker {tracker}: reply has an unsupported Content-Encoding ({one_line(header)})")
