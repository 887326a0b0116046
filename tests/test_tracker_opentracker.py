"""The tracker clients against a real tracker: Debian's opentracker on 127.0.0.1 (HTTP and UDP)."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable

import pytest
from opentracker_fixture import OpenTracker, opentracker_factory  # noqa: F401  (fixture "opentracker")

from torrentcore.errors import TrackerError
from torrentcore.tracker import (
    AnnounceRequest,
    HTTPTracker,
    TrackerTiers,
    UDPTracker,
    announce,
)

HASH = hashlib.sha1(b"torrentcore opentracker test").digest()
OTHER = hashlib.sha1(b"not whitelisted").digest()
Factory = Callable[..., OpenTracker]


def req(n: int, info_hash: bytes = HASH, event: str = "started", left: int = 1000) -> AnnounceRequest:
    return AnnounceRequest(
        info_hash=info_hash, peer_id=f"-TC0001-peer{n:08d}".encode(), port=40000 + n, left=left, event=event,
        key=n,
    )


def closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["http", "udp", "udp-no-path"])
def test_second_peer_sees_the_first(opentracker: Factory, kind: str) -> None:
    tracker = opentracker([HASH])
    url = {"http": tracker.http_url, "udp": tracker.udp_url,
           "udp-no-path": f"udp://127.0.0.1:{tracker.port}"}[kind]
    first = announce(url, req(1))
    second = announce(url, req(2))
    assert ("127.0.0.1", 40001) in second.peers
    assert ("127.0.0.1", 40002) in second.peers  # opentracker lists the announcing peer too
    assert ("127.0.0.1", 40001) in first.peers
    assert second.incomplete == 2 and second.complete == 0
    assert second.interval > 0
    assert second.url == url
    if kind == "http":
        assert second.min_interval is not None and 0 < second.min_interval <= second.interval


@pytest.mark.parametrize("kind", ["http", "udp"])
def test_hash_not_whitelisted_is_an_error(opentracker: Factory, kind: str) -> None:
    tracker = opentracker([HASH])
    url = tracker.http_url if kind == "http" else tracker.udp_url
    with pytest.raises(TrackerError) as info:
        announce(url, req(1, info_hash=OTHER), timeout=5)
    assert url in str(info.value)
    if kind == "http":
        assert "not authorized" in str(info.value)


def test_seeder_stopped_and_counts(opentracker: Factory) -> None:
    tracker = opentracker([HASH])
    http = HTTPTracker(tracker.http_url)
    udp = UDPTracker(tracker.udp_url)
    http.announce(req(1, left=0))  # a seeder
    resp = udp.announce(req(2))
    assert (resp.complete, resp.incomplete) == (1, 1)
    http.announce(req(1, left=0, event="stopped"))
    resp = udp.announce(req(2, event=""))
    assert ("127.0.0.1", 40001) not in resp.peers
    assert (resp.complete, resp.incomplete) == (0, 1)


def test_udp_connection_id_is_reused(opentracker: Factory) -> None:
    tracker = opentracker([HASH])
    udp = UDPTracker(tracker.udp_url)
    udp.announce(req(1))
    cached = udp.connection_id
    udp.announce(req(1, event=""))
    assert cached is not None and udp.connection_id == cached  # the tracker took the cached id


def test_add_reloads_the_whitelist(opentracker: Factory) -> None:
    tracker = opentracker([HASH])
    with pytest.raises(TrackerError):
        announce(tracker.http_url, req(1, info_hash=OTHER), timeout=5)
    tracker.add(OTHER)
    resp = announce(tracker.udp_url, req(1, info_hash=OTHER))
    assert resp.peers == [("127.0.0.1", 40001)]  # the fixture's probe peer did not linger


def test_tiers_fall_through_to_the_real_tracker(opentracker: Factory) -> None:
    tracker = opentracker([HASH])
    dead = f"udp://127.0.0.1:{closed_udp_port()}/announce"
    tiers = TrackerTiers([[dead], [tracker.udp_url, tracker.http_url]])
    resp = tiers.announce(req(1), timeout=3)
    assert resp.url in (tracker.udp_url, tracker.http_url)
    assert tiers.tiers[1][0] == resp.url
    assert dead in tiers.failures()
    stopped = tiers.announce(req(1, event="stopped"))
    assert stopped.url == resp.url


def test_context_manager(tmp_path) -> None:
    with OpenTracker(tmp_path, [HASH]) as tracker:
        assert tracker.running
        assert announce(tracker.http_url, req(7)).peers == [("127.0.0.1", 40007)]
    assert not tracker.running
