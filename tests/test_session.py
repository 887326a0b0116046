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


def test_peers_that_all_hang_up_after_our_handshake_get_one_warning(tmp_path, monkeypatch):
    """Encryption-only or uTP-only swarms close every plaintext TCP handshake: say so instead of "0 peers"."""
    import socket
    import time

    import gevent
    from realpeers import LOCALHOST, make_payload, make_torrent

    from torrentcore import events, swarm
    from torrentcore.config import SessionConfig, TorrentConfig
    from torrentcore.session import Session

    monkeypatch.setattr(swarm, "ALL_CLOSED_WARNING", 0.5)
    root = make_payload(tmp_path / "seed", 100_000, seed=1)
    torrent = tmp_path / "t.torrent"
    make_torrent(root, [], piece_length=16384, out=torrent)
    servers = []
    for _ in range(3):
        server = socket.socket()
        server.bind((LOCALHOST, 0))
        server.listen(8)
        servers.append(server)

    def hang_up(server) -> None:
        for _ in range(20):  # bounded: a few dials each
            conn, _addr = server.accept()
            conn.recv(68)
            conn.close()

    greenlets = [gevent.spawn(hang_up, s) for s in servers]
    warnings = []
    try:
        with Session(SessionConfig(listen_port=0, listen_hosts=(LOCALHOST,), dht=False)) as session:
            peers = tuple((LOCALHOST, s.getsockname()[1]) for s in servers)
            session.add_torrent(str(torrent), str(tmp_path / "out"), TorrentConfig(seed=False, peers=peers))
            deadline = time.monotonic() + 30
            for event in session.events(timeout=10):
                if time.monotonic() > deadline:
                    break
                if isinstance(event, events.Error) and "closed the connection" in event.message:
                    warnings.append(event.message)
                    break
    finally:
        gevent.killall(greenlets)
        for s in servers:
            s.close()
    assert len(warnings) == 1 and "encrypted or uTP" in warnings[0], warnings
