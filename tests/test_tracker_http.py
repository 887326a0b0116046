"""HTTP tracker client against a scripted tracker on 127.0.0.1, plus peer-list parsing."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote_to_bytes

import pytest

from torrentcore.bencode import encode
from torrentcore.errors import TrackerError
from torrentcore.tracker import AnnounceRequest, HTTPTracker, announce, tracker_for_url
from torrentcore.tracker.http import build_announce_url, parse_announce_reply
from torrentcore.tracker.peers import (
    dedupe_peers,
    normalise_host,
    parse_compact_v4,
    parse_compact_v6,
    parse_peer_dicts,
)

INFO_HASH = bytes([0x00, 0x25, 0x26, 0x20, 0x2B, 0x3D, 0x3F, 0x7E, 0x80, 0xFF]) + b"ABCDEFGHIJ"
PEER_ID = b"-TC0001-%& +=?/\x00\xff\x7f.a"


def compact(*peers: tuple[str, int]) -> bytes:
    return b"".join(socket.inet_aton(ip) + struct.pack(">H", port) for ip, port in peers)


def compact6(*peers: tuple[str, int]) -> bytes:
    return b"".join(socket.inet_pton(socket.AF_INET6, ip) + struct.pack(">H", port) for ip, port in peers)


def request(**kw: object) -> AnnounceRequest:
    fields: dict = {"info_hash": INFO_HASH, "peer_id": PEER_ID, "port": 6881}
    fields.update(kw)
    return AnnounceRequest(**fields)


Reply = tuple[int, bytes]


class FakeHTTPTracker:
    """An HTTP server on 127.0.0.1 that answers each GET with a scripted reply."""

    def __init__(self) -> None:
        self.replies: list[Reply | Callable[[], Reply]] = []
        self.default: Reply = (200, encode({"interval": 1800, "peers": b""}))
        self.queries: list[dict[str, bytes]] = []
        self.paths: list[str] = []
        self.release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                fake.paths.append(path)
                fields = {}
                for item in query.split("&"):
                    name, _, value = item.partition("=")
                    fields[name] = unquote_to_bytes(value)
                fake.queries.append(fields)
                reply = fake.replies.pop(0) if fake.replies else fake.default
                status, body = reply() if callable(reply) else reply
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/announce"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.daemon = True
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def fake() -> Iterator[FakeHTTPTracker]:
    tracker = FakeHTTPTracker()
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
