"""Lying HTTP trackers: redirects (a few followed, loops cut, non-HTTP targets refused), bodies past the size
cap without a Content-Length, replies trickled a byte at a time, thousands of bogus peers.

What tests/test_tracker_http.py already covers is not repeated here (a Content-Length over the cap, a
tracker that never answers, port-0 entries and duplicates in small lists, garbage bodies; one UDP connect
reply with a wrong transaction id is in tests/test_tracker_udp.py; here: a burst of them before every
reply, connect and announce, plus bogus peers in a UDP reply). The last tests run
``torrentcore run`` with a lying tracker in the first tier and a real opentracker in the second: the
download completes and the liar is reported in exactly one console line.
"""

from __future__ import annotations

import shutil
import socket
import struct
from collections.abc import Iterator

import gevent
import gevent.server
import pytest
from opentracker_fixture import opentracker_factory  # noqa: F401  (fixture "opentracker")
from realpeers import (
    LOCALHOST,
    assert_same_tree,
    make_payload,
    make_torrent,
    peers_fixture,  # noqa: F401  (fixture "peers")
)
from test_tracker_tiers import REQ, Clock, World, make
from test_tracker_udp import FakeUDPTracker
from torrentcore_cli import torrentcore_factory  # noqa: F401  (fixture "torrentcore")

from torrentcore.bencode import encode
from torrentcore.errors import TrackerError
from torrentcore.tracker import AnnounceRequest, HTTPTracker, UDPTracker
from torrentcore.tracker.http import MAX_BODY
from torrentcore.tracker.peers import MAX_PEERS, parse_peer_dicts

needs_opentracker = pytest.mark.skipif(shutil.which("opentracker") is None, reason="opentracker is not installed")

INFO_HASH = bytes(range(20))
GOOD = encode({"interval": 1800, "peers": socket.inet_aton("10.0.0.1") + struct.pack(">H", 6881)})


def _request() -> AnnounceRequest:
    return AnnounceRequest(info_hash=INFO_HASH, peer_id=b"-TC0001-lyingtracker", port=6881)


def _compact(host: str, port: int) -> bytes:
    return socket.inet_aton(host) + struct.pack(">H", port)


class LyingTracker:
    """An HTTP/1.0 server on 127.0.0.1 written on raw sockets, so it can say anything.

    The path picks the lie; ``hits`` counts requests per path; ``torrentcore_hits`` those whose peer id
    starts with ``-TC`` (torrentcore's, not a libtorrent seeder's).
    """

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.torrentcore_hits = 0
        self.many_peers = b""
        self.server = gevent.server.StreamServer((LOCALHOST, 0), self._serve)
        self.server.start()

    def url(self, path: str) -> str:
        return f"http://{LOCALHOST}:{self.server.server_port}{path}"

    def stop(self) -> None:
        self.server.stop(timeout=1)

    def _serve(self, sock: socket.socket, _address) -> None:
        sock.settimeout(10)
        try:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    return
                head += chunk
            target = head.split(b" ", 2)[1].decode()
            path = target.split("?", 1)[0]
            self.hits[path] = self.hits.get(path, 0) + 1
            if "peer_id=-TC" in target:
                self.torrentcore_hits += 1
            self._answer(sock, path)
        except OSError:
            pass
        finally:
            sock.close()

    def _answer(self, sock: socket.socket, path: str) -> None:
        if path.startswith("/hops/"):
            left = int(path.rsplit("/", 1)[1])
            if left == 0:
                return self._reply(sock, 200, GOOD)
            return self._redirect(sock, f"/hops/{left - 1}?passkey=secret")  # relative Location
        if path == "/loop":
            return self._redirect(sock, self.url("/loop"))
        if path == "/to-file":
            return self._redirect(sock, "file:///etc/passwd")
        if path == "/to-ftp":
            return self._redirect(sock, f"ftp://{LOCALHOST}:21/announce")
        if path == "/to-gopher":
            return self._redirect(sock, "gopher://127.0.0.1/announce")
        if path == "/huge":
            # No Content-Length: only the streamed size cap can stop it.
            sock.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n")
            chunk = b"d8:intervali1800e5:peers" + b"9" * 65536
            for _ in range((MAX_BODY // len(chunk)) + 16):
                sock.sendall(chunk)
            return None
        if path == "/trickle":
            sock.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 100000\r\n\r\n")
            for _ in range(400):  # 20 s at most, far more than the client's timeout
                sock.sendall(b"d")
                gevent.sleep(0.05)
            return None
        if path == "/many-peers":
            return self._reply(sock, 200, encode({"interval": 1800, "peers": self.many_peers}))
        return self._reply(sock, 404, b"no such lie")

    @staticmethod
    def _reply(sock: socket.socket, status: int, body: bytes) -> None:
        sock.sendall(f"HTTP/1.0 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)

    @staticmethod
    def _redirect(sock: socket.socket, location: str) -> None:
        sock.sendall(f"HTTP/1.0 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode())


@pytest.fixture
def liar() -> Iterator[LyingTracker]:
    tracker = LyingTracker()
    yield tracker
    tracker.stop()


# -- module level -----------------------------------------------------------------------------------


def test_a_few_redirects_are_followed(liar):
    resp = HTTPTracker(liar.url("/hops/5")).announce(_request(), timeout=5)
    assert resp.peers == [("10.0.0.1", 6881)]
    assert [liar.hits.get(f"/hops/{n}") for n in range(6)] == [1] * 6


def test_too_many_redirects_are_refused(liar):
    with pytest.raises(TrackerError, match="more than 5 redirects"):
        HTTPTracker(liar.url("/hops/6")).announce(_request(), timeout=5)
    with pytest.raises(TrackerError, match="more than 5 redirects"):
        HTTPTracker(liar.url("/loop")).announce(_request(), timeout=5)
    assert liar.hits["/loop"] == 6  # the first request and five redirects, then it stops


@pytest.mark.parametrize(
    ("path", "shown"),
    [("/to-file", "file:///etc/passwd"), ("/to-ftp", "ftp://127.0.0.1:21/announce"), ("/to-gopher", "gopher://127.0.0.1/announce")],
)
def test_redirect_to_a_non_http_url_is_refused_clearly(liar, path, shown):
    with pytest.raises(TrackerError) as info:
        HTTPTracker(liar.url(path)).announce(_request(), timeout=5)
    text = str(info.value)
    assert text == f"tracker {liar.url(path)}: redirected to {shown}, which is not an http(s) URL"
    assert "\n" not in text


def test_redirect_error_never_shows_the_passkey(liar):
    # /hops/6 redirects with ?passkey=secret at every hop; the error names no URL query.
    with pytest.raises(TrackerError) as info:
        HTTPTracker(liar.url("/hops/6")).announce(_request(), timeout=5)
    assert "secret" not in str(info.value)


def test_body_over_the_cap_without_content_length(liar):
    with pytest.raises(TrackerError, match=f"larger than {MAX_BODY} bytes"):
        HTTPTracker(liar.url("/huge")).announce(_request(), timeout=10)


def test_trickled_reply_is_cut_at_the_timeout(liar):
    # The server trickles 400 bytes over 20 s and then closes: waiting for it would end in another error.
    with pytest.raises(TrackerError, match="timed out after 1 s"):
        HTTPTracker(liar.url("/trickle")).announce(_request(), timeout=1)


def test_thousands_of_bogus_peers_are_filtered_deduplicated_and_capped(liar):
    bogus = ["0.0.0.0", "255.255.255.255", "224.0.0.1", "239.255.255.250", "240.0.0.1"]
    entries = []
    for n in range(12_000):
        if n % 4 == 0:
            entries.append(_compact(bogus[n % len(bogus)], 6881))
        elif n % 4 == 1:
            entries.append(_compact("10.1.2.3", 0))  # port 0
        elif n % 4 == 2:
            entries.append(_compact("10.9.9.9", 6881))  # the same peer over and over
        else:
            entries.append(_compact(f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}", 1 + n % 65535))
    liar.many_peers = b"".join(entries)
    resp = HTTPTracker(liar.url("/many-peers")).announce(_request(), timeout=10)
    assert len(resp.peers) == len(set(resp.peers))
    assert len(resp.peers) <= MAX_PEERS // 4 + 2  # only the first MAX_PEERS entries are read
    hosts = {h for h, _ in resp.peers}
    assert not hosts & set(bogus)
    assert all(port for _, port in resp.peers)
    assert ("10.9.9.9", 6881) in resp.peers


def test_bogus_addresses_in_dictionary_peers():
    items = [{b"ip": ip, b"port": 6881} for ip in (b"0.0.0.0", b"::", b"ff02::1", b"::ffff:0.0.0.0", b"224.1.1.1")]
    items.append({b"ip": b"10.0.0.7", b"port": 51413})
    assert parse_peer_dicts(items) == [("10.0.0.7", 51413)]
    assert len(parse_peer_dicts([{b"ip": b"10.0.0.1", b"port": p} for p in range(1, 20_000)])) == MAX_PEERS


class _NoisyUDPTracker(FakeUDPTracker):
    """Every reply is preceded by ``noise`` datagrams with the same action and wrong transaction ids."""

    noise = 50

    def _reply(self, addr: tuple, action: int, tid: int, payload: bytes) -> None:
        for n in range(self.noise):
            self.sock.sendto(struct.pack(">II", action, (tid + 1 + n) & 0xFFFFFFFF) + payload, addr)
        super()._reply(addr, action, tid, payload)


def test_udp_replies_with_wrong_transaction_ids_are_ignored_at_every_step():
    tracker = _NoisyUDPTracker()
    try:
        tracker.peers = (_compact("0.0.0.0", 6881) + _compact("10.0.0.1", 6881) * 3 + _compact("10.0.0.2", 0)
                         + _compact("255.255.255.255", 1) + _compact("10.0.0.3", 51413))
        resp = UDPTracker(tracker.url, base_timeout=5).announce(_request(), timeout=5)
        assert resp.interval == 1800
        assert resp.peers == [("10.0.0.1", 6881), ("10.0.0.3", 51413)]
        # 100 wrong replies were read and dropped; nothing had to be sent twice.
        assert tracker.connects == 1 and len(tracker.announce_packets) == 1
    finally:
        tracker.close()


def test_a_failing_tracker_is_handed_out_for_reporting_once_per_failure_streak():
    world, clock = World(up={"http://good/ann"}), Clock()
    tiers = make([["http://bad/ann"], ["http://good/ann"]], world, clock)
    assert tiers.announce(REQ).url == "http://good/ann"  # the liar failed, the second tier answered
    assert tiers.unreported_failures() == ["http://bad/ann: connection refused"]
    clock.now += 3600  # back-off over: the liar is asked and fails again; still the same streak
    tiers.announce(REQ)
    assert world.called().count("http://bad/ann") == 2
    assert tiers.unreported_failures() == []
    world.up.add("http://bad/ann")  # it recovers ...
    clock.now += 3600
    tiers.announce(REQ)
    assert tiers.unreported_failures() == []
    world.up.discard("http://bad/ann")  # ... and fails again: a new streak, reported again
    clock.now += 3600
    tiers.announce(REQ)
    assert tiers.unreported_failures() == ["http://bad/ann: connection refused"]


# -- end to end ----------------------------------------------------------------------------------------


@needs_opentracker
@pytest.mark.parametrize(
    ("lie", "reported"),
    [("/to-file", "redirected to file:///etc/passwd, which is not an http(s) URL"),
     ("/huge", f"reply is larger than {MAX_BODY} bytes")],
)
def test_run_with_a_lying_tracker_and_a_working_one(tmp_path, liar, peers, opentracker, torrentcore, lie, reported):
    size = 3 << 20
    root = make_payload(tmp_path / "seed", size, seed=21, name="lying.bin")
    info_hash = make_torrent(root, [], piece_length=64 * 1024)[1]
    real = opentracker([info_hash])
    torrent = tmp_path / "lying.torrent"
    make_torrent(root, [[liar.url(lie)], [real.http_url]], piece_length=64 * 1024, out=torrent)
    seeder = peers.libtorrent("seeder", ignore_limits_on_local_network=False, upload_rate_limit=1_000_000)
    seeder.add_torrent(torrent, tmp_path / "seed", seed=True)
    assert seeder.wait_announced(timeout=15), peers.describe()

    run = torrentcore.run(torrent, tmp_path / "out")
    rc = run.wait(40)
    context = f"{run.describe()}\n{peers.describe()}\nliar hits: {liar.hits}"
    assert rc == 0, context
    assert "Traceback" not in run.stderr, context
    assert_same_tree(root, tmp_path / "out" / "lying.bin", context)
    assert liar.torrentcore_hits >= 1, context  # the liar (tier 0) was really asked first
    lines = [ln for ln in run.stdout.splitlines() if liar.url(lie) in ln]
    assert len(lines) == 1, context
    assert lines[0] == f"lying.bin: warning: tracker {liar.url(lie)}: {reported}", context
