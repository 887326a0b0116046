"""uTP (BEP 29) in-process: the packet parser's bounds, streams between two multiplexers on loopback
(sequence numbers wrapping), a lossy, duplicating, reordering, delaying UDP proxy between them, a peer
that stops answering, hostile datagrams (unknown ids, wrong acks, a SYN flood of 10,000 ids, 0- and
65,535-byte datagrams, an absurd selective ack), and the DHT answering on the session's shared socket.

Interop with real clients is in tests/test_utp_interop.py. No test asserts a timing: waits are bounded
by gevent.Timeout, rates are not compared.
"""

from __future__ import annotations

import os
import random
import socket
import sys
import tracemalloc

import gevent
import gevent.socket
import pytest
from udpproxy import LossyProxy

from torrentcore.utp import Multiplexer, UTPSocket
from torrentcore.utp import connection as uc
from torrentcore.utp import multiplexer as um
from torrentcore.utp import packet as pk

LOCAL = "127.0.0.1"


def _udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LOCAL, 0))
    return s


class Pair:
    """Two multiplexers; the second accepts and keeps the accepted sockets in ``accepted``."""

    def __init__(self) -> None:
        self.accepted: list[UTPSocket] = []
        self.udp = [_udp(), _udp()]
        self.client = Multiplexer(self.udp[0]).start()
        self.server = Multiplexer(self.udp[1], lambda sock, addr: self.accepted.append(sock)).start()

    def close(self) -> None:
        for mux in (self.client, self.server):
            mux.stop()
        for s in self.udp:
            s.close()


@pytest.fixture
def pair():
    p = Pair()
    yield p
    p.close()


def _read_all(sock: UTPSocket, limit: int) -> bytes:
    out = bytearray()
    while len(out) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        out += chunk
    return bytes(out)


def _transfer(client_mux: Multiplexer, server_addr, accepted: list, payload: bytes, timeout: float = 30):
    """Send ``payload`` client -> server and the server's echo of its length back; return (received, sock)."""
    with gevent.Timeout(timeout):
        sock = client_mux.connect(server_addr, timeout=10)
        sock.settimeout(20)
        while not accepted:
            gevent.sleep(0.01)
        server = accepted[-1]
        server.settimeout(20)
        reader = gevent.spawn(_read_all, server, len(payload))
        sock.sendall(payload)
        got = reader.get()
        server.sendall(b"%d" % len(got))
        assert sock.recv(100) == b"%d" % len(payload)
        sock.close()
        server.close()
    return got, sock


# --- the packet -------------------------------------------------------------------------------------


def _connect(pair):
    """A uTP connection from ``pair.client`` to ``pair.server``, once the server has accepted it (the caller
    bounds the wait with its gevent.Timeout); the accepted side is ``pair.accepted[0]``."""
    sock = pair.client.connect(pair.server.address, timeout=10)
    while not pair.accepted:
        gevent.sleep(0.01)
    return sock


def test_packet_round_trip_and_bounds():
    data = pk.build(pk.ST_DATA, 7, 1, 2, 3, 0xFFFF, 0, b"payload", sack=b"\x01\x00\x00\x80")
    p = pk.parse(data)
    assert (p.type, p.connection_id, p.seq_nr, p.sack, p.payload) == (pk.ST_DATA, 7, 0xFFFF, b"\x01\x00\x00\x80",
                                                                        b"payload")
    for bad in (b"", b"\x41" * 19, b"\x40" + bytes(19), b"\x71" + bytes(19),  # short, version 0, type 7
                data[:22],  # extension cut short
                pk.build(pk.ST_STATE, 1, 0, 0, 0, 0, 0)[:1] + b"\x05" + bytes(18)):  # extension 5 past the end
        with pytest.raises(pk.PacketError):
            pk.parse(bad)
    # An absurd selective ack (255 bytes) is cut to MAX_SACK_BYTES; 65,535 bytes parse within bounds.
    head = bytearray(pk.build(pk.ST_STATE, 1, 0, 0, 0, 0, 0))
    head[1] = 1
    absurd = pk.parse(bytes(head) + b"\x00\xff" + b"\xff" * 255)
    assert len(absurd.sack) == pk.MAX_SACK_BYTES
    huge = pk.parse(pk.build(pk.ST_DATA, 1, 0, 0, 0, 0, 0, bytes(65535 - 20)))
    assert len(huge.payload) == 65515
    # Chains of extensions are bounded.
    chain = bytearray(pk.build(pk.ST_STATE, 1, 0, 0, 0, 0, 0))
    chain[1] = 2
    with pytest.raises(pk.PacketError):
        pk.parse(bytes(chain) + b"\x02\x00" * 100)


def test_sequence_numbers_compare_across_the_wrap():
    assert pk.seq_less(0xFFFF, 0) and not pk.seq_less(0, 0xFFFF)
    assert pk.seq_diff(2, 0xFFFE) == 4 and pk.seq_diff(0xFFFE, 2) == -4


def test_is_utp_datagram_tells_krpc_apart():
    assert um.is_utp_datagram(pk.build(pk.ST_SYN, 1, 0, 0, 0, 0, 0))
    assert not um.is_utp_datagram(b"d1:ad2:id20:" + bytes(20) + b"e1:q4:ping1:t2:aa1:y1:qe")
    assert not um.is_utp_datagram(b"")


# --- streams ----------------------------------------------------------------------------------------


def test_stream_byte_exact_with_sequence_numbers_wrapping(pair, monkeypatch):
    # Every connection starts 40 packets before the 16-bit wrap, so the transfer crosses it.
    monkeypatch.setattr(uc.random, "randint", lambda a, b: min(b, 0xFFFF - 40))
    payload = os.urandom(2 * 1024 * 1024 + 17)
    got, sock = _transfer(pair.client, pair.server.address, pair.accepted, payload)
    assert got == payload
    assert sock.conn.seq_nr < 0x8000  # it wrapped


def test_small_writes_coalesce(pair):
    with gevent.Timeout(20):
        sock = _connect(pair)
        before = sock.conn.packets_sent
        for _ in range(2000):
            sock.sendall(b"0123456789")  # 20,000 bytes in 10-byte writes
        server = pair.accepted[0]
        server.settimeout(10)
        assert _read_all(server, 20000) == b"0123456789" * 2000
        # Far fewer packets than writes (Nagle: one small packet in flight, the rest coalesces).
        assert sock.conn.packets_sent - before < 200
        sock.close()


def test_mse_and_the_wire_code_run_over_a_utp_socket(pair):
    """peer/connection.Connection (framing, timeouts, setsockopt) over UTPSocket, both ways."""
    from torrentcore.peer import messages as msg
    from torrentcore.peer.connection import Connection

    with gevent.Timeout(20):
        sock = _connect(pair)
        a, b = Connection(sock, pair.server.address), Connection(pair.accepted[0], pair.client.address)
        a.send_handshake(b"\x01" * 20, b"-TC0001-aaaaaaaaaaaa", bytes(8))
        assert b.read_handshake() == (bytes(8), b"\x01" * 20, b"-TC0001-aaaaaaaaaaaa")
        a.start_writer()
        a.send(msg.have(7))
        assert b.read_message() == (msg.HAVE, (7).to_bytes(4, "big"))
        a.close()
        with pytest.raises((ConnectionError, OSError)):
            b.read_message()


# --- loss, duplicates, reordering, delay ---------------------------------------------------------------


def test_stream_through_loss_duplicates_reordering_and_delay(pair):
    proxy = LossyProxy(pair.server.address)
    try:
        payload = os.urandom(1024 * 1024 + 3)
        got, sock = _transfer(pair.client, proxy.address, pair.accepted, payload, timeout=60)
        assert got == payload
        packets = len(payload) // uc.MAX_PAYLOAD + 1
        # Retransmissions are bounded: a few times the 2 % loss, never a storm.
        assert sock.conn.retransmissions < packets * 0.25, (sock.conn.retransmissions, packets)
    finally:
        proxy.close()


def test_a_peer_that_stops_answering_is_timed_out(pair, monkeypatch):
    monkeypatch.setattr(uc, "MIN_RTO", 0.05)
    monkeypatch.setattr(uc, "MAX_RTO", 0.2)
    proxy = LossyProxy(pair.server.address, loss=0, dup=0, delay=0, jitter=0)
    try:
        with gevent.Timeout(30):
            sock = pair.client.connect(proxy.address, timeout=10)
            sock.settimeout(30)
            sock.sendall(b"hello")
            while not pair.accepted:
                gevent.sleep(0.01)
            proxy.blackhole = True
            with pytest.raises(TimeoutError):
                for _ in range(1000):
                    sock.sendall(b"x" * 100_000)
        assert sock.conn.finished and sock.conn.timeouts > uc.MAX_TIMEOUTS
        assert not pair.client.conns
    finally:
        proxy.close()


def test_connect_to_a_silent_port_times_out_and_to_a_closed_port_is_refused(pair):
    silent = _udp()
    closed = _udp()
    closed_addr = closed.getsockname()
    closed.close()
    try:
        with gevent.Timeout(20):
            with pytest.raises(TimeoutError):
                pair.client.connect(silent.getsockname(), timeout=1.5)
            with pytest.raises(ConnectionRefusedError):  # ICMP port unreachable (IP_RECVERR on Linux)
                pair.client.connect(closed_addr, timeout=5)
        assert not pair.client.conns
    finally:
        silent.close()


class _CountingUDP:
    """A real UDP socket that counts the reader's ``recvfrom`` calls (everything else goes to the socket)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.recvfrom_calls = 0

    def recvfrom(self, size: int):
        self.recvfrom_calls += 1
        return self._sock.recvfrom(size)

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="IP_RECVERR is Linux's")
def test_an_icmp_error_whose_code_a_send_took_first_is_drained_and_the_reader_waits():
    # A SYN to a closed port queues an ICMP error on the socket (IP_RECVERR) and sets its pending error; a send
    # (the ticker's, another connection's) returns that pending error first, so the reader never gets it from
    # recvfrom, while the error queue keeps the socket "readable" (EPOLLERR). The reader spun a core on it
    # (seen seeding to aria2c: 1 core busy for seconds with no peer) until the queue was read.
    udp, live, closed = _udp(), _udp(), _udp()
    closed_addr = closed.getsockname()
    closed.close()
    counting = _CountingUDP(udp)
    got: list[bytes] = []
    mux = Multiplexer(counting, fallback=lambda data, addr: got.append(data))
    try:
        with gevent.Timeout(20):
            udp.sendto(pk.build(pk.ST_SYN, 7, 0, 0, 1, 1, 0), closed_addr)
            gevent.sleep(0.1)  # the ICMP answer arrives (loopback)
            with pytest.raises(ConnectionRefusedError):  # this send takes the pending error: the state above
                udp.sendto(b"x", live.getsockname())
            mux.start()
            gevent.sleep(0.5)
            assert counting.recvfrom_calls < 20, f"the reader spun: {counting.recvfrom_calls} reads in 0.5 s"
            live.sendto(b"d1:y1:qe", udp.getsockname())  # and it still reads what comes next
            while not got:
                gevent.sleep(0.01)
        assert got == [b"d1:y1:qe"] and counting.recvfrom_calls < 40
    finally:
        mux.stop()
        for s in (udp, live):
            s.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="IP_RECVERR is Linux's")
def test_a_send_that_meets_the_icmp_error_of_another_address_is_tried_again():
    # The pending error of an ICMP answer (a SYN to a closed port) is returned by the next send, whatever its
    # address: that datagram was not sent. The multiplexer's sender tries it once more.
    udp, live, closed = _udp(), _udp(), _udp()
    closed_addr = closed.getsockname()
    closed.close()
    live.settimeout(5)
    mux = Multiplexer(udp)
    try:
        send = mux._sender(live.getsockname())
        udp.sendto(pk.build(pk.ST_SYN, 7, 0, 0, 1, 1, 0), closed_addr)
        gevent.sleep(0.1)  # the ICMP answer arrives (loopback)
        send(b"to the live peer")
        assert live.recvfrom(100)[0] == b"to the live peer"
        assert mux.stats["dropped_send"] == 0
    finally:
        mux.stop()
        for s in (udp, live):
            s.close()


def test_the_timer_runs_only_while_there_are_connections(pair):
    # With no connection the timer's greenlet is gone: it woke the event loop 20 times a second for nothing in
    # a session that only seeds over TCP.
    assert not pair.client.ticking and not pair.server.ticking
    with gevent.Timeout(30):
        sock = _connect(pair)
        assert pair.client.ticking and pair.server.ticking  # a connection on each side: both timers run
        sock.close()
        pair.accepted[0].close()
        while pair.client.conns or pair.server.conns or pair.client.ticking or pair.server.ticking:
            gevent.sleep(0.05)  # the closed connections end on the timer's ticks, then the timer ends
        # A new connection starts it again, and it works as the first did.
        got, _ = _transfer(pair.client, pair.server.address, pair.accepted, b"y" * 50_000)
        assert got == b"y" * 50_000


def test_a_reset_carrying_our_send_id_ends_the_connection(pair):
    # A peer that forgot the connection answers with the id of the packet it got (our send id), not ours to
    # receive: the connection ends at once instead of retransmitting until it gives up.
    with gevent.Timeout(20):
        sock = _connect(pair)
        server_conn = next(iter(pair.server.conns.values()))
        client_addr = pair.udp[0].getsockname()
        reset = pk.build(pk.ST_RESET, server_conn.send_id, 0, 0, 0, 1, 0)
        pair.server.dispatch(reset, client_addr)
        assert server_conn.finished and not pair.server.conns
        assert pair.server.stats["unknown"] == 0
        # A reset with an id that is neither is still unknown, and ends nothing.
        client_conn = next(iter(pair.client.conns.values()))
        pair.client.dispatch(pk.build(pk.ST_RESET, (client_conn.send_id + 7) & 0xFFFF, 0, 0, 0, 1, 0),
                             pair.udp[1].getsockname())
        assert not client_conn.finished and pair.client.stats["unknown"] == 1
        sock.close()


def test_resets_to_unknown_ids_stay_rate_limited_with_no_timer_running():
    # The limit of resets per TICK is kept by the clock, not by the timer (which does not run without connections).
    udp, attacker = _udp(), _udp()
    mux = Multiplexer(udp)
    now = [1000.0]
    mux.clock = lambda: now[0]
    attacker.settimeout(0.5)

    def resets_for(count: int) -> int:
        for i in range(count):
            mux.dispatch(pk.build(pk.ST_DATA, 1000 + i, 0, 0, 65536, 1, 0), attacker.getsockname())
        got = 0
        try:
            while True:
                attacker.recvfrom(100)
                got += 1
        except (TimeoutError, OSError):
            return got

    try:
        assert not mux.ticking
        assert resets_for(100) == um.RESETS_PER_TICK
        assert resets_for(10) == 0  # the same moment: the limit holds
        now[0] += um.TICK + 0.001
        assert resets_for(100) == um.RESETS_PER_TICK  # the next period: resets again
        assert not mux.ticking and mux.stats["unknown"] == 210
    finally:
        mux.stop()
        udp.close()
        attacker.close()


# --- hostile input ------------------------------------------------------------------------------------


def test_unknown_ids_wrong_acks_odd_sizes_and_absurd_sacks_leave_no_state(pair):
    attacker = _udp()
    try:
        with gevent.Timeout(30):
            sock = _connect(pair)
            server_conn = pair.accepted[0].conn
            rng = random.Random(5)
            for i in range(2000):  # unknown ids, every type but SYN
                forged = pk.build(rng.choice((0, 1, 2, 3)), rng.randrange(65536), 0, 0, 0, i, i)
                attacker.sendto(forged, pair.server.address)
            attacker.sendto(b"", pair.server.address)
            attacker.sendto(b"\x01" * 65507, pair.server.address)  # the largest UDP datagram over IPv4
            head = bytearray(pk.build(pk.ST_STATE, server_conn.recv_id, 0, 0, 0, 0, 0))
            head[1] = 1
            attacker.sendto(bytes(head) + b"\x00\xfc" + b"\xff" * 252, pair.server.address)
            # Forged packets for the real connection with wrong ack numbers, from the client's own address
            # cannot be sent here; the connection's state machine gets them directly instead:
            for ack in (server_conn.seq_nr + 1000, server_conn.seq_nr - 5000, 0x8000 + server_conn.seq_nr):
                forged = pk.parse(pk.build(pk.ST_DATA, server_conn.recv_id, 0, 0, 65536,
                                           (server_conn.ack_nr + 1) & 0xFFFF, ack & 0xFFFF, b"evil"))
                server_conn.on_packet(forged, pair.server.clock())
            absurd = pk.parse(bytes(head) + b"\x00\xfc" + b"\xff" * 252)
            server_conn.on_packet(absurd, pair.server.clock())
            gevent.sleep(0.3)
            assert len(pair.server.conns) == 1 and len(pair.client.conns) == 1
            assert pair.server.stats["unknown"] >= 2000 and pair.server.stats["malformed"] >= 1
            # Resets to unknown ids are rate-limited per tick.
            attacker.settimeout(0.5)
            resets = 0
            try:
                for _ in range(3000):
                    attacker.recvfrom(100)
                    resets += 1
            except (TimeoutError, OSError):
                pass
            assert resets < 2000
            # The real connection still works, byte-exact (the forged "evil" bytes were dropped: bad acks).
            sock.settimeout(10)
            sock.sendall(b"still fine")
            pair.accepted[0].settimeout(10)
            assert pair.accepted[0].recv(100) == b"still fine"
    finally:
        attacker.close()


def test_syn_flood_of_ten_thousand_ids_is_bounded(pair):
    attacker = _udp()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        with gevent.Timeout(30):
            for i in range(10_000):
                attacker.sendto(pk.build(pk.ST_SYN, i, 0, 0, 65536, 1, 0), pair.server.address)
                if i % 500 == 0:
                    gevent.sleep(0.01)  # let the reader keep up (the kernel buffer would drop the rest)
            gevent.sleep(0.3)
        grown = tracemalloc.get_traced_memory()[0] - base
        assert len(pair.server.conns) <= um.MAX_HALF_OPEN and len(pair.server.half_open) <= um.MAX_HALF_OPEN
        assert len(pair.accepted) <= um.MAX_HALF_OPEN
        assert pair.server.stats["refused"] > 5000
        assert grown < 8 * 1024 * 1024, grown
        # A real client still connects once the half-open ones expire (forced here by the clock).
        pair.server.tick(pair.server.clock() + um.HALF_OPEN_TIMEOUT + 1)
        assert not pair.server.half_open
        with gevent.Timeout(20):
            pair.client.connect(pair.server.address, timeout=10).close()
    finally:
        tracemalloc.stop()
        attacker.close()


def test_the_dht_answers_on_the_sessions_shared_udp_socket(tmp_path):
    """The session's DHT node and uTP share the listen port: a KRPC ping and a uTP SYN to it are answered."""
    from torrentcore import Session
    from torrentcore.config import SessionConfig
    from torrentcore.dht import DHTNode

    with Session(SessionConfig(listen_port=0, listen_hosts=(LOCAL,), dht=True, dht_bootstrap=((LOCAL, 9),),
                               state_dir=str(tmp_path))) as session:
        node = session.dht_node()
        assert node is not None and node.port == session.port and session.utp is not None
        other = DHTNode(host=LOCAL, bootstrap=[]).start()
        try:
            with gevent.Timeout(20):
                assert other.ping((LOCAL, session.port), timeout=5) == node.node_id
                udp = _udp()
                mux = Multiplexer(udp).start()
                try:
                    mux.connect((LOCAL, session.port), timeout=5).close()
                finally:
                    mux.stop()
                    udp.close()
        finally:
            other.stop()


@pytest.mark.parametrize(("transports", "dht", "bound"), [(("tcp",), False, False), (("tcp",), True, True),
                                                          (("utp", "tcp"), False, True)])
def test_the_udp_port_is_bound_only_for_utp_or_the_dht(tmp_path, transports, dht, bound):
    """``transports`` without uTP and no DHT: no UDP socket on the listen port (nothing would read it)."""
    from torrentcore import Session
    from torrentcore.config import SessionConfig

    with Session(SessionConfig(listen_port=0, listen_hosts=(LOCAL,), dht=dht, dht_bootstrap=((LOCAL, 9),),
                               transports=transports, state_dir=str(tmp_path))) as session:
        assert (session.utp is not None) is bound
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if bound:
                with pytest.raises(OSError):
                    probe.bind((LOCAL, session.port))
            else:
                probe.bind((LOCAL, session.port))  # free: the session holds no UDP socket there
        finally:
            probe.close()


def test_dialer_prefers_utp_and_falls_back_to_tcp(pair):
    """uTP peer: uTP. TCP-only peer (closed UDP port: ICMP), and TCP peer with a silent UDP port: TCP, the
    latter remembered so its next connection goes to TCP at once. uTP only: a TCP-only peer fails."""
    from torrentcore.transport import Dialer

    dialer = Dialer(("utp", "tcp"), pair.client.connect)
    tcp_only = socket.socket()
    tcp_only.bind((LOCAL, 0))
    tcp_only.listen(4)
    silent_tcp = socket.socket()
    silent_tcp.bind((LOCAL, 0))
    silent_tcp.listen(4)
    silent_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent_udp.bind(silent_tcp.getsockname())
    opened = []
    try:
        with gevent.Timeout(30):
            opened.append(dialer.connect(pair.server.address, 10))
            assert isinstance(opened[-1], UTPSocket)
            for address in (tcp_only.getsockname(), silent_tcp.getsockname(), silent_tcp.getsockname()):
                opened.append(dialer.connect(address, 10))
                assert isinstance(opened[-1], socket.socket)
            assert dialer.counts == {"utp": 1, "tcp_after_utp": 2, "tcp": 1}
            assert silent_tcp.getsockname() in dialer.no_utp
            with pytest.raises(OSError):
                Dialer(("utp",), pair.client.connect).connect(tcp_only.getsockname(), 1)  # ICMP may be rate-limited
            assert isinstance(Dialer(("tcp",), None).connect(tcp_only.getsockname(), 5), socket.socket)
    finally:
        for s in (*opened, tcp_only, silent_tcp, silent_udp):
            s.close()


def test_dialer_takes_utp_first_with_a_peer_that_said_it_speaks_utp(pair):
    """PEX ``added.f`` 0x04 (``utp=True``): uTP first even for an address remembered as TCP-only, TCP after
    a uTP that does not answer; without the flag the remembered address goes to TCP at once. Through
    handshake.dial, the flag reaches the connect callback only when it is True."""
    from torrentcore.peer import handshake
    from torrentcore.transport import Dialer

    dialer = Dialer(("utp", "tcp"), pair.client.connect)
    utp_peer = pair.server.address
    also_tcp = socket.socket()  # a TCP listener on the uTP peer's port: TCP would connect there too
    also_tcp.bind(utp_peer)
    also_tcp.listen(4)
    silent_tcp = socket.socket()
    silent_tcp.bind((LOCAL, 0))
    silent_tcp.listen(4)
    silent_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent_udp.bind(silent_tcp.getsockname())
    opened = []
    try:
        with gevent.Timeout(30):
            dialer._remember(utp_peer)  # as if uTP had lost a race to it before
            opened.append(dialer.connect(utp_peer, 10))
            assert isinstance(opened[-1], socket.socket) and not isinstance(opened[-1], UTPSocket)
            assert dialer.counts == {"utp": 0, "tcp_after_utp": 0, "tcp": 1}
            opened.append(dialer.connect(utp_peer, 10, True))
            assert isinstance(opened[-1], UTPSocket) and utp_peer not in dialer.no_utp
            # A wrong flag (UDP port open but silent): TCP after uTP's share of the timeout.
            opened.append(dialer.connect(silent_tcp.getsockname(), 2, True))
            assert isinstance(opened[-1], socket.socket) and not isinstance(opened[-1], UTPSocket)
            assert dialer.counts == {"utp": 1, "tcp_after_utp": 1, "tcp": 1}

            calls = []

            def connect(*args):
                calls.append(args[2:])
                raise OSError("refused")
            identity = handshake.Identity(b"\1" * 20, b"-TC0001-" + b"0" * 12, bytes(8))
            for flag in (None, False, True):
                with pytest.raises(OSError):
                    handshake.dial(utp_peer, identity, encryption="disable", connect=connect, peer_utp=flag)
            assert calls == [(), (), (True,)]
    finally:
        for s in (*opened, also_tcp, silent_tcp, silent_udp):
            s.close()


def test_a_recv_timeout_bounds_the_whole_call_while_acks_keep_arriving(pair):
    with gevent.Timeout(20):
        sock = _connect(pair)
        server = pair.accepted[0]
        server.settimeout(0.5)

        def chatter():  # bare ST_STATE packets: they wake the reader but carry no data
            for _ in range(200):
                sock.conn._emit(pk.ST_STATE, sock.conn.seq_nr, b"")
                gevent.sleep(0.02)
        g = gevent.spawn(chatter)
        with pytest.raises(TimeoutError):
            server.recv(10)
        assert not g.dead  # it timed out while the chatter still went on
        g.kill()


def test_connection_id_collisions(pair):
    """Our ids never collide per address; a peer's SYN whose ids collide with a live connection from the same
    address neither replaces nor disturbs it."""
    with gevent.Timeout(20):
        socks = [pair.client.connect(pair.server.address, timeout=10) for _ in range(20)]
        keys = list(pair.client.conns)
        assert len(keys) == 20 == len({k[1] for k in keys})
        while len(pair.accepted) < 20:
            gevent.sleep(0.01)
        victim = pair.accepted[0]
        before = dict(pair.server.conns)
        # The client's address sends a SYN whose receive id is the victim's: seen as that connection's SYN again.
        syn = pk.build(pk.ST_SYN, (victim.conn.recv_id - 1) & 0xFFFF, 0, 0, 65536, 12345, 0)
        pair.client.sock.sendto(syn, pair.server.address)
        gevent.sleep(0.2)
        assert pair.server.conns == before and len(pair.accepted) == 20
        victim.settimeout(10)
        socks[0].sendall(b"intact")
        assert victim.recv(10) == b"intact"


def test_utp_over_ipv6_in_a_session(tmp_path):
    """A session listening on ::1 too has a uTP socket there; its dialer reaches another session over IPv6."""
    from torrentcore import Session
    from torrentcore.config import SessionConfig
    from torrentcore.listener import ipv6_available

    if not ipv6_available():
        pytest.skip("no IPv6 on this host")
    config = SessionConfig(listen_port=0, listen_hosts=(LOCAL, "::1"), dht=False, state_dir=str(tmp_path))
    with Session(config) as a, Session(config) as b:
        assert a.utp6 is not None and b.utp6 is not None
        with gevent.Timeout(20):
            sock = a.dialer.connect(("::1", b.port), 10)
            assert isinstance(sock, UTPSocket) and sock.getpeername() == ("::1", b.port)
            sock.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="IPV6_RECVERR is Linux's")
def test_a_syn_to_a_closed_ipv6_port_is_refused_at_once():
    """As over IPv4 (IP_RECVERR), the ICMPv6 port-unreachable answering a SYN ends the connect with
    ConnectionRefusedError (IPV6_RECVERR), not after the connect timeout."""
    from torrentcore.listener import ipv6_available

    if not ipv6_available():
        pytest.skip("no IPv6 on this host")
    udp, closed = (socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) for _ in range(2))
    for s in (udp, closed):
        s.bind(("::1", 0))
    closed_addr = closed.getsockname()[:2]
    closed.close()
    mux = Multiplexer(udp).start()
    try:
        with gevent.Timeout(20), pytest.raises(ConnectionRefusedError):
            mux.connect(closed_addr, timeout=15)
        assert not mux.conns
    finally:
        mux.stop()
        udp.close()
