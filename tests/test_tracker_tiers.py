"""BEP 12 tiers: order, fall-through, promotion, back-off, "stopped", with scripted clients."""

from __future__ import annotations

import random

import pytest

from torrentcore.errors import TrackerError
from torrentcore.tracker import (
    AnnounceRequest,
    AnnounceResponse,
    TrackerTiers,
    UDPTracker,
)

REQ = AnnounceRequest(info_hash=b"\x11" * 20, peer_id=b"-TC0001-tierstest000", port=6881)
STOPPED = AnnounceRequest(info_hash=b"\x11" * 20, peer_id=b"-TC0001-tierstest000", port=6881, event="stopped")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeClient:
    """Answers or fails according to ``world.up``; records every call in ``world.calls``."""

    def __init__(self, url: str, world: World) -> None:
        self.url = url
        self.world = world

    def announce(self, req: AnnounceRequest, timeout: float = 15.0) -> AnnounceResponse:
        self.world.calls.append((self.url, req.event, timeout))
        if self.url in self.world.up:
            return AnnounceResponse(interval=1800, peers=[("10.0.0.1", 1)], url=self.url)
        raise TrackerError(f"tracker {self.url}: connection refused")


class World:
    def __init__(self, up: set[str] | None = None) -> None:
        self.up: set[str] = set(up or ())
        self.calls: list[tuple[str, str, float]] = []
        self.made: list[str] = []

    def factory(self, url: str) -> FakeClient:
        if not url.startswith(("http://", "udp://")):
            raise TrackerError(f"tracker {url}: unsupported scheme")
        self.made.append(url)
        return FakeClient(url, self)

    def called(self) -> list[str]:
        return [url for url, _event, _timeout in self.calls]


def make(tiers: list[list[str]], world: World, clock: Clock | None = None, seed: int = 1) -> TrackerTiers:
    return TrackerTiers(
        tiers, rng=random.Random(seed), clock=clock or Clock(), client_factory=world.factory
    )


TIER1 = ["http://a/ann", "http://b/ann", "http://c/ann"]
TIER2 = ["udp://d:1", "udp://e:1"]


def test_shuffle_within_tiers_only() -> None:
    orders = set()
    for seed in range(20):
        tiers = make([TIER1, TIER2], World(), seed=seed)
        urls = tiers.urls
        assert sorted(urls[:3]) == sorted(TIER1) and sorted(urls[3:]) == sorted(TIER2)
        orders.add(tuple(urls))
    assert len(orders) > 1  # the shuffle does shuffle


def test_shuffle_is_done_once() -> None:
    world = World(up=set(TIER1))
    tiers = make([TIER1], world)
    first = tiers.urls
    for _ in range(3):
        tiers.announce(REQ)
    assert tiers.urls == first
    assert world.called() == [first[0]] * 3


def test_empty_tiers_blank_and_duplicate_urls_dropped() -> None:
    tiers = make([[], [" http://a/ann ", ""], ["http://a/ann", "udp://d:1"]], World())
    assert tiers.tiers == [["http://a/ann"], ["udp://d:1"]]


def test_fall_through_to_next_tier_and_promotion() -> None:
    world = World(up={TIER2[0], TIER2[1]})
    tiers = make([TIER1, TIER2], world)
    order2 = tiers.tiers[1]
    world.up = {order2[1]}  # only the second tracker of tier 2 answers
    resp = tiers.announce(REQ)
    assert resp.url == order2[1]
    assert world.called() == tiers.tiers[0] + order2  # tier 1 first, in order
    assert tiers.tiers[1] == [order2[1], order2[0]]  # promoted within its tier
    assert set(tiers.failures()) == set(TIER1) | {order2[0]}
    assert "connection refused" in tiers.failures()[TIER1[0]]


def test_promotion_within_first_tier() -> None:
    world = World()
    tiers = make([TIER1], world)
    order = tiers.urls
    world.up = {order[2]}
    assert tiers.announce(REQ).url == order[2]
    assert tiers.urls == [order[2], order[0], order[1]]
    world.calls.clear()
    world.up = set(TIER1)
    assert tiers.announce(REQ).url == order[2]  # the promoted tracker is tried first
    assert world.called() == [order[2]]


def test_failed_tracker_is_in_backoff_then_retried() -> None:
    clock = Clock()
    world = World()
    tiers = make([["http://a/ann", "http://b/ann"]], world, clock)
    first, second = tiers.urls
    world.up = {second}
    tiers.announce(REQ)  # first fails, second answers and is promoted
    assert tiers.urls == [second, first]
    clock.now += 10.0
    world.up = set()
    world.calls.clear()
    with pytest.raises(TrackerError):
        tiers.announce(REQ)  # second fails now; first is in back-off and skipped
    assert world.called() == [second]
    assert tiers.backoff_remaining(first) == pytest.approx(5.0)
    assert tiers.backoff_remaining(second) == pytest.approx(15.0)
    clock.now += 5.0
    world.calls.clear()
    world.up = {first}
    assert tiers.announce(REQ).url == first  # first's back-off is over; second still in back-off
    assert world.called() == [first]
    assert first not in tiers.failures()


def test_backoff_doubles_up_to_max_and_resets_on_success() -> None:
    clock = Clock()
    world = World()
    tiers = make([["http://a/ann"]], world, clock)
    url = tiers.urls[0]
    delays = []
    for _ in range(10):
        with pytest.raises(TrackerError):
            tiers.announce(REQ)
        delays.append(tiers.backoff_remaining(url))
        clock.now += delays[-1]
    assert delays[:4] == [15.0, 30.0, 60.0, 120.0]
    assert max(delays) == 1800.0 and delays[-1] == 1800.0
    world.up = {url}
    tiers.announce(REQ)
    world.up = set()
    with pytest.raises(TrackerError):
        tiers.announce(REQ)
    assert tiers.backoff_remaining(url) == 15.0


def test_all_in_backoff_picks_soonest_by_time() -> None:
    clock = Clock()
    world = World()
    tiers = make([["http://a/ann"], ["http://b/ann"]], world, clock)
    world.up = {"http://a/ann"}
    tiers.announce(REQ)  # a answers; b untouched
    world.up = {"http://b/ann"}
    tiers.announce(REQ)  # a fails (15 s), b answers
    clock.now += 5
    world.up = set()
    with pytest.raises(TrackerError):
        tiers.announce(REQ)  # a is skipped, b fails (15 s from now: ends 5 s after a's)
    clock.now += 1
    world.calls.clear()
    world.up = {"http://a/ann", "http://b/ann"}
    resp = tiers.announce(REQ)
    assert world.called() == ["http://a/ann"]  # a's back-off ends first
    assert resp.url == "http://a/ann"


def test_error_lists_every_tracker() -> None:
    world = World()
    tiers = make([TIER1, TIER2], world)
    with pytest.raises(TrackerError) as info:
        tiers.announce(REQ)
    text = str(info.value)
    assert text.startswith("no tracker answered")
    for url in TIER1 + TIER2:
        assert f"{url}: connection refused" in text
    with pytest.raises(TrackerError) as info:
        tiers.announce(REQ)
    assert "in back-off" in str(info.value)


def test_unsupported_scheme_is_never_tried() -> None:
    world = World(up={"udp://d:1"})
    tiers = make([["wss://x/ann"], ["udp://d:1"]], world)
    for _ in range(3):
        assert tiers.announce(REQ).url == "udp://d:1"
    assert world.made == ["udp://d:1"]
    assert "unsupported scheme" in tiers.failures()["wss://x/ann"]
    only_bad = make([["wss://x/ann", "magnet:?x"]], World())
    with pytest.raises(TrackerError, match="unsupported scheme"):
        only_bad.announce(REQ)


def test_no_trackers() -> None:
    with pytest.raises(TrackerError, match="no trackers"):
        make([], World()).announce(REQ)


def test_stopped_goes_once_to_each_tracker_that_answered() -> None:
    clock = Clock()
    world = World()
    tiers = make([["http://a/ann"], ["http://b/ann"], ["http://c/ann"]], world, clock)
    world.up = {"http://b/ann"}
    tiers.announce(REQ)  # a fails, b answers
    clock.now += 100
    world.up = {"http://a/ann"}
    tiers.announce(REQ)  # a answers
    world.calls.clear()
    world.up = set()
    with pytest.raises(TrackerError):
        tiers.announce(STOPPED, timeout=30)
    assert sorted(world.called()) == ["http://a/ann", "http://b/ann"]
    assert all(event == "stopped" and timeout <= tiers.stopped_timeout for _u, event, timeout in world.calls)
    world.calls.clear()
    world.up = {"http://b/ann"}
    resp = tiers.announce(STOPPED)
    assert resp.url == "http://b/ann"
    assert sorted(world.called()) == ["http://a/ann", "http://b/ann"]


def test_stopped_with_no_tracker_that_answered() -> None:
    world = World()
    tiers = make([["http://a/ann"]], world)
    with pytest.raises(TrackerError, match="none has answered"):
        tiers.announce(STOPPED)
    assert world.calls == []


def test_clients_are_kept_per_url() -> None:
    world = World(up={"http://a/ann"})
    tiers = make([["http://a/ann"]], world)
    for _ in range(3):
        tiers.announce(REQ)
    assert world.made == ["http://a/ann"]


def test_total_timeout_bounds_the_walk() -> None:
    world = World()
    tiers = make([TIER1, TIER2], world)
    with pytest.raises(TrackerError, match="ran out of time"):
        tiers.announce(REQ, timeout=10, total_timeout=0)
    assert world.calls == []
    with pytest.raises(TrackerError):
        tiers.announce(REQ, timeout=10, total_timeout=60)
    assert all(timeout <= 10 for _u, _e, timeout in world.calls) and len(world.calls) == 5


def test_real_udp_clients_fall_through_closed_ports() -> None:
    import socket

    ports = []
    for _ in range(2):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    urls = [f"udp://127.0.0.1:{p}" for p in ports]
    tiers = TrackerTiers(
        [[urls[0]], [urls[1]]],
        client_factory=lambda url: UDPTracker(url, base_timeout=0.2, max_retries=0),
    )
    with pytest.raises(TrackerError) as info:
        tiers.announce(REQ, timeout=1)
    assert all(url in str(info.value) for url in urls)
    assert set(tiers.failures()) == set(urls)
