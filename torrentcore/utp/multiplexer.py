"""One UDP socket carrying every uTP connection of a session (and, beside them, the DHT's datagrams).

One greenlet reads the socket, drains every datagram waiting, and dispatches each: uTP packets (version
1 in the low nibble of byte 0, a known type in the high one) by ``(address, connection id)``; anything
else (KRPC messages are bencoded dicts, ``d`` = 0x64) to the ``fallback`` callback. Acks of a batch
go out when the socket has nothing more to read (delayed ack, one per batch and connection). One
ticker greenlet drives every connection's timers; none has a greenlet of its own.

Bounds: at most ``max_connections`` connections; at most ``max_half_open`` accepted ones that have
sent no data yet (a SYN flood fills only those, each expiring after :data:`HALF_OPEN_TIMEOUT`); a
packet for an unknown connection is answered with at most :data:`RESETS_PER_TICK` ST_RESETs per tick.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable

import gevent
import gevent.socket
import structlog

from . import packet as pk
from .connection import CONNECTED, UTPConnection
from .socket import UTPSocket

log = structlog.get_logger(__name__)

Address = tuple[str, int]
#: Seconds between ticks of the shared timer (retransmissions are due after >= 500 ms). The timer runs only
#: while there are connections: with none it woke the event loop 20 times a second for nothing (a session
#: seeding 500 torrents over TCP, benchmarks/many_torrents.py: 20 of its 22 wake-ups a second).
TICK = 0.05
#: An accepted connection whose peer sent no data within this many seconds is dropped (SYN floods).
HALF_OPEN_TIMEOUT = 10.0
#: Default caps.
MAX_CONNECTIONS = 1024
MAX_HALF_OPEN = 64
#: Resets sent to packets of unknown connections, at most, per TICK seconds.
RESETS_PER_TICK = 32
#: Kernel buffers of the UDP socket: a full window of 1 MiB in either direction fits.
SOCKET_BUFFER = 4 * 1024 * 1024
#: Largest datagram read (a UDP datagram; larger are cut by the kernel and fail to parse).
MAX_DATAGRAM = 65535
#: Data packets received before an ack goes out even in the middle of a read batch (else one per batch, up
#: to BATCH packets late). 64 MiB from uTP-only libtorrent on loopback took 3.0-6.6 s with 4, 16, 64 or
#: one ack per batch alike (this machine's noise is larger than the difference); 16 bounds the burst.
ACK_EVERY = 16
#: Linux's IP_RECVERR and IPV6_RECVERR (the socket module names neither).
IP_RECVERR = 11
IPV6_RECVERR = 25
#: Datagrams handled in one batch before acks are sent and other greenlets run.
BATCH = 256


def is_utp_datagram(data: bytes) -> bool:
    """Whether ``data`` looks like a uTP packet (not, for example, a bencoded KRPC message)."""
    return len(data) >= pk.HEADER_SIZE and (data[0] & 0x0F) == pk.VERSION and (data[0] >> 4) <= pk.ST_SYN


class Multiplexer:
    """uTP connections on one bound UDP socket (see the module docstring).

    ``on_accept(sock, address)`` receives each incoming connection (it must not block: spawn);
    None refuses incoming connections. ``fallback(data, address)`` receives non-uTP datagrams.
    """

    def __init__(self, sock, on_accept: Callable[[UTPSocket, Address], None] | None = None,
                 fallback: Callable[[bytes, Address], None] | None = None, *,
                 max_connections: int = MAX_CONNECTIONS, max_half_open: int = MAX_HALF_OPEN) -> None:
        self.sock = sock
        self.on_accept = on_accept
        self.fallback = fallback
        self.max_connections = max_connections
        self.max_half_open = max_half_open
        self.clock = time.monotonic
        self.address: Address = sock.getsockname()[:2]
        self.conns: dict[tuple[Address, int], UTPConnection] = {}
        self.half_open: dict[tuple[Address, int], float] = {}
        self._dirty: set[UTPConnection] = set()
        self._resets = 0  # resets sent since _resets_at (see RESETS_PER_TICK)
        self._resets_at = 0.0
        self.last_malformed = ""  # why the last datagram was not a valid packet (diagnostics)
        self.stats: dict[str, int] = {"malformed": 0, "unknown": 0, "refused": 0, "dropped_send": 0}
        self._greenlets: list[gevent.Greenlet] = []
        self._ticker: gevent.Greenlet | None = None  # the timer's greenlet, while there are connections
        self.running = False
        for opt in (gevent.socket.SO_SNDBUF, gevent.socket.SO_RCVBUF):
            try:
                sock.setsockopt(gevent.socket.SOL_SOCKET, opt, SOCKET_BUFFER)
            except OSError:
                pass
        if sys.platform.startswith("linux"):  # learn of ICMP port-unreachable: a SYN to a port without uTP
            level, option = ((gevent.socket.IPPROTO_IPV6, IPV6_RECVERR)  # then fails at once, not timing out
                             if sock.family == gevent.socket.AF_INET6 else (gevent.socket.IPPROTO_IP, IP_RECVERR))
            try:
                sock.setsockopt(level, option, 1)
            except OSError:
                pass
        sock.settimeout(0.0)

    def start(self) -> Multiplexer:
        """Start the reader greenlet (the timer's starts with the first connection)."""
        self.running = True
        self._greenlets = [gevent.spawn(self._read_loop)]
        return self

    @property
    def ticking(self) -> bool:
        """Whether the timer's greenlet runs (it does while there are connections)."""
        return self._ticker is not None

    def stop(self) -> None:
        """Reset every connection and stop (the UDP socket stays open: its owner closes it)."""
        self.running = False
        for conn in list(self.conns.values()):
            conn.abort()
        self.conns.clear()
        self.half_open.clear()
        ticker, self._ticker = self._ticker, None
        gevent.killall([*self._greenlets, *([ticker] if ticker is not None else [])], block=False)
        self._greenlets = []

    # --- outgoing ----------------------------------------------------------------------------------

    def connect(self, address: Address, timeout: float = 10.0) -> UTPSocket:
        """Open a connection to ``address``; raise TimeoutError, ConnectionRefusedError or OSError."""
        if not self.running:
            raise OSError("uTP is not running")
        if len(self.conns) >= self.max_connections:
            raise OSError("too many uTP connections")
        address = (address[0], int(address[1]))
        for _ in range(64):  # a free id for this address (bounded: ids collide rarely)
            recv_id = random.randint(0, 0xFFFF)
            if (address, recv_id) not in self.conns and (address, (recv_id + 1) & 0xFFFF) not in self.conns:
                break
        else:
            raise OSError("no free uTP connection id")
        conn = UTPConnection(self._sender(address), recv_id, recv_id + 1, self.clock())
        sock = UTPSocket(conn, self, address)
        self.conns[(address, conn.recv_id)] = conn
        self._start_ticking()
        conn.connect(self.clock())
        try:
            sock.wait_connected(timeout)
        except BaseException:
            conn.abort() if conn.state == CONNECTED else conn.close(self.clock())
            self.conns.pop((address, conn.recv_id), None)
            raise
        return sock

    def _sender(self, address: Address) -> Callable[[bytes], None]:
        sendto = self.sock.sendto
        stats = self.stats

        def send(data: bytes) -> None:
            try:
                sendto(data, address)
            except (ConnectionRefusedError, ConnectionResetError):
                # The socket's pending error, from an ICMP answer to an earlier datagram to another address
                # (IP_RECVERR): this datagram was not sent. The error is taken now (the reader finds it in the
                # error queue), so a second try goes out.
                try:
                    sendto(data, address)
                except OSError:
                    stats["dropped_send"] += 1
            except OSError:  # buffer full (would block), or the network: counted as a loss, resent later
                stats["dropped_send"] += 1
        return send

    # --- incoming ----------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        recvfrom = self.sock.recvfrom
        fileno = self.sock.fileno()
        while self.running:
            handled = 0
            try:
                while handled < BATCH:
                    data, addr = recvfrom(MAX_DATAGRAM)
                    handled += 1
                    try:
                        self.dispatch(data, addr)
                    except Exception as exc:  # noqa: BLE001 - one datagram must never stop every connection
                        self.stats["internal_errors"] = self.stats.get("internal_errors", 0) + 1
                        log.warning("utp internal error on a datagram", error=repr(exc), exc_info=True)
            except (BlockingIOError, InterruptedError):
                if not handled:
                    # Woken with nothing to read: an ICMP error whose code a send took first (sendto returns
                    # the socket's pending error) still sits in the error queue, and keeps the socket readable
                    # (EPOLLERR) until it is read. Unread, this loop spun a core (seeding to aria2c).
                    self._drain_errors()
            except OSError as exc:  # an ICMP error reported on the socket (IP_RECVERR); the socket lives on
                if not self.running:
                    return
                self._drain_errors()
                log.debug("utp receive error", error=str(exc))
            self._flush_acks()
            if handled < BATCH:
                try:
                    gevent.socket.wait_read(fileno, timeout=1.0)
                except (TimeoutError, OSError):
                    if not self.running:
                        return
            else:
                gevent.sleep(0)

    def _drain_errors(self) -> None:
        """Read the socket's error queue: a SYN answered by ICMP port-unreachable ends its connection."""
        flag = getattr(gevent.socket, "MSG_ERRQUEUE", None)
        if flag is None:
            return
        for _ in range(BATCH):
            try:
                data, _anc, _flags, addr = self.sock.recvmsg(MAX_DATAGRAM, 512, flag)
            except OSError:
                return
            if not is_utp_datagram(data) or not addr:
                continue
            try:
                p = pk.parse(data)
            except pk.PacketError:
                continue
            key = ((addr[0], addr[1]), p.connection_id)
            conn = self.conns.get(key)
            if conn is not None and p.type == pk.ST_SYN and conn.state != CONNECTED:
                conn._end(ConnectionRefusedError("uTP port unreachable"))
                self._forget(key)

    def _flush_acks(self) -> None:
        if self._dirty:
            dirty, self._dirty = self._dirty, set()
            for conn in dirty:
                conn.flush_ack()

    def dispatch(self, data: bytes, addr) -> None:
        """Handle one datagram from ``addr`` (also the entry point of tests and the fuzzer)."""
        addr = (addr[0], addr[1])
        if not is_utp_datagram(data):
            if self.fallback is not None:
                self.fallback(data, addr)
            return
        try:
            p = pk.parse(data)
        except pk.PacketError as exc:
            self.stats["malformed"] += 1
            self.last_malformed = str(exc)
            return
        now = self.clock()
        if p.type == pk.ST_SYN:
            key = (addr, (p.connection_id + 1) & 0xFFFF)
            conn = self.conns.get(key)
            if conn is not None:
                conn.on_packet(p, now)  # a SYN again (our answer was lost)
                return
            self._incoming(p, addr, key, now)
            return
        key = (addr, p.connection_id)
        conn = self.conns.get(key)
        if conn is None and p.type == pk.ST_RESET:
            conn, key = self._reset_target(addr, p.connection_id)
        if conn is None:
            self.stats["unknown"] += 1
            if now - self._resets_at >= TICK:
                self._resets, self._resets_at = 0, now
            if p.type != pk.ST_RESET and self._resets < RESETS_PER_TICK:
                self._resets += 1
                self._sender(addr)(pk.build(pk.ST_RESET, p.connection_id, 0, 0, 0, random.randint(0, 0xFFFF),
                                            p.seq_nr))
            return
        if p.type == pk.ST_DATA and key in self.half_open:
            del self.half_open[key]
        conn.on_packet(p, now)
        if conn.ack_pending:
            if conn.unacked >= ACK_EVERY:
                conn.flush_ack()  # within a long batch too: the sender's window moves on
            else:
                self._dirty.add(conn)
        if conn.finished:
            self._forget(key)

    def _reset_target(self, addr: Address, cid: int) -> tuple[UTPConnection | None, tuple[Address, int]]:
        """The connection a reset with an id not ours to receive is for: the one that sends with that id (its
        receive id one above or below). A peer that forgot a connection answers its next packet with a reset
        carrying that packet's id, our send id (libutp, and this multiplexer): our closed side's last FIN then
        ended only when its retransmissions gave up, holding the connection and the timer meanwhile."""
        for rid in ((cid + 1) & 0xFFFF, (cid - 1) & 0xFFFF):
            conn = self.conns.get((addr, rid))
            if conn is not None and conn.send_id == cid:
                return conn, (addr, rid)
        return None, (addr, cid)

    def _incoming(self, syn: pk.Packet, addr: Address, key: tuple[Address, int], now: float) -> None:
        if (self.on_accept is None or len(self.conns) >= self.max_connections
                or len(self.half_open) >= self.max_half_open):
            self.stats["refused"] += 1
            return
        conn = UTPConnection(self._sender(addr), key[1], syn.connection_id, now)
        self.conns[key] = conn
        self.half_open[key] = now
        self._start_ticking()
        conn.accept(syn, now)
        try:
            self.on_accept(UTPSocket(conn, self, addr), addr)
        except Exception as exc:  # noqa: BLE001 - the reader must survive its callback
            log.warning("utp accept callback failed", error=repr(exc))
            conn.abort()
            self._forget(key)

    def _forget(self, key: tuple[Address, int]) -> None:
        conn = self.conns.pop(key, None)
        self.half_open.pop(key, None)
        if conn is not None:
            self._dirty.discard(conn)

    # --- time --------------------------------------------------------------------------------------

    def _start_ticking(self) -> None:
        """A connection was added: run the timer, unless it runs."""
        if self._ticker is None and self.running:
            self._ticker = gevent.spawn(self._tick_loop)

    def _tick_loop(self) -> None:
        """Every TICK seconds, the connections' timers; ends once there is none (no yield between the test and
        the end, so a connection added meanwhile finds the timer running or gone, never ending)."""
        try:
            while self.running and self.conns:
                gevent.sleep(TICK)
                try:
                    self.tick(self.clock())
                except Exception as exc:  # noqa: BLE001 - one connection's bug must not stop every timer
                    log.warning("utp timer error", error=repr(exc), exc_info=True)
        finally:
            if self._ticker is gevent.getcurrent():
                self._ticker = None

    def tick(self, now: float) -> None:
        """Run every connection's timers; forget finished and expired half-open connections."""
        for key, since in list(self.half_open.items()):
            if now - since > HALF_OPEN_TIMEOUT:
                conn = self.conns.get(key)
                if conn is not None:
                    conn._end(TimeoutError("uTP peer sent nothing after its SYN"))
                self._forget(key)
        for key, conn in list(self.conns.items()):
            conn.tick(now)
            if conn.finished:
                self._forget(key)
        self._flush_acks()


__all__ = ["Multiplexer", "is_utp_datagram", "MAX_CONNECTIONS", "MAX_HALF_OPEN"]
