"""The uTP connection's state machine (torrentcore/utp/connection.py) between two in-memory ends on a
simulated clock: a link that drops the packets a test chooses, so the moment of a loss is exact.

Real UDP, loss, reordering and real clients are in tests/test_utp.py and tests/test_utp_interop.py.
Time here is simulated (ticks of the multiplexer's period), so the bounds are counts, not timings.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from torrentcore.utp import connection as uc
from torrentcore.utp import multiplexer as um
from torrentcore.utp import packet as pk


class Link:
    """Two connections, ``a`` (the initiator) and ``b``, and the datagrams on the way between them.
    ``drop_a(packet)`` / ``drop_b(packet)`` decide which of a's / b's datagrams are lost; b's reader takes
    everything after each batch while ``reading`` is true."""

    def __init__(self, drop_a: Callable[[pk.Packet], bool] = lambda p: False) -> None:
        self.now = 1000.0
        self.to_b: list[bytes] = []
        self.to_a: list[bytes] = []
        self.drop_a = drop_a
        self.drop_b: Callable[[pk.Packet], bool] = lambda p: False
        self.reading = True
        self.dropped = 0
        self.received = bytearray()
        self.a = uc.UTPConnection(self._from_a, 7, 8, self.now)
        self.b: uc.UTPConnection | None = None

    def _from_a(self, data: bytes) -> None:
        if self.drop_a(pk.parse(data)):
            self.dropped += 1
        else:
            self.to_b.append(data)

    def _from_b(self, data: bytes) -> None:
        if self.drop_b(pk.parse(data)):
            self.dropped += 1
        else:
            self.to_a.append(data)

    def pump(self) -> None:
        """Deliver every datagram on the way, both directions, until none is left (bounded)."""
        for _ in range(10_000):
            if not self.to_b and not self.to_a:
                return
            batch, self.to_b = self.to_b, []
            for data in batch:
                p = pk.parse(data)
                if self.b is None:
                    assert p.type == pk.ST_SYN
                    self.b = uc.UTPConnection(self._from_b, 8, 7, self.now)
                    self.b.accept(p, self.now)
                else:
                    self.b.on_packet(p, self.now)
            if self.b is not None:
                self.b.flush_ack()  # the multiplexer's delayed ack at the end of a read batch
                if self.reading:
                    self.received += self.b.read(1 << 30, self.now)
            batch, self.to_a = self.to_a, []
            for data in batch:
                self.a.on_packet(pk.parse(data), self.now)
            self.a.flush_ack()
        raise AssertionError("the two ends never went quiet")

    def tick(self) -> None:
        """One period of the multiplexer's ticker, then deliver what it sent."""
        self.now += um.TICK
        self.a.tick(self.now)
        if self.b is not None:
            self.b.tick(self.now)
        self.pump()


def _ticks(seconds: float) -> int:
    return int(seconds / um.TICK)


def test_a_whole_window_lost_at_once_is_resent_in_a_few_round_trips():
    """The stall seen against libtorrent: every packet of a window lost together (234 of them there). The
    retransmission timer fired once per packet, resending only the oldest, its back-off growing to
    MAX_RTO (8 s): ~1 packet per 8 s. Now one timeout marks the window lost and it is resent as acks
    come back."""
    lost_seqs: set[int] = set()
    link = Link(lambda p: p.type == pk.ST_DATA and p.seq_nr in lost_seqs)
    link.a.seq_nr = 0xFFFF - 45  # the lost window spans the wrap of the sequence numbers
    link.a.connect(link.now)
    link.pump()
    assert link.a.state == uc.CONNECTED
    payload = os.urandom(600 * uc.MAX_PAYLOAD + 11)
    link.a.write(payload[:40 * uc.MAX_PAYLOAD], link.now)  # a first part grows the window a little
    link.pump()
    assert bytes(link.received) == payload[:40 * uc.MAX_PAYLOAD]
    first = link.a.seq_nr
    window = link.a.cc.window // uc.MAX_PAYLOAD
    assert window > 20 and first > 0xFFF0, (window, first)
    # The whole next window is lost on the way (first transmissions only).
    lost_seqs.update((first + i) & 0xFFFF for i in range(window))
    sent = link.a.packets_sent
    link.a.write(payload[40 * uc.MAX_PAYLOAD:], link.now)
    assert link.a.packets_sent - sent == window and link.dropped == window
    lost_seqs.clear()
    # Simulated seconds: one timeout (0.5 s after the RTT of a loss-free link), then round trips of no time.
    # Before the fix this took ~8 s per lost packet.
    for _ in range(_ticks(3 * uc.MIN_RTO + 2 * uc.INITIAL_RTO)):
        link.tick()
        if len(link.received) == len(payload):
            break
    assert bytes(link.received) == payload, (len(link.received), len(payload), link.a.timeouts, link.a.rto)
    assert not link.a.outbuf and link.a.in_flight == 0 and not link.a.lost
    # Each lost packet resent once (no storm of the whole buffer).
    assert link.a.retransmissions <= window + 2, (link.a.retransmissions, window)


def test_after_a_timeout_the_packets_that_did_arrive_are_not_resent():
    """The first packet of a window is lost and so are the acks of the others: after the timeout the
    oldest is resent, its ack covers the rest, and those leave the resend queue unsent."""
    armed = [False]
    link = Link()

    def drop_first_data(p: pk.Packet) -> bool:
        if armed[0] and p.type == pk.ST_DATA:
            armed[0] = False
            return True
        return False
    link.drop_a = drop_first_data
    link.a.connect(link.now)
    link.pump()
    armed[0] = True
    payload = os.urandom(10 * uc.MAX_PAYLOAD)
    link.a.write(payload, link.now)
    assert link.dropped == 1 and len(link.to_b) == 9
    batch, link.to_b = link.to_b, []
    for data in batch:  # b keeps packets 2..10 for reordering; its (selective) acks are lost
        link.b.on_packet(pk.parse(data), link.now)
    link.b.flush_ack()
    assert link.to_a
    link.to_a.clear()
    for _ in range(_ticks(2 * uc.INITIAL_RTO)):
        link.tick()
        if len(link.received) == len(payload):
            break
    assert bytes(link.received) == payload
    assert link.a.retransmissions == 1, link.a.retransmissions
    assert not link.a.outbuf and link.a.in_flight == 0


def test_a_zero_receive_window_that_opens_while_its_update_is_lost_is_probed():
    """b's reader stops: its window closes (acks say 0 bytes). When it reads again, the ack saying so is
    lost; a's zero-window probe after a timeout finds the open window and the stream goes on."""
    link = Link()
    link.a.connect(link.now)
    link.pump()
    link.reading = False
    payload = os.urandom(uc.RECV_WINDOW + 200 * uc.MAX_PAYLOAD)
    sent = 0
    for _ in range(_ticks(10.0)):  # a's writer keeps its send buffer full; b buffers until its window is full
        sent += link.a.write(memoryview(payload)[sent:], link.now)
        link.tick()
        if link.b.recv_buf and uc.RECV_WINDOW - len(link.b.recv_buf) < uc.MAX_PACKET:
            break
    assert uc.RECV_WINDOW - len(link.b.recv_buf) < uc.MAX_PACKET and link.a.peer_wnd < uc.MAX_PACKET
    link.drop_b = lambda p: p.type == pk.ST_STATE and not p.payload  # the window update is lost
    link.received += link.b.read(1 << 30, link.now)
    link.pump()
    link.drop_b = lambda p: False
    link.reading = True
    for _ in range(_ticks(3 * uc.MAX_RTO)):
        sent += link.a.write(memoryview(payload)[sent:], link.now)
        link.tick()
        if len(link.received) == len(payload):
            break
    assert bytes(link.received) == payload, (len(link.received), len(payload))
