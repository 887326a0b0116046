"""One uTP connection's state machine (BEP 29 as libtorrent speaks it), free of I/O.

The :class:`~torrentcore.utp.multiplexer.Multiplexer` hands it parsed packets (:meth:`on_packet`) and
the time (:meth:`tick`, from one ticker shared by every connection); it hands datagrams to the
``send`` callback. :class:`~torrentcore.utp.socket.UTPSocket` reads and writes its byte streams.

As libtorrent does: the initiator picks ``recv_id`` and sends its ST_SYN with ``connection_id =
recv_id`` and every later packet with ``send_id = recv_id + 1``; the responder answers with an
ST_STATE whose ``seq_nr`` is its (random) first sequence number, not consumed, so the initiator sets
``ack_nr = seq_nr - 1``. ST_SYN, ST_DATA and ST_FIN consume a sequence number; ST_STATE does not.
Sequence and ack numbers wrap at 2^16.

Sending: written bytes are cut into packets of at most :data:`MAX_PAYLOAD` bytes while the congestion
window (:mod:`.ledbat`) and the peer's receive window allow; a packet smaller than that waits while
another small one is in flight (Nagle), so small writes coalesce. Losses are repaired by the
retransmission timer (RTO from RTT as in TCP, Karn's rule, exponential back-off), by fast
retransmit after 3 duplicate acks, and by the holes the selective ACK shows.

A timeout means the whole window is presumed lost, as libtorrent does: every unacked packet is marked
lost and leaves the bytes in flight, the oldest is resent at once, and the others are resent before
any new data as the (reset) congestion window allows, the selective ACKs dropping those that did
arrive. The back-off is counted in timeouts in a row, so it ends with the first acknowledgement.
Resending only the oldest packet once per timeout would cost one RTO per packet of a burst lost
whole (234 packets at 8 s each, seen against libtorrent on loopback).

Receiving: in-order payload goes to a read buffer of at most :data:`RECV_WINDOW` bytes (the window
we advertise); packets ahead of it wait in a reorder buffer of at most :data:`MAX_REORDER` packets, and
the two together within that window.

Bounds: nothing from the peer grows state past those buffers; an ack number outside what we sent
drops the packet; a peer silent for :data:`IDLE_TIMEOUT`, or one that acknowledges nothing over
:data:`MAX_TIMEOUTS` back-to-back timeouts, ends the connection. About 400 lines on purpose: the
send and receive halves share the ack numbers, the timers and the window.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable

from . import packet as pk
from .ledbat import Ledbat

#: Largest datagram sent: libtorrent reads datagrams into a 1500-byte buffer and never sends more than
#: an Ethernet MTU minus IPv4 and UDP headers (1472), loopback included; larger ones would be cut.
MAX_PACKET = 1472
#: Payload of a full packet: room is kept for the largest selective ACK, which may ride on any packet.
MAX_PAYLOAD = MAX_PACKET - pk.HEADER_SIZE - 2 - pk.MAX_SACK_BYTES
#: Bytes of received stream we buffer for the reader; also the window we advertise.
RECV_WINDOW = 1024 * 1024
#: Bytes written but not yet sent that we hold before ``sendall`` waits.
SEND_BUFFER = 1024 * 1024
#: Packets ahead of the next expected one kept for reordering (beyond: dropped, the peer resends).
MAX_REORDER = 512
#: How far behind our oldest unacked packet an ack may be (a reordered packet) before it is dropped.
MAX_OLD_ACK = 2048
#: Retransmission timeout bounds, seconds (BEP 29: at least 500 ms; libtorrent's utp_min_timeout).
MIN_RTO = 0.5
MAX_RTO = 8.0
INITIAL_RTO = 1.0
#: Back-to-back retransmission timeouts without progress before the peer is declared gone
#: (libtorrent: utp_num_resends = 6; SYNs: utp_syn_resends = 2).
MAX_TIMEOUTS = 6
SYN_TIMEOUTS = 3
#: A connection that received nothing for this long is dead (peer wire keep-alives come every 2 minutes).
IDLE_TIMEOUT = 150.0
#: Send an ST_STATE after this long without sending anything, to keep NAT mappings open.
KEEPALIVE = 29.0
#: Duplicate acks before the oldest packet is resent (BEP 29 / libtorrent: 3).
DUP_ACKS = 3
#: Most packets resent because of one selective ack.
MAX_SACK_RESENDS = 4

SYN_SENT, CONNECTED, CLOSED = "syn_sent", "connected", "closed"


def now_us() -> int:
    """Microseconds on the monotonic clock, 32-bit wrapping (the header's timestamp)."""
    return int(time.monotonic() * 1_000_000) & 0xFFFFFFFF


class UTPConnection:
    """One connection (see the module docstring). ``send(datagram)`` sends to the peer.

    Over 400 lines because it is one state machine: the send side (out buffer, lost queue, window, timer)
    and the receive side (reorder buffer, acks, selective acks) read and write the same sequence numbers
    and the same packet on every event; a split would pass that state back and forth. The congestion
    control is already apart (:class:`Ledbat`); the RTT estimate and the timer (``_rtt``, ``timeout``,
    ``tick``) are the next part that could move out.
    """

    def __init__(self, send: Callable[[bytes], None], recv_id: int, send_id: int, now: float) -> None:
        self._send = send
        self.recv_id = recv_id & 0xFFFF
        self.send_id = send_id & 0xFFFF
        self.state = SYN_SENT
        self.seq_nr = random.randint(1, 0xFFFF)  # the next sequence number we send
        self.ack_nr = 0  # the last in-order sequence number received
        # seq -> [payload, type, sent_at, transmissions, fast_resent, lost]; a lost packet (timed out, not
        # resent since) is not counted in in_flight and waits in self.lost to be resent
        self.outbuf: dict[int, list] = {}
        self.lost: deque[int] = deque()
        self.in_flight = 0
        self.send_buf = bytearray()
        self.recv_buf = bytearray()
        self.reorder: dict[int, bytes] = {}
        self.reorder_bytes = 0
        self.peer_wnd = MAX_PACKET * 4
        self.reply_micro = 0
        self.cc = Ledbat()
        self.srtt = 0.0
        self.rttvar = 0.0
        self.rto = INITIAL_RTO
        self.timeouts = 0
        self.dup_acks = 0
        self.last_ack_seen = -1
        self.small_seq: int | None = None  # the one packet under MAX_PAYLOAD in flight (Nagle)
        self.ack_pending = False
        self.unacked = 0  # data packets received since our last ack
        self.last_recv = self.last_send = now
        self.timer_start = now  # when the oldest unacked packet was (re)sent
        self.eof_seq: int | None = None  # the FIN's sequence number, once received
        self.eof = False  # every byte up to the peer's FIN was received
        self.fin_seq: int | None = None  # ours, once sent
        self.closing = False  # close() was called: FIN after the send buffer drains
        self.error: BaseException | None = None
        self.notify: Callable[[], None] = lambda: None
        self.retransmissions = 0  # statistics (tests bound it)
        self.packets_sent = 0

    # --- opening --------------------------------------------------------------------------------------

    def connect(self, now: float) -> None:
        """Send our ST_SYN (initiator)."""
        self.outbuf[self.seq_nr] = [b"", pk.ST_SYN, now, 1, False, False]
        self._emit(pk.ST_SYN, self.seq_nr, b"", conn_id=self.recv_id)
        self.timer_start = now
        self.seq_nr = (self.seq_nr + 1) & 0xFFFF

    def accept(self, syn: pk.Packet, now: float) -> None:
        """Answer a peer's ST_SYN (responder)."""
        self.state = CONNECTED
        self.ack_nr = syn.seq_nr
        self.peer_wnd = max(syn.wnd_size, MAX_PACKET)
        self.reply_micro = (now_us() - syn.timestamp) & 0xFFFFFFFF
        self._emit(pk.ST_STATE, self.seq_nr, b"")

    # --- what the socket sees ---------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Nothing more will happen (closed, or FIN sent and acknowledged and the peer's FIN seen)."""
        return self.state == CLOSED

    @property
    def send_room(self) -> int:
        """Bytes :meth:`write` accepts now."""
        return max(0, SEND_BUFFER - len(self.send_buf))

    def write(self, data, now: float) -> int:
        """Queue up to :attr:`send_room` bytes of ``data`` and send what the windows allow; return the count."""
        if self.error is not None:
            raise self.error
        if self.closing or self.state == CLOSED:
            raise BrokenPipeError("uTP connection closed")
        n = min(len(data), self.send_room)
        if n:
            self.send_buf += data[:n]
            if self.state == CONNECTED:
                self._flush(now)
        return n

    def read(self, n: int, now: float) -> bytes:
        """Take up to ``n`` buffered received bytes (b"" when none: check :attr:`eof` and :attr:`error`)."""
        buf = self.recv_buf
        was_full = RECV_WINDOW - len(buf) < MAX_PACKET * 4
        data = bytes(buf[:n])
        del buf[:n]
        if was_full and data and self.state == CONNECTED:
            self._emit(pk.ST_STATE, self.seq_nr, b"")  # the window opened again: say so
        return data

    def read_into(self, view: memoryview) -> int:
        """Copy up to ``len(view)`` buffered received bytes into ``view``; return the count (0: none)."""
        buf = self.recv_buf
        n = min(len(view), len(buf))
        if n:
            was_full = RECV_WINDOW - len(buf) < MAX_PACKET * 4
            view[:n] = buf[:n]
            del buf[:n]
            if was_full and self.state == CONNECTED:
                self._emit(pk.ST_STATE, self.seq_nr, b"")  # the window opened again: say so
        return n

    def close(self, now: float) -> None:
        """Graceful close: the send buffer drains, then our ST_FIN."""
        if self.state == CLOSED:
            return
        self.closing = True
        if self.state == SYN_SENT:
            self._end(None)
            return
        self._flush(now)

    def abort(self, reason: BaseException | None = None) -> None:
        """Send ST_RESET and end now."""
        if self.state != CLOSED:
            self._emit(pk.ST_RESET, self.seq_nr, b"")
        self._end(reason)

    # --- packets in -------------------------------------------------------------------------------------

    def on_packet(self, p: pk.Packet, now: float) -> None:
        """Process one packet for this connection (already matched by id and address)."""
        if self.state == CLOSED:
            return
        if p.type == pk.ST_RESET:
            self._end(ConnectionResetError("uTP connection reset by peer"))
            return
        if p.type == pk.ST_SYN:
            if self.state == CONNECTED and p.seq_nr == self.ack_nr and self.fin_seq is None:
                self._emit(pk.ST_STATE, self.seq_nr, b"")  # our answer was lost: again
            return
        if self.state == SYN_SENT:
            if p.ack_nr != (self.seq_nr - 1) & 0xFFFF:
                return
            self.state = CONNECTED
            # ST_STATE's seq_nr is the peer's next one (not consumed); an ST_DATA's is processed below.
            self.ack_nr = (p.seq_nr - 1) & 0xFFFF
        # The ack must be of something we sent: between the oldest unacked packet - 1 and the last sent.
        # An ack of a packet never sent, or one far behind, is forged or confused: the packet is dropped whole.
        # One a little behind (reordered on the way) still carries good data.
        oldest = next(iter(self.outbuf)) if self.outbuf else self.seq_nr
        if pk.seq_diff(p.ack_nr, (self.seq_nr - 1) & 0xFFFF) > 0:
            return
        behind = pk.seq_diff(p.ack_nr, (oldest - 1) & 0xFFFF)
        if behind < -MAX_OLD_ACK:
            return
        ack_usable = behind >= 0
        self.last_recv = now
        recv_time = now_us()
        self.reply_micro = (recv_time - p.timestamp) & 0xFFFFFFFF
        self.peer_wnd = p.wnd_size
        if ack_usable:
            self._on_ack(p, now)
        if p.type == pk.ST_DATA:
            self._on_data(p.seq_nr, p.payload)
        elif p.type == pk.ST_FIN:
            self._on_fin(p.seq_nr)
        if self.state == CONNECTED:
            self._flush(now, send_ack=False)  # the ack goes at the end of the read batch (flush_ack)
        self.notify()

    def _on_ack(self, p: pk.Packet, now: float) -> None:
        acked_bytes = 0
        flight_bytes = 0  # of acked_bytes, those counted in in_flight (not lost ones)
        in_flight_before = self.in_flight
        rtt_sample = None
        out = self.outbuf
        before = len(out)
        while out:
            seq = next(iter(out))
            if pk.seq_less(p.ack_nr, seq):
                break
            entry = out.pop(seq)
            acked_bytes += len(entry[0])
            if not entry[5]:
                flight_bytes += len(entry[0])
            if entry[3] == 1:
                rtt_sample = now - entry[2]
        if p.sack:
            acked, flight = self._on_sack(p.ack_nr, p.sack, now)
            acked_bytes += acked
            flight_bytes += flight
        if len(out) < before:  # progress (a SYN or FIN carries no payload but counts)
            self.in_flight -= flight_bytes
            self.timeouts = 0
            self.timer_start = now
            self.dup_acks = 0
            if p.timestamp_diff:
                self.cc.on_delay_sample(p.timestamp_diff, now)
            self.cc.on_ack(acked_bytes, in_flight_before)
            if rtt_sample is not None:
                self._rtt(rtt_sample)
            if self.fin_seq is not None and not out:
                self._end(None)  # our FIN is acknowledged and we closed: nothing more to do
        elif p.type == pk.ST_STATE and out and p.ack_nr == self.last_ack_seen:
            self.dup_acks += 1
            if self.dup_acks == DUP_ACKS:
                self._resend(next(iter(out)), now, fast=True)
        self.last_ack_seen = p.ack_nr

    def _on_sack(self, ack_nr: int, mask: bytes, now: float) -> tuple[int, int]:
        """Drop the packets the selective ack names; resend holes followed by 3 received ones.
        Return the payload bytes dropped, and of those the ones that were counted in flight."""
        acked = flight = 0
        out = self.outbuf
        received_after = 0
        holes: list[int] = []
        last = (self.seq_nr - 1) & 0xFFFF
        for i in range(len(mask) * 8 - 1, -1, -1):  # from the newest down, to count what follows each hole
            seq = (ack_nr + 2 + i) & 0xFFFF
            if pk.seq_less(last, seq):
                continue  # never sent: ignored (a hostile or absurd mask)
            if mask[i >> 3] & (1 << (i & 7)):
                received_after += 1
                entry = out.pop(seq, None)
                if entry is not None:
                    acked += len(entry[0])
                    if not entry[5]:
                        flight += len(entry[0])
            elif received_after >= DUP_ACKS and seq in out and len(holes) < MAX_SACK_RESENDS:
                holes.append(seq)
        first = (ack_nr + 1) & 0xFFFF
        if received_after >= DUP_ACKS and first in out and len(holes) < MAX_SACK_RESENDS:
            holes.append(first)
        for seq in reversed(holes):
            self._resend(seq, now, fast=True)
        return acked, flight

    def _on_data(self, seq: int, payload: bytes) -> None:
        self.ack_pending = True
        self.unacked += 1
        ahead = pk.seq_diff(seq, self.ack_nr)
        if ahead <= 0 or not payload:
            return  # a duplicate (our ack was lost): acked again
        if ahead == 1:
            if len(self.recv_buf) + len(payload) > RECV_WINDOW + MAX_PACKET * 2:
                self.ack_pending = True
                return  # past the window we advertised: dropped
            self.recv_buf += payload
            self.ack_nr = seq
            self._drain_reorder()
        elif (ahead <= MAX_REORDER and seq not in self.reorder
              and len(self.recv_buf) + self.reorder_bytes + len(payload) <= RECV_WINDOW):
            self.reorder[seq] = payload  # ahead of the stream; the reorder buffer stays within the window
            self.reorder_bytes += len(payload)

    def _drain_reorder(self) -> None:
        reorder = self.reorder
        while reorder:
            nxt = (self.ack_nr + 1) & 0xFFFF
            data = reorder.pop(nxt, None)
            if data is None:
                break
            self.reorder_bytes -= len(data)
            self.recv_buf += data
            self.ack_nr = nxt
        if self.eof_seq is not None and pk.seq_diff(self.eof_seq, self.ack_nr) == 1:
            self.ack_nr = self.eof_seq
        if self.eof_seq is not None and self.ack_nr == self.eof_seq:
            self.eof = True
            self.reorder.clear()
            self.reorder_bytes = 0

    def _on_fin(self, seq: int) -> None:
        self.ack_pending = True
        if self.eof_seq is None and pk.seq_diff(seq, self.ack_nr) > 0:
            self.eof_seq = seq
        self._drain_reorder()
        if self.eof and self.fin_seq is not None and not self.outbuf:
            self._end(None)

    # --- packets out -------------------------------------------------------------------------------------

    def _flush(self, now: float, send_ack: bool = True) -> None:
        """Send what the windows allow, then our FIN if closing and drained, then a pending ack."""
        buf = self.send_buf
        lost = self.lost
        while lost:  # packets lost to a timeout first, in order, as the window allows
            entry = self.outbuf.get(lost[0])
            if entry is None or not entry[5]:
                lost.popleft()  # acknowledged meanwhile (selective ack), or resent already
                continue
            if self.in_flight and self.in_flight + len(entry[0]) > min(self.cc.window, self.peer_wnd):
                break
            self._resend(lost.popleft(), now)
        while buf and not lost:
            window = min(self.cc.window, self.peer_wnd)
            size = min(len(buf), MAX_PAYLOAD)
            if self.in_flight and self.in_flight + size > window:
                break
            if size < MAX_PAYLOAD and self.small_seq is not None and self.small_seq in self.outbuf:
                break  # Nagle: one small packet in flight at a time, the rest coalesces
            chunk = bytes(buf[:size])
            del buf[:size]
            if not self.outbuf:
                self.timer_start = now
            self.outbuf[self.seq_nr] = [chunk, pk.ST_DATA, now, 1, False, False]
            self.in_flight += size
            if size < MAX_PAYLOAD:
                self.small_seq = self.seq_nr
            self._emit(pk.ST_DATA, self.seq_nr, chunk)
            self.seq_nr = (self.seq_nr + 1) & 0xFFFF
        if self.closing and not buf and not lost and self.fin_seq is None:
            self.fin_seq = self.seq_nr
            if not self.outbuf:
                self.timer_start = now
            self.outbuf[self.seq_nr] = [b"", pk.ST_FIN, now, 1, False, False]
            self._emit(pk.ST_FIN, self.seq_nr, b"")
            self.seq_nr = (self.seq_nr + 1) & 0xFFFF
        if self.ack_pending and send_ack:
            self._emit(pk.ST_STATE, self.seq_nr, b"")

    def flush_ack(self) -> None:
        """Send the ack of what was received, if not sent with data already (end of a read batch)."""
        if self.ack_pending and self.state != CLOSED:
            self._emit(pk.ST_STATE, self.seq_nr, b"")

    def _resend(self, seq: int, now: float, fast: bool = False) -> None:
        entry = self.outbuf.get(seq)
        if entry is None or (fast and entry[4]):
            return
        if fast:
            entry[4] = True
            self.cc.on_loss(now, self.srtt)
        if entry[5]:  # lost to a timeout: back in flight
            entry[5] = False
            self.in_flight += len(entry[0])
        entry[2] = now
        entry[3] += 1
        self.retransmissions += 1
        conn_id = self.recv_id if entry[1] == pk.ST_SYN else None
        self._emit(entry[1], seq, entry[0], conn_id=conn_id)

    def _emit(self, ptype: int, seq: int, payload: bytes, conn_id: int | None = None) -> None:
        sack = self._sack() if self.reorder and ptype != pk.ST_SYN else b""
        wnd = max(0, RECV_WINDOW - len(self.recv_buf))
        ack = 0 if ptype == pk.ST_SYN else self.ack_nr
        data = pk.build(ptype, self.send_id if conn_id is None else conn_id, now_us(), self.reply_micro, wnd,
                        seq, ack, payload, sack)
        if ptype != pk.ST_SYN:
            self.ack_pending = False
            self.unacked = 0
        self.packets_sent += 1
        self.last_send = time.monotonic()
        self._send(data)

    def _sack(self) -> bytes:
        """The selective-ack bitmask of the reorder buffer (4..32 bytes)."""
        bits = 0
        top = 0
        base = (self.ack_nr + 2) & 0xFFFF
        for seq in self.reorder:
            i = (seq - base) & 0xFFFF
            if i < pk.MAX_SACK_BYTES * 8:
                bits |= 1 << i
                top = max(top, i)
        if not bits:
            return b""
        length = min(pk.MAX_SACK_BYTES, (top // 32 + 1) * 4)
        return bits.to_bytes(length, "little")

    # --- time -------------------------------------------------------------------------------------------

    def _rtt(self, sample: float) -> None:
        if self.srtt == 0.0:
            self.srtt, self.rttvar = sample, sample / 2
        else:
            self.rttvar += (abs(self.srtt - sample) - self.rttvar) / 4
            self.srtt += (sample - self.srtt) / 8
        self.rto = min(MAX_RTO, max(MIN_RTO, self.srtt + 4 * self.rttvar))

    def timeout(self) -> float:
        """Seconds before the oldest unacked packet is resent: the RTO, doubled per timeout in a row."""
        return min(MAX_RTO, self.rto * (1 << min(self.timeouts, 16)))

    def tick(self, now: float) -> None:
        """Timers: retransmission, zero-window probe, keep-alive, idle timeout (called ~every 50 ms)."""
        if self.state == CLOSED:
            return
        if now - self.last_recv > IDLE_TIMEOUT:
            self._end(TimeoutError(f"uTP peer silent for {IDLE_TIMEOUT:g} s"))
            return
        if self.outbuf and now - self.timer_start > self.timeout():
            self.timeouts += 1
            limit = SYN_TIMEOUTS if self.state == SYN_SENT else MAX_TIMEOUTS
            if self.timeouts > limit:
                self._end(TimeoutError("uTP peer stopped answering" if self.state != SYN_SENT
                                       else "no uTP answer to our SYN"))
                return
            self.cc.on_timeout()
            self.timer_start = now
            for entry in self.outbuf.values():  # the whole window is presumed lost (module docstring)
                entry[4] = False
                entry[5] = True
            self.in_flight = 0
            seqs = iter(self.outbuf)
            oldest = next(seqs)
            self.lost = deque(seqs)
            self._resend(oldest, now)
        elif self.state == CONNECTED and self.send_buf and not self.outbuf and now - self.timer_start > self.timeout():
            self.peer_wnd = max(self.peer_wnd, MAX_PACKET)  # zero-window probe: one packet
            self.timer_start = now
            self._flush(now)
        elif self.state == CONNECTED and now - self.last_send > KEEPALIVE:
            self._emit(pk.ST_STATE, self.seq_nr, b"")

    def _end(self, error: BaseException | None) -> None:
        if self.state == CLOSED:
            return
        self.state = CLOSED
        if error is not None and self.error is None:
            self.error = error
        self.outbuf.clear()
        self.lost.clear()
        self.reorder.clear()
        self.reorder_bytes = 0
        self.send_buf = bytearray()
        self.in_flight = 0
        self.eof = True
        self.notify()


__all__ = ["UTPConnection", "MAX_PACKET", "MAX_PAYLOAD", "RECV_WINDOW", "SEND_BUFFER", "now_us"]
