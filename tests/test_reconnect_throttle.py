"""Peers that misbehave and reconnect, and dials to one address on many ports (issue 13, round two).

* :class:`~torrentcore.reconnect_throttle.ReconnectThrottle` as a unit (a fake clock): the second drop of a peer
  (address and peer id) within the window refuses that peer for a doubling time, while its address only holds
  new connections back for a moment, never refusing another peer id there.
* A real session on 127.0.0.1 with a flooder that comes back under the same peer id: its third connection is
  refused right after its handshake (nothing sent back), while a fresh peer from the same address (loopback,
  like every peer here) still gets its handshake answered. (The flood tests with an honest libtorrent peer are in
  tests/test_wire_flood.py; the rates in benchmarks/flood_wire.py.)
* Dials: a tracker-like peer list naming one address on 24 ports gets at most ``max_connections_per_ip``
  connections open to it at once, counted on the receiving side.

No timing is asserted; every wait is bounded.
"""

from __future__ import annotations

import socket
import struct

import gevent
import pytest
from fakepeer import handshake, recv_exact
from floodpeer import EXT_RESERVED, Flooder, fresh_handshake
from realpeers import LOCALHOST, info_hash_of, make_payload, make_torrent, wait_until

from torrentcore import reconnect_throttle as rt
from torrentcore.peer_list import PeerList
from torrentcore.reconnect_throttle import ReconnectThrottle
from torrentcore.slots import ConnectionSlots


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_second_drop_refuses_that_peer_for_a_doubling_time_and_only_delays_its_address():
    clock = _Clock()
    throttle = ReconnectThrottle(clock)
    ip, bad, honest = "127.0.0.1", b"-FL0001-aaaaaaaaaaaa", b"-LT2000-honesthonest"
    assert throttle.dropped(ip, bad) == 0.0  # one drop: nothing yet
    assert not throttle.refuses(ip, bad) and throttle.delay(ip) == 0.0
    assert throttle.dropped(ip, bad) == rt.REFUSE_BASE  # the second in the window
    assert throttle.refuses(ip, bad) and not throttle.refuses(ip, honest)  # never another peer id there
    assert not throttle.refuses("127.0.0.2", bad)  # nor the same id elsewhere
    assert 0.0 < throttle.delay(ip) <= rt.DELAY_MAX and throttle.delay("127.0.0.2") == 0.0
    clock.now += rt.REFUSE_BASE + 0.1
    assert not throttle.refuses(ip, bad)  # served its time
    assert throttle.dropped(ip, bad) == 2 * rt.REFUSE_BASE  # ...and doubles
    for _ in range(40):
        last = throttle.dropped(ip, bad)
    assert last == rt.REFUSE_MAX and throttle.delay(ip) == rt.DELAY_MAX  # both capped
    assert throttle.refused == 1 and throttle.delayed == 2
    # Forgotten after the window past its refusal: the next drop counts as the first again.
    clock.now += rt.REFUSE_MAX + rt.WINDOW + 1
    assert not throttle.refuses(ip, bad) and throttle.delay(ip) == 0.0
    assert throttle.dropped(ip, bad) == 0.0
    # Bounded memory: the least recently dropped are forgotten first.
    for n in range(rt.MAX_RECORDS + 10):
        throttle.dropped(f"10.0.{n // 256}.{n % 256}", bad)
    assert len(throttle) == rt.MAX_RECORDS and len(throttle._addresses) == rt.MAX_RECORDS


def test_a_flooder_coming_back_under_its_peer_id_is_refused_and_a_fresh_peer_is_not(tmp_path):
    """A real session seeding on 127.0.0.1; the flooder sends keep-alives on every connection and reconnects."""
    from torrentcore import Session, SessionConfig, TorrentConfig

    root = make_payload(tmp_path / "data", 1 << 20, seed=7, name="t.bin")
    torrent = tmp_path / "t.torrent"
    make_torrent(root, [], piece_length=64 * 1024, out=torrent)
    info_hash = info_hash_of(torrent)
    config = SessionConfig(listen_port=0, listen_hosts=(LOCALHOST,), dht=False)
    with Session(config) as session:
        handle = session.add_torrent(str(torrent), str(tmp_path / "data"), TorrentConfig(seed_ratio=None))
        assert wait_until(lambda: handle.status().state == "seeding", 20), handle.status()
        endpoint = (LOCALHOST, session.port)
        flooder = Flooder(endpoint, info_hash, kinds=("keep-alive",), rounds=4, max_bytes=16 << 20).start()
        assert flooder.join(30), flooder.connections
        conns = flooder.connections
        assert len(conns) == 4, conns
        # Two connections dropped for the flood after our handshake, then refused: no handshake comes back.
        assert [c.handshake_answered for c in conns] == [True, True, False, False], conns
        assert all(c.closed_by_them for c in conns), conns
        throttle = session.slots.reconnects
        assert throttle.refused == 2
        # A fresh peer from the same address: held back a moment, answered.
        ok, _ = fresh_handshake(endpoint, info_hash, timeout=10)
        assert ok and throttle.delayed == 1
        # Another kind under another id from there: taken in and dropped for what it does, not refused.
        other = Flooder(endpoint, info_hash, kinds=("have",), rounds=1, max_bytes=16 << 20).start()
        assert other.join(30) and other.connections[0].handshake_answered, other.connections
        assert throttle.refused == 2


def test_same_id_after_an_honest_end_is_never_refused(tmp_path):
    """A peer that closes its connections itself (no protocol error) reconnects freely, loopback or not."""
    from torrentcore import Session, SessionConfig, TorrentConfig

    root = make_payload(tmp_path / "data", 256 * 1024, seed=9, name="t.bin")
    torrent = tmp_path / "t.torrent"
    make_torrent(root, [], piece_length=64 * 1024, out=torrent)
    info_hash = info_hash_of(torrent)
    with Session(SessionConfig(listen_port=0, listen_hosts=(LOCALHOST,), dht=False)) as session:
        handle = session.add_torrent(str(torrent), str(tmp_path / "data"), TorrentConfig(seed_ratio=None))
        assert wait_until(lambda: handle.status().state == "seeding", 20), handle.status()
        for _ in range(5):
            with socket.create_connection((LOCALHOST, session.port), timeout=10) as sock:
                sock.sendall(handshake(info_hash, b"-LT2000-honesthonest", EXT_RESERVED)
                             + struct.pack(">IB", 1, 2))  # INTERESTED, then we hang up
                assert recv_exact(sock, 68)[28:48] == info_hash
        assert session.slots.reconnects.refused == 0 and len(session.slots.reconnects) == 0


# --- outgoing per IP -------------------------------------------------------------------------------


def test_peer_list_keeps_its_choice_within_the_room_of_each_address():
    peers = PeerList(lambda: 0)
    peers.add([("10.0.0.1", 1000 + n) for n in range(20)] + [("10.0.0.2", 7), ("10.0.0.3", 7)])
    room = {"10.0.0.1": 3}
    chosen = peers.ready(10, lambda a: False, we_are_seed=False, ip_room=lambda ip: room.get(ip, 8))
    by_ip = [c.address[0] for c in chosen]
    assert by_ip.count("10.0.0.1") == 3 and {"10.0.0.2", "10.0.0.3"} <= set(by_ip) and len(chosen) == 5
    slots = ConnectionSlots(50, max_per_ip=2)
    assert slots.open_to("10.0.0.1") and slots.open_to("10.0.0.1") and not slots.open_to("10.0.0.1")
    assert slots.room_to("10.0.0.1") == 0 and slots.room_to("10.0.0.2") == 2
    slots.closed_to("10.0.0.1")
    assert slots.room_to("10.0.0.1") == 1 and slots.open_from("10.0.0.1")  # incoming counted apart


class _Victim:
    """24 listening sockets on 127.0.0.1 that accept and hold connections, never answering (not a BitTorrent
    peer: the address a hostile tracker reply names on every port); counts the connections open at once."""

    PORTS = 24

    def __init__(self) -> None:
        self.listeners = []
        for _ in range(self.PORTS):
            sock = socket.socket()
            sock.bind((LOCALHOST, 0))
            sock.listen(64)
            self.listeners.append(sock)
        self.open = 0
        self.most = 0
        self.accepted = 0
        self._held = []
        self._greenlets = [gevent.spawn(self._accept, s) for s in self.listeners]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [(LOCALHOST, s.getsockname()[1]) for s in self.listeners]

    def _accept(self, listener: socket.socket) -> None:
        while True:
            conn, _ = listener.accept()
            self.accepted += 1
            self.open += 1
            self.most = max(self.most, self.open)
            self._held.append(conn)
            gevent.spawn(self._hold, conn)

    def _hold(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(60)
            while conn.recv(4096):
                pass
        except OSError:
            pass
        finally:
            self.open -= 1
            conn.close()

    def close(self) -> None:
        gevent.killall(self._greenlets, timeout=2)
        for sock in self.listeners + self._held:
            sock.close()


@pytest.mark.parametrize("per_ip", [3])
def test_dials_to_one_address_on_many_ports_stay_within_the_per_ip_cap(tmp_path, per_ip):
    from torrentcore import Session, SessionConfig, TorrentConfig

    root = make_payload(tmp_path / "seed", 256 * 1024, seed=11, name="t.bin")
    torrent = tmp_path / "t.torrent"
    make_torrent(root, [], piece_length=64 * 1024, out=torrent)
    victim = _Victim()
    try:
        config = SessionConfig(listen_port=0, listen_hosts=(LOCALHOST,), dht=False, max_connections_per_ip=per_ip)
        with Session(config) as session:
            session.add_torrent(str(torrent), str(tmp_path / "out"),
                                TorrentConfig(peers=tuple(victim.addresses), seed_ratio=None))
            assert wait_until(lambda: victim.accepted >= per_ip, 20), victim.accepted
            # Bounded watch: 30 looks over some connect rounds; without the cap all 24 ports are dialled at once.
            for _ in range(30):
                gevent.sleep(0.1)
                assert victim.open <= per_ip
            assert victim.most == per_ip, victim.most
    finally:
        victim.close()
