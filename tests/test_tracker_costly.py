"""Valid but costly tracker replies (issue 13): millions of values, ``interval 1``.

A 4 MB reply of two million tiny values is refused by the value budget before it is decoded
(:data:`~torrentcore.tracker.http.MAX_REPLY_TOKENS`); an ``interval`` below libtorrent's
``min_announce_interval`` (:data:`~torrentcore.tracker.tiers.MIN_ANNOUNCE_INTERVAL`) is raised to it, so a
tracker cannot make a download announce every second. The engine tests download from a real libtorrent
seeder named with ``--peer`` while a fake tracker on 127.0.0.1 says these things.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import gevent.server
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from realpeers import (
    LOCALHOST,
    assert_same_tree,
    make_payload,
    make_torrent,
    peers_fixture,  # noqa: F401  (fixture "peers")
)
from test_tracker_tiers import REQ
from torrentcore_cli import torrentcore_factory  # noqa: F401  (fixture "torrentcore")

from torrentcore.bencode import encode
from torrentcore.errors import TrackerError
from torrentcore.tracker import AnnounceResponse, TrackerTiers
from torrentcore.tracker.http import MAX_BODY, MAX_REPLY_TOKENS, parse_announce_reply
from torrentcore.tracker.tiers import MIN_ANNOUNCE_INTERVAL

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "fuzz"))
import harness  # noqa: E402

RUN_TIMEOUT = 60
#: A valid reply of about 4 MB: ``interval 1`` and a peer list of 1.99 million empty lists (under the
#: general 2,000,000-value limit of the decoder, so it used to be decoded in full).
COSTLY = b"d8:intervali1e5:peersl" + b"le" * 1_990_000 + b"ee"


_peer_dict = st.fixed_dictionaries({}, optional={
    b"ip": st.one_of(st.binary(max_size=20), st.sampled_from([b"10.0.0.1", b"::1", b"0.0.0.0", b"host.example"])),
    b"port": st.integers(-2, 70000), b"peer id": st.binary(max_size=20)})
_reply = st.fixed_dictionaries({}, optional={
    b"interval": st.one_of(st.integers(-5, 2**40), st.binary(max_size=4)),
    b"min interval": st.integers(-5, 2**40),
    b"peers": st.one_of(st.binary(max_size=60), st.lists(_peer_dict, max_size=5), st.integers()),
    b"peers6": st.one_of(st.binary(max_size=60), st.lists(st.integers(), max_size=2)),
    b"warning message": st.binary(max_size=400), b"failure reason": st.binary(max_size=40),
    b"tracker id": st.binary(max_size=8), b"complete": st.integers(-3, 10), b"incomplete": st.integers(-3, 10)})


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(st.one_of(_reply.map(encode), st.binary(max_size=120)))
def test_any_tracker_reply_parses_sensibly_or_is_one_line(body):
    harness.check_tracker_reply(body)  # the property fuzz/fuzz_tracker.py checks, with fixed examples


def test_costly_reply_is_refused_before_it_is_decoded():
    assert len(COSTLY) <= MAX_BODY
    with pytest.raises(TrackerError, match=f"more than {MAX_REPLY_TOKENS} values"):
        parse_announce_reply(COSTLY, "http://t/announce")


def test_largest_useful_reply_still_fits_the_budget():
    peers = [{"ip": f"10.{i >> 8 & 255}.{i & 255}.1", "peer id": b"x" * 20, "port": 1 + i} for i in range(5000)]
    resp = parse_announce_reply(encode({"interval": 1800, "peers": peers}), "http://t/announce")
    assert len(resp.peers) == 5000


class _Says:
    """A tracker client answering ``interval`` (and ``min interval`` 1)."""

    def __init__(self, url: str, interval: int) -> None:
        self.url, self.interval = url, interval

    def announce(self, req, timeout: float = 15.0) -> AnnounceResponse:
        return AnnounceResponse(interval=self.interval, min_interval=1, url=self.url)


@pytest.mark.parametrize(("interval", "expected"), [(1, MIN_ANNOUNCE_INTERVAL), (0, MIN_ANNOUNCE_INTERVAL),
                                                    (MIN_ANNOUNCE_INTERVAL + 1, MIN_ANNOUNCE_INTERVAL + 1)])
def test_short_intervals_are_raised_to_the_minimum(interval, expected):
    tiers = TrackerTiers([["http://a/ann"]], client_factory=lambda url: _Says(url, interval))
    resp = tiers.announce(REQ)
    assert (resp.interval, resp.min_interval) == (expected, 1)
    assert MIN_ANNOUNCE_INTERVAL == 300  # libtorrent's min_announce_interval default (5 * 60 s)


class FakeTracker:
    """An HTTP/1.0 tracker on 127.0.0.1: answers ``body(peer)`` and records each announce's event."""

    def __init__(self, body) -> None:
        self.body = body
        self.events: list[str] = []
        self.peer = (LOCALHOST, 0)
        self.server = gevent.server.StreamServer((LOCALHOST, 0), self._serve)
        self.server.start()

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.server.server_port}/announce"

    def _serve(self, sock: socket.socket, _address) -> None:
        sock.settimeout(10)
        try:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    return
                head += chunk
            query = parse_qs(urlsplit(head.split(b" ", 2)[1].decode()).query)
            if query.get("peer_id", [""])[0].startswith("-TC"):
                self.events.append(query.get("event", [""])[0])
            body = self.body(self.peer)
            sock.sendall(f"HTTP/1.0 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        except OSError:
            pass
        finally:
            sock.close()


@pytest.fixture
def tracker_factory() -> Iterator:
    made: list[FakeTracker] = []

    def factory(body) -> FakeTracker:
        made.append(FakeTracker(body))
        return made[-1]

    yield factory
    for tracker in made:
        tracker.server.stop(timeout=1)


def _compact(peer: tuple[str, int]) -> bytes:
    return socket.inet_aton(peer[0]) + struct.pack(">H", peer[1])


def _download(tmp_path, peers, torrentcore, tracker: FakeTracker, *extra: str, no_seed: bool = True):
    root = make_payload(tmp_path / "seed", (2 << 20) + 99, seed=6, name="c.bin")
    torrent = tmp_path / "c.torrent"
    make_torrent(root, [tracker.url], piece_length=64 * 1024, out=torrent)
    seeder = peers.libtorrent("seeder")
    seeder.add_torrent(torrent, tmp_path / "seed", seed=True)
    tracker.peer = seeder.endpoint
    run = torrentcore.run(torrent, tmp_path / "out", *extra, peers=[seeder.endpoint], no_seed=no_seed)
    assert run.wait(RUN_TIMEOUT) == 0, run.describe()
    assert_same_tree(root, tmp_path / "out" / "c.bin", run.describe())
    return run


def test_interval_1_does_not_make_a_run_announce_every_second(tmp_path, peers, torrentcore, tracker_factory):
    tracker = tracker_factory(lambda peer: encode({"interval": 1, "min interval": 1, "peers": _compact(peer)}))
    # Seed for 3 s after completing: with interval 1 that used to be a regular announce every second.
    run = _download(tmp_path, peers, torrentcore, tracker, "--seed-time", "0.05", no_seed=False)
    assert "" not in tracker.events, (tracker.events, run.describe())
    assert tracker.events[0] == "started" and tracker.events[-1] == "stopped", tracker.events
    assert tracker.events.count("started") == 1 and tracker.events.count("completed") <= 1, tracker.events
    assert tracker.events.count("stopped") == 1, tracker.events


def test_costly_reply_costs_one_line_and_the_download_goes_on(tmp_path, peers, torrentcore, tracker_factory):
    tracker = tracker_factory(lambda peer: COSTLY)
    run = _download(tmp_path, peers, torrentcore, tracker)
    lines = [line for line in run.stdout.splitlines() if f"more than {MAX_REPLY_TOKENS} values" in line]
    # One warning line per refused announce ("started", then "completed" at the end of the download).
    assert 1 <= len(lines) <= 2 and all(line.startswith("c.bin: warning: tracker: ") for line in lines), (
        run.describe())
    assert "Traceback" not in run.stderr, run.describe()


def test_a_download_that_does_not_seed_announces_completed_then_stopped(tmp_path, peers, torrentcore, tracker_factory):
    # At completion a --no-seed run waits for its "completed" announce (bounded), then stops: the tracker
    # hears both, in order (it used to be a fixed 0.1 s pause before stopping).
    tracker = tracker_factory(lambda peer: encode({"interval": 1800, "peers": _compact(peer)}))
    run = _download(tmp_path, peers, torrentcore, tracker)
    assert tracker.events == ["started", "completed", "stopped"], (tracker.events, run.describe())
