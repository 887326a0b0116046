"""Engine bookkeeping that needs no network (addresses are only remembered, never dialled)."""

from __future__ import annotations

from torrentcore.peer_list import MAX_CANDIDATES, PeerList


def test_peer_list_from_a_tracker_is_bounded():
    peers = PeerList(lambda: 0)
    peers.add((f"127.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 6881) for i in range(MAX_CANDIDATES + 500))
    assert len(peers.candidates) == MAX_CANDIDATES
    for c in list(peers.candidates.values())[:10]:
        c.failures = 3
    peers.add([("127.200.0.1", 1), ("127.200.0.2", 2)])
    assert ("127.200.0.1", 1) in peers.candidates and ("127.200.0.2", 2) in peers.candidates
    assert len(peers.candidates) == MAX_CANDIDATES


def test_a_seed_does_not_dial_known_seeds():
    peers = PeerList(lambda: 0)
    peers.add([("10.0.0.1", 1), ("10.0.0.2", 2)])
    peers.mark_seed(("10.0.0.1", 1))
    chosen = peers.ready(10, lambda a: False, we_are_seed=True)
    assert [c.address for c in chosen] == [("10.0.0.2", 2)]
    for c in chosen:
        peers.released(c)
    again = peers.ready(10, lambda a: False, we_are_seed=False)
    assert {c.address for c in again} == {("10.0.0.1", 1), ("10.0.0.2", 2)}


def test_our_own_port_on_a_local_address_is_never_a_candidate():
    peers = PeerList(lambda: 6881)
    assert peers.add([("127.0.0.1", 6881), ("127.0.0.1", 6882)]) == 1
    assert ("127.0.0.1", 6881) not in peers
