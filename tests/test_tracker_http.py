"""HTTP tracker client against scripted trackers on 127.0.0.1, plus peer-list parsing.

Besides the replies themselves: chunked and compressed replies, keep-alive, proxies from the environment,
TLS, and what an announce imports.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import gzip
import http.client
import ipaddress
import json
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote_to_bytes

import pytest

from torrentcore.bencode import encode
from torrentcore.errors import TrackerError
from torrentcore.tracker import AnnounceRequest, HTTPTracker, announce, tracker_for_url
from torrentcore.tracker.http import build_announce_url, parse_announce_reply
from torrentcore.tracker.http_transport import env_proxy
from torrentcore.tracker.peers import (
    dedupe_peers,
    normalise_host,
    parse_compact_v4,
    parse_compact_v6,
    parse_peer_dicts,
)

INFO_HASH = bytes([0x00, 0x25, 0x26, 0x20, 0x2B, 0x3D, 0x3F, 0x7E, 0x80, 0xFF]) + b"ABCDEFGHIJ"
PEER_ID = b"-TC0001-%& +=?/\x00\xff\x7f.a"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def compact(*peers: tuple[str, int]) -> bytes:
    return b"".join(socket.inet_aton(ip) + struct.pack(">H", port) for ip, port in peers)


def compact6(*peers: tuple[str, int]) -> bytes:
    return b"".join(socket.inet_pton(socket.AF_INET6, ip) + struct.pack(">H", port) for ip, port in peers)


def request(**kw: object) -> AnnounceRequest:
    fields: dict = {"info_hash": INFO_HASH, "peer_id": PEER_ID, "port": 6881}
    fields.update(kw)
    return AnnounceRequest(**fields)


#: ``(status, body)``, or ``(status, body, headers)``: ``Transfer-Encoding: chunked`` among the headers sends
#: the body in chunks (without a Content-Length), ``Content-Encoding`` says how the body (given encoded) is.
Reply = tuple[int, bytes] | tuple[int, bytes, dict[str, str]]


class FakeHTTPTracker:
    """An HTTP server on 127.0.0.1 that answers each GET with a scripted reply.

    ``protocol`` "HTTP/1.1" keeps connections open between requests (``connections`` counts those
    accepted); ``close_after_reply`` then closes each one after its reply all the same, without saying so,
    and ``drop_second_request`` closes a connection, unanswered, when a second request comes on it
    (``drop_every_request``: at every request).
    ``context`` (a server-side SSL context) makes it an HTTPS tracker.
    """

    def __init__(self, protocol: str = "HTTP/1.0", context: ssl.SSLContext | None = None) -> None:
        self.replies: list[Reply | Callable[[], Reply]] = []
        self.default: Reply = (200, encode({"interval": 1800, "peers": b""}))
        self.queries: list[dict[str, bytes]] = []
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.connections = 0
        self.close_after_reply = False
        self.drop_second_request = False
        self.drop_every_request = False
        self.release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = protocol
            timeout = 10  # an idle kept-alive connection is not waited on forever

            def setup(self) -> None:
                super().setup()
                fake.connections += 1
                self.served = 0

            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                fake.paths.append(path)
                fake.headers.append(dict(self.headers.items()))
                fields = {}
                for item in query.split("&"):
                    name, _, value = item.partition("=")
                    fields[name] = unquote_to_bytes(value)
                fake.queries.append(fields)
                self.served += 1
                if fake.drop_every_request or (fake.drop_second_request and self.served == 2):
                    fake.drop_second_request = False
                    self.close_connection = True
                    return
                reply = fake.replies.pop(0) if fake.replies else fake.default
                status, body, *extra = reply() if callable(reply) else reply
                headers = extra[0] if extra else {}
                chunked = headers.get("Transfer-Encoding") == "chunked"
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/plain")
                    for name, value in headers.items():
                        self.send_header(name, value)
                    if not chunked:
                        self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if chunked:
                        for at in range(0, len(body), 7):
                            piece = body[at : at + 7]
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        self.wfile.write(b"0\r\n\r\n")
                    else:
                        self.wfile.write(body)
                except OSError:
                    pass
                if fake.close_after_reply:
                    self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        scheme = "http"
        if context is not None:
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/announce"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.daemon = True
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy from the caller's environment: every test here talks to 127.0.0.1 directly unless it says."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def fake() -> Iterator[FakeHTTPTracker]:
    tracker = FakeHTTPTracker()
    yield tracker
    tracker.close()


@pytest.fixture
def fake11() -> Iterator[FakeHTTPTracker]:
    """A fake tracker speaking HTTP/1.1: connections are kept open between requests."""
    tracker = FakeHTTPTracker("HTTP/1.1")
    yield tracker
    tracker.close()


def reply(status: int = 200, **fields: object) -> Reply:
    return status, encode(fields)


# -- query string -------------------------------------------------------------------


def test_query_carries_raw_bytes_and_fields(fake: FakeHTTPTracker) -> None:
    tracker = HTTPTracker(fake.url)
    tracker.announce(request(uploaded=5, downloaded=7, left=9, event="started", numwant=33, key=0xBEEF))
    q = fake.queries[0]
    assert fake.paths == ["/announce"]
    assert q["info_hash"] == INFO_HASH
    assert q["peer_id"] == PEER_ID
    assert (q["port"], q["uploaded"], q["downloaded"], q["left"]) == (b"6881", b"5", b"7", b"9")
    assert (q["compact"], q["numwant"], q["key"], q["event"]) == (b"1", b"33", b"0000beef", b"started")
    assert "trackerid" not in q


def test_no_event_parameter_for_regular_announce_and_passkey_kept(fake: FakeHTTPTracker) -> None:
    tracker = HTTPTracker(fake.url + "?passkey=s3cr3t")
    tracker.announce(request())
    q = fake.queries[0]
    assert "event" not in q
    assert q["passkey"] == b"s3cr3t"
    assert q["info_hash"] == INFO_HASH


def test_build_announce_url_escapes_every_reserved_byte() -> None:
    url = build_announce_url("http://t.example/ann", request())
    query = url.split("?", 1)[1]
    info = dict(item.split("=", 1) for item in query.split("&"))["info_hash"]
    assert unquote_to_bytes(info) == INFO_HASH
    assert not set(info) & set("&=+ ?/#")


# -- replies ------------------------------------------------------------------------


def test_compact_peers_deduplicated_and_port_zero_dropped(fake: FakeHTTPTracker) -> None:
    peers = compact(("10.0.0.1", 6881), ("10.0.0.2", 51413), ("10.0.0.1", 6881), ("10.0.0.3", 0))
    fake.replies.append(
        reply(interval=1800, **{"min interval": 900}, complete=3, incomplete=4, peers=peers)
    )
    resp = announce(fake.url, request())
    assert resp.peers == [("10.0.0.1", 6881), ("10.0.0.2", 51413)]
    assert (resp.interval, resp.min_interval, resp.complete, resp.incomplete) == (1800, 900, 3, 4)
    assert resp.url == fake.url
    assert resp.warning is None and resp.tracker_id is None


def test_dictionary_peers_skip_invalid_entries(fake: FakeHTTPTracker) -> None:
    peers = [
        {"ip": "10.1.1.1", "port": 1000, "peer id": b"x" * 20},
        {"ip": "peer.example.org", "port": 2000},
        {"ip": "2001:db8::1", "port": 3000},
        {"ip": "10.1.1.2"},  # no port
        {"ip": "10.1.1.3", "port": 0},
        {"ip": "10.1.1.4", "port": 70000},
        {"ip": "not a host!", "port": 4000},
        {"ip": b"\xff\xfe", "port": 5000},
        {"port": 6000},
        b"junk",
    ]
    fake.replies.append(reply(interval=60, peers=peers))
    resp = HTTPTracker(fake.url).announce(request())
    assert resp.peers == [("10.1.1.1", 1000), ("peer.example.org", 2000), ("2001:db8::1", 3000)]


def test_peers6_compact_combined_with_ipv4(fake: FakeHTTPTracker) -> None:
    fake.replies.append(
        reply(
            interval=60,
            peers=compact(("192.0.2.1", 1)),
            peers6=compact6(("2001:db8::2", 2), ("::ffff:192.0.2.1", 1), ("fe80::1", 0)),
        )
    )
    resp = HTTPTracker(fake.url).announce(request())
    assert resp.peers == [("192.0.2.1", 1), ("2001:db8::2", 2)]


def test_failure_reason_raises_with_its_text(fake: FakeHTTPTracker) -> None:
    fake.replies.append(reply(**{"failure reason": "torrent not registered"}))
    with pytest.raises(TrackerError, match="torrent not registered") as info:
        HTTPTracker(fake.url).announce(request())
    assert fake.url in str(info.value)


def test_warning_message_is_returned(fake: FakeHTTPTracker) -> None:
    fake.replies.append(reply(interval=60, peers=b"", **{"warning message": "please upgrade\nsoon"}))
    resp = HTTPTracker(fake.url).announce(request())
    assert resp.warning == "please upgrade soon"


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>Not a tracker</body></html>",
        b"",
        b"d8:intervali60e",  # truncated
        b"li60ee",  # not a dictionary
        encode({"peers": b""}),  # no interval
        encode({"interval": b"60", "peers": b""}),  # interval not an integer
        encode({"interval": -5, "peers": b""}),
        encode({"interval": 60, "peers": 5}),
    ],
)
def test_garbage_bodies_raise(fake: FakeHTTPTracker, body: bytes) -> None:
    fake.replies.append((200, body))
    with pytest.raises(TrackerError) as info:
        HTTPTracker(fake.url).announce(request())
    assert fake.url in str(info.value)
    assert "\n" not in str(info.value)


def test_truncated_compact_list_is_garbage(fake: FakeHTTPTracker) -> None:
    fake.replies.append(reply(interval=60, peers=compact(("10.0.0.1", 1), ("10.0.0.2", 2))[:-1]))
    with pytest.raises(TrackerError, match="multiple of 6"):
        HTTPTracker(fake.url).announce(request())


def test_truncated_peers6_is_garbage(fake: FakeHTTPTracker) -> None:
    fake.replies.append(reply(interval=60, peers=b"", peers6=b"\x00" * 17))
    with pytest.raises(TrackerError, match="multiple of 18"):
        HTTPTracker(fake.url).announce(request())


def test_http_500_raises(fake: FakeHTTPTracker) -> None:
    fake.replies.append((500, b"<h1>Internal Server Error</h1>"))
    with pytest.raises(TrackerError, match="HTTP 500"):
        HTTPTracker(fake.url).announce(request())


def test_http_error_with_failure_reason_reports_it(fake: FakeHTTPTracker) -> None:
    fake.replies.append(reply(403, **{"failure reason": "unregistered passkey"}))
    with pytest.raises(TrackerError, match="HTTP 403.*unregistered passkey"):
        HTTPTracker(fake.url).announce(request())


def test_tracker_id_is_remembered_and_sent_back(fake: FakeHTTPTracker) -> None:
    fake.replies.append(reply(interval=60, peers=b"", **{"tracker id": b"T-42"}))
    fake.replies.append(reply(interval=60, peers=b""))  # no tracker id: keep the old one
    tracker = HTTPTracker(fake.url)
    first = tracker.announce(request(event="started"))
    tracker.announce(request())
    tracker.announce(request(info_hash=b"\x01" * 20))
    assert first.tracker_id == b"T-42"
    assert tracker.tracker_id(INFO_HASH) == b"T-42"
    assert "trackerid" not in fake.queries[0]
    assert fake.queries[1]["trackerid"] == b"T-42"
    assert "trackerid" not in fake.queries[2]  # tracker ids are per torrent


def test_oversized_body_is_refused(fake: FakeHTTPTracker) -> None:
    fake.replies.append(reply(interval=60, peers=compact(("10.0.0.1", 1)) * 400))
    with pytest.raises(TrackerError, match="larger than"):
        HTTPTracker(fake.url, max_body=1000).announce(request())


def test_connection_refused_names_the_tracker() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/announce"
    with pytest.raises(TrackerError, match="refused") as info:
        HTTPTracker(url).announce(request(), timeout=5)
    assert url in str(info.value)
    assert "info_hash" not in str(info.value)


def test_slow_tracker_times_out(fake: FakeHTTPTracker) -> None:
    def stall() -> Reply:
        fake.release.wait(10)
        return reply(interval=60, peers=b"")

    fake.replies.append(stall)
    with pytest.raises(TrackerError, match="timed out"):
        HTTPTracker(fake.url).announce(request(), timeout=0.3)


def test_module_announce_dispatch_and_client_cache(fake: FakeHTTPTracker) -> None:
    assert tracker_for_url(fake.url) is tracker_for_url(fake.url)
    assert isinstance(tracker_for_url(fake.url), HTTPTracker)
    for url in ("wss://tracker.example/announce", "ftp://x/announce", "tracker.example:80"):
        with pytest.raises(TrackerError, match="unsupported scheme"):
            announce(url, request())
    with pytest.raises(TrackerError):
        announce("http:///announce", request())


def test_request_validation() -> None:
    with pytest.raises(ValueError):
        request(info_hash=b"short")
    with pytest.raises(ValueError):
        request(peer_id=b"x" * 19)
    with pytest.raises(ValueError):
        request(port=70000)
    with pytest.raises(ValueError):
        request(event="paused")


# -- peer parsing helpers -------------------------------------------------------------


def test_parse_compact_helpers() -> None:
    assert parse_compact_v4(b"") == []
    assert parse_compact_v4(compact(("1.2.3.4", 0x1A2B))) == [("1.2.3.4", 0x1A2B)]
    assert parse_compact_v6(compact6(("::1", 80))) == [("::1", 80)]
    with pytest.raises(TrackerError):
        parse_compact_v4(b"\x00" * 7)
    with pytest.raises(TrackerError):
        parse_compact_v6(b"\x00" * 6)


def test_peer_dicts_and_normalisation() -> None:
    assert normalise_host("[2001:DB8::1]") == "2001:db8::1"
    assert normalise_host(b"Example.ORG.") == "example.org"
    assert normalise_host("1.2.3") is None
    assert normalise_host("a b") is None
    assert parse_peer_dicts([{b"ip": b"1.1.1.1", b"port": True}]) == []
    assert dedupe_peers([("a", 1), ("a", 1), ("b", 0), ("b", 2)]) == [("a", 1), ("b", 2)]


def test_parse_announce_reply_directly() -> None:
    body = encode({"interval": 30, "peers": compact(("8.8.8.8", 53)), "complete": -1})
    resp = parse_announce_reply(body, "http://x/announce")
    assert resp.peers == [("8.8.8.8", 53)]
    assert resp.complete is None


def test_no_time_left_is_a_tracker_error(fake: FakeHTTPTracker) -> None:
    with pytest.raises(TrackerError, match="timed out"):
        HTTPTracker(fake.url).announce(request(), timeout=0)
    assert fake.queries == []


# -- transport: chunked and compressed replies, keep-alive, proxies, TLS, imports -----------------------


def test_chunked_reply(fake11: FakeHTTPTracker) -> None:
    body = encode({"interval": 60, "peers": compact(("10.0.0.1", 1), ("10.0.0.2", 2))})
    fake11.replies.append((200, body, {"Transfer-Encoding": "chunked"}))
    resp = HTTPTracker(fake11.url).announce(request(), timeout=5)
    assert resp.peers == [("10.0.0.1", 1), ("10.0.0.2", 2)]


def test_chunked_reply_past_the_cap_is_refused(fake11: FakeHTTPTracker) -> None:
    fake11.replies.append((200, encode({"interval": 60, "peers": b"\x00" * 6000}), {"Transfer-Encoding": "chunked"}))
    with pytest.raises(TrackerError, match="reply is larger than 1000 bytes"):
        HTTPTracker(fake11.url, max_body=1000).announce(request(), timeout=5)


@pytest.mark.parametrize(
    ("coding", "compress"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),  # zlib-wrapped, as the RFC says
        ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, as some servers send it
    ],
    ids=["gzip", "deflate", "raw-deflate"],
)
def test_compressed_reply_is_decoded(fake: FakeHTTPTracker, coding: str, compress: Callable[[bytes], bytes]) -> None:
    body = encode({"interval": 60, "peers": compact(("10.0.0.9", 9)) * 50})
    fake.replies.append((200, compress(body), {"Content-Encoding": coding}))
    resp = HTTPTracker(fake.url).announce(request(), timeout=5)
    assert resp.peers == [("10.0.0.9", 9)]
    assert fake.headers[0]["Accept-Encoding"] == "identity"  # we never ask for a compressed reply
    assert fake.headers[0]["User-Agent"].startswith("torrentcore/")


def test_gzip_bomb_is_refused(fake11: FakeHTTPTracker) -> None:
    bomb = gzip.compress(b"d8:intervali60e5:peers8388608:" + b"\x00" * (8 << 20) + b"e", compresslevel=9)
    assert len(bomb) < 64 * 1024  # small as received: only the decoded size can stop it
    fake11.replies.append((200, bomb, {"Content-Encoding": "gzip", "Transfer-Encoding": "chunked"}))
    with pytest.raises(TrackerError) as info:
        HTTPTracker(fake11.url, max_body=64 * 1024).announce(request(), timeout=10)
    assert str(info.value) == f"tracker {fake11.url}: reply is larger than 65536 bytes once decoded from gzip"


def test_unknown_content_encoding_is_a_clear_error(fake: FakeHTTPTracker) -> None:
    fake.replies.append((200, b"\x1b\x00\x00", {"Content-Encoding": "br"}))
    with pytest.raises(TrackerError, match=r"unsupported Content-Encoding \(br\)"):
        HTTPTracker(fake.url).announce(request(), timeout=5)


def test_corrupt_gzip_is_a_clear_error(fake: FakeHTTPTracker) -> None:
    fake.replies.append((200, b"\x1f\x8b\x08\x00garbage garbage", {"Content-Encoding": "gzip"}))
    with pytest.raises(TrackerError, match=r"reading the reply failed \(bad gzip data"):
        HTTPTracker(fake.url).announce(request(), timeout=5)


def test_reply_shorter_than_its_content_length_is_an_error() -> None:
    body = encode({"interval": 60, "peers": b""})
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(10)

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(10)
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body) + 50, body))

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{server.getsockname()[1]}/announce"
        with pytest.raises(TrackerError) as info:
            HTTPTracker(url).announce(request(), timeout=5)
        thread.join(5)
    assert str(info.value) == (
        f"tracker {url}: reading the reply failed (the connection closed after {len(body)} of {len(body) + 50} bytes)"
    )


def test_keep_alive_two_announces_on_one_connection(fake11: FakeHTTPTracker) -> None:
    tracker = HTTPTracker(fake11.url)
    tracker.announce(request(event="started"), timeout=5)
    tracker.announce(request(), timeout=5)
    assert fake11.connections == 1
    assert len(fake11.queries) == 2
    tracker.close()  # closes the kept connection: the next announce opens a new one
    tracker.announce(request(), timeout=5)
    assert fake11.connections == 2
    tracker.close()


def test_server_closing_after_each_reply_still_answers_the_second_announce(fake11: FakeHTTPTracker) -> None:
    fake11.close_after_reply = True  # HTTP/1.1 without "Connection: close", then it closes all the same
    tracker = HTTPTracker(fake11.url)
    tracker.announce(request(event="started"), timeout=5)
    resp = tracker.announce(request(), timeout=5)
    assert resp.interval == 1800
    assert fake11.connections == 2
    assert len(fake11.queries) == 2


def test_request_lost_on_a_reused_connection_is_sent_again_on_a_new_one(fake11: FakeHTTPTracker) -> None:
    fake11.drop_second_request = True  # the kept connection takes the request and closes, unanswered
    tracker = HTTPTracker(fake11.url)
    tracker.announce(request(event="started"), timeout=5)
    fake11.replies.append(reply(interval=77, peers=b""))
    resp = tracker.announce(request(), timeout=5)
    assert resp.interval == 77
    assert fake11.connections == 2
    assert len(fake11.queries) == 3  # the dropped request and its retry
    tracker.close()


def test_a_kept_connection_the_server_closed_is_seen_before_use(fake11: FakeHTTPTracker) -> None:
    from torrentcore.tracker.http_transport import connection_dropped as _dropped

    tracker = HTTPTracker(fake11.url)
    tracker.announce(request(), timeout=5)
    assert tracker._idle is not None and not _dropped(tracker._idle[1])  # open and quiet: reusable
    tracker.close()
    fake11.close_after_reply = True
    tracker.announce(request(), timeout=5)
    assert tracker._idle is not None  # the server did not say it would close
    deadline = time.monotonic() + 5
    while not _dropped(tracker._idle[1]) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _dropped(tracker._idle[1])
    tracker.close()


def test_request_lost_on_a_new_connection_is_not_sent_again(fake11: FakeHTTPTracker) -> None:
    fake11.drop_every_request = True
    with pytest.raises(TrackerError) as info:
        HTTPTracker(fake11.url).announce(request(), timeout=5)
    assert str(info.value) == f"tracker {fake11.url}: request failed (closed the connection without a reply)"
    assert fake11.connections == 1 and len(fake11.queries) == 1


def test_connection_not_reused_after_a_reply_cut_short(fake11: FakeHTTPTracker) -> None:
    fake11.replies.append(reply(interval=60, peers=compact(("10.0.0.1", 1)) * 400))
    tracker = HTTPTracker(fake11.url, max_body=1000)
    with pytest.raises(TrackerError, match="larger than"):
        tracker.announce(request(), timeout=5)
    tracker.announce(request(), timeout=5)
    assert fake11.connections == 2  # the unread rest of the first reply was never taken for the second
    tracker.announce(request(), timeout=5)
    assert fake11.connections == 2
    tracker.close()


class TinyProxy:
    """An HTTP proxy on 127.0.0.1 that records what it is asked: a GET it answers itself (it reaches no
    tracker), a CONNECT it tunnels to the host and port asked for (or refuses, with ``refuse_connect``)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.refuse_connect = False
        self.body = encode({"interval": 900, "peers": compact(("10.7.7.7", 7777))})
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10

            def do_GET(self) -> None:
                proxy.lines.append(self.requestline)
                proxy.headers.append(dict(self.headers.items()))
                self.send_response(200)
                self.send_header("Content-Length", str(len(proxy.body)))
                self.end_headers()
                self.wfile.write(proxy.body)

            def do_CONNECT(self) -> None:
                proxy.lines.append(self.requestline)
                proxy.headers.append(dict(self.headers.items()))
                if proxy.refuse_connect:
                    self.send_error(407, "Proxy Authentication Required")
                    return
                host, _, port = self.path.rpartition(":")
                with socket.create_connection((host, int(port)), timeout=10) as upstream:
                    self.send_response(200, "Connection established")
                    self.end_headers()
                    self.wfile.flush()
                    copier = threading.Thread(target=_copy, args=(upstream, self.connection), daemon=True)
                    copier.start()
                    _copy(self.connection, upstream)
                    copier.join(10)
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.daemon = True
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def _copy(source: socket.socket, sink: socket.socket) -> None:
    """Bytes from ``source`` to ``sink`` until either end closes (or 10 s pass without any)."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def proxy() -> Iterator[TinyProxy]:
    server = TinyProxy()
    yield server
    server.close()


def test_http_proxy_from_the_environment(proxy: TinyProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url.replace("http://", "http://us%20er:p%40ss@"))
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # not for an http:// tracker
    url = "http://tracker.invalid:6969/announce?passkey=s3cr3t"  # never resolved: the proxy answers
    resp = HTTPTracker(url).announce(request(event="started"), timeout=5)
    assert resp.peers == [("10.7.7.7", 7777)]
    assert proxy.lines == [f"GET {build_announce_url(url, request(event='started'))} HTTP/1.1"]  # as built
    headers = proxy.headers[0]
    assert headers["Host"] == "tracker.invalid:6969"
    assert headers["Proxy-Authorization"] == "Basic " + base64.b64encode(b"us er:p@ss").decode()
    assert headers["User-Agent"].startswith("torrentcore/")


def test_no_proxy_bypasses_the_proxy(proxy: TinyProxy, fake: FakeHTTPTracker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", proxy.url)
    monkeypatch.setenv("no_proxy", "tracker.example, 127.0.0.1")
    resp = HTTPTracker(fake.url).announce(request(), timeout=5)
    assert resp.interval == 1800
    assert proxy.lines == [] and len(fake.queries) == 1
    assert "Proxy-Authorization" not in fake.headers[0]


@pytest.mark.parametrize("networks", ["10.0.0.0/8, 127.0.0.0/8", "127.0.0.1/32", " 192.168.0.0/16,127.0.0.0/24 "])
def test_no_proxy_networks_bypass_the_proxy(proxy: TinyProxy, fake: FakeHTTPTracker, monkeypatch: pytest.MonkeyPatch,
                                            networks: str) -> None:
    """A tracker whose address lies in a network NO_PROXY lists is asked directly, as requests did."""
    monkeypatch.setenv("http_proxy", proxy.url)
    monkeypatch.setenv("NO_PROXY", networks)
    assert HTTPTracker(fake.url).announce(request(), timeout=5).interval == 1800
    assert proxy.lines == [] and len(fake.queries) == 1


def test_no_proxy_networks_leave_other_addresses_and_names_to_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://proxy.example:3128")
    monkeypatch.setenv("no_proxy", "10.0.0.0/8, fd00::/8, not/a/network, corp.example")
    assert env_proxy("t", "http", "10.1.2.3", 80) is None
    assert env_proxy("t", "http", "fd00::1", 80) is None
    assert env_proxy("t", "http", "tracker.corp.example", 80) is None
    assert env_proxy("t", "http", "11.1.2.3", 80) == ("proxy.example", 3128, None)
    assert env_proxy("t", "http", "tracker.example", 80) == ("proxy.example", 3128, None)


def test_all_proxy_is_used_when_no_scheme_proxy_is_set(proxy: TinyProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALL_PROXY", proxy.url.removeprefix("http://"))  # no scheme: http://, as requests read it
    HTTPTracker("http://tracker.invalid/announce").announce(request(), timeout=5)
    assert proxy.lines[0].startswith("GET http://tracker.invalid/announce?info_hash=")
    assert "Proxy-Authorization" not in proxy.headers[0]


@pytest.mark.parametrize("variable", ["ALL_PROXY", "all_proxy", "HTTP_PROXY"])
def test_socks_proxy_is_refused_clearly(fake: FakeHTTPTracker, monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "socks5h://127.0.0.1:1080")
    with pytest.raises(TrackerError) as info:
        HTTPTracker(fake.url).announce(request(), timeout=5)
    assert str(info.value) == (
        f"tracker {fake.url}: SOCKS proxies are not supported for trackers: unset {variable} or add 127.0.0.1 to"
        " NO_PROXY"
    )
    assert fake.queries == []  # not silently bypassed
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert HTTPTracker(fake.url).announce(request(), timeout=5).interval == 1800


def test_https_proxy_url_is_refused_clearly(fake: FakeHTTPTracker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "https://user:secret@127.0.0.1:3128")
    with pytest.raises(TrackerError, match=r"HTTP_PROXY is not an http:// URL .*only http:// proxies") as info:
        HTTPTracker(fake.url).announce(request(), timeout=5)
    assert "secret" not in str(info.value)


# -- TLS --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """``(cert file, key file, cert PEM)`` of a self-signed certificate for 127.0.0.1."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "torrentcore test tracker")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    (folder / "cert.pem").write_text(pem)
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(folder / "cert.pem"), str(folder / "key.pem"), pem


@pytest.fixture
def tls_fake(tls_files: tuple[str, str, str]) -> Iterator[FakeHTTPTracker]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files[0], tls_files[1])
    tracker = FakeHTTPTracker("HTTP/1.1", context=context)
    yield tracker
    tracker.close()


def test_https_certificate_is_verified(tls_fake: FakeHTTPTracker) -> None:
    # The default context trusts certifi's CAs only: a self-signed certificate is refused, with a short cause.
    with pytest.raises(TrackerError) as info:
        HTTPTracker(tls_fake.url).announce(request(), timeout=5)
    assert str(info.value).startswith(f"tracker {tls_fake.url}: request failed (TLS certificate verify failed: ")
    assert "self-signed" in str(info.value) and "\n" not in str(info.value)
    assert tls_fake.queries == []


def test_https_with_a_trusted_certificate_and_keep_alive(tls_fake: FakeHTTPTracker, tls_files) -> None:
    tracker = HTTPTracker(tls_fake.url, ssl_context=ssl.create_default_context(cadata=tls_files[2]))
    assert tracker.announce(request(event="started"), timeout=5).interval == 1800
    assert tracker.announce(request(), timeout=5).interval == 1800
    assert tls_fake.connections == 1
    tracker.close()


def test_https_host_name_is_checked(tls_fake: FakeHTTPTracker, tls_files) -> None:
    url = tls_fake.url.replace("127.0.0.1", "localhost")  # the certificate names 127.0.0.1 only
    context = ssl.create_default_context(cadata=tls_files[2])
    with pytest.raises(TrackerError, match=r"TLS certificate verify failed: .*mismatch"):
        HTTPTracker(url, ssl_context=context).announce(request(), timeout=5)


def test_https_through_a_connect_tunnel(
    tls_fake: FakeHTTPTracker, tls_files, proxy: TinyProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url.replace("http://", "http://me:pw@"))
    tracker = HTTPTracker(tls_fake.url, ssl_context=ssl.create_default_context(cadata=tls_files[2]))
    assert tracker.announce(request(), timeout=5).interval == 1800
    port = tls_fake.url.split(":")[2].split("/")[0]
    assert proxy.lines == [f"CONNECT 127.0.0.1:{port} HTTP/1.0"]
    assert proxy.headers[0]["Proxy-Authorization"] == "Basic " + base64.b64encode(b"me:pw").decode()
    assert tls_fake.headers[0]["Host"] == f"127.0.0.1:{port}"
    tracker.close()
    proxy.refuse_connect = True
    with pytest.raises(TrackerError, match=r"request failed \(Tunnel connection failed: 407"):
        tracker.announce(request(), timeout=5)


def test_default_tls_context_is_made_once_and_verifies() -> None:
    from torrentcore.tracker import http_transport as tracker_http

    context = tracker_http.tls_context()
    assert tracker_http.tls_context() is context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_describe_gives_short_causes() -> None:
    from torrentcore.tracker.http_transport import describe as _describe

    assert _describe(ConnectionRefusedError(111, "Connection refused")) == "Connection refused"
    assert _describe(socket.gaierror(-2, "Name or service not known")) == "name not resolved: Name or service not known"
    assert _describe(http.client.RemoteDisconnected("Remote end closed")) == "closed the connection without a reply"
    assert _describe(ValueError("bad thing at http://x/a?passkey=secret")) == "bad thing at http://x/a?..."


# -- what announcing imports -------------------------------------------------------------------------

IMPORT_PROBE = """
import json, sys
from gevent import monkey
monkey.patch_all()
import torrentcore.tracker.http
from torrentcore.tracker import AnnounceRequest
tracker = torrentcore.tracker.http.HTTPTracker(sys.argv[1])
resp = tracker.announce(AnnounceRequest(info_hash=b"i" * 20, peer_id=b"p" * 20, port=6881), timeout=10)
print(json.dumps({"interval": resp.interval, "loaded": [m for m in ("requests", "urllib3") if m in sys.modules]}))
"""


def test_announcing_imports_neither_requests_nor_urllib3(fake: FakeHTTPTracker) -> None:
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, fake.url], capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"interval": 1800, "loaded": []}
    assert len(fake.queries) == 1
