"""The session's listen sockets: one port (IPv4 and IPv6) for all its torrents.

:class:`Listener` binds the port (the one asked for, or the first free of 6881-6889, or any free one),
accepts connections, and hands each to :func:`torrentcore.peer.handshake.accept`, which reads the
peer's handshake and asks ``lookup`` for the torrent with that info-hash. A connection for an unknown
info-hash is closed; one for a torrent we serve is given to ``route`` (the torrent's swarm) and runs in
the accepting greenlet.

Floods are bounded (:mod:`torrentcore.slots`): an address with ``max_per_ip`` connections open has the next
one closed at once; at most :data:`~torrentcore.slots.HALF_OPEN_IN` connections handshake at a time (a new
one pushes out the oldest), each within :data:`~torrentcore.slots.HANDSHAKE_DEADLINE`; a peer dropped for
misbehaving that comes back is held back or refused (:mod:`torrentcore.reconnect_throttle`). When ``accept``
fails for lack of file descriptors (EMFILE, ENFILE) the oldest handshaking connection is closed to free one,
the half-open cap shrinks below what the process can hold, and with nothing to close the loop backs off
(:data:`ACCEPT_BACKOFF`); the warning comes at most once a minute: it never spins and never stops.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import socket
import time
from collections.abc import Callable, Iterable

import gevent
import gevent.pool
import structlog

from .errors import BadInputError, ProtocolError
from .peer import handshake
from .peer.connection import format_address
from .reconnect_throttle import DELAY_MAX
from .slots import HANDSHAKE_DEADLINE, ConnectionSlots

log = structlog.get_logger(__name__)

#: Ports tried when none was asked for (then any free port).
DEFAULT_PORTS = tuple(range(6881, 6890))
#: Pending connections the kernel may queue per socket.
BACKLOG = 128
#: Seconds to wait after ``accept`` failed for lack of resources (doubling up to the second value).
ACCEPT_BACKOFF = (0.05, 1.0)
#: ``accept`` errors that mean "out of file descriptors or memory": back off, never stop listening.
_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
#: Out of fds: the half-open cap drops to what is handshaking minus this many (fds left for peers and
#: files), never below HALF_OPEN_MIN; the warning is repeated at most every STARVED_LOG_INTERVAL seconds.
HALF_OPEN_SPARE_FDS = 4
HALF_OPEN_MIN = 4
STARVED_LOG_INTERVAL = 60.0
#: Connections accepted in a row before the accepting greenlet yields once.
ACCEPT_BATCH = 16
#: Most connections held back at once by the reconnect throttle (past it, they go on at once): a sequential
#: flooder needs one, and these hold no half-open slot.
HELD_MAX = 32
#: ``accept`` errors that mean the socket itself is unusable.
_FATAL_ERRORS = {errno.EBADF, errno.EINVAL, errno.ENOTSOCK}


class ListenError(BadInputError):
    """The port asked for cannot be used (in use, or not permitted)."""


class Listener:
    """Listen sockets of a session; ``port`` is the bound port (0 until :meth:`start`)."""

    def __init__(self, hosts: tuple[str, ...], port: int | None, lookup: handshake.Lookup,
                 route: Callable[[handshake.Handshaken], None], slots: ConnectionSlots | int,
                 encryption: str = "prefer", info_hashes: Callable[[], Iterable[bytes]] | None = None) -> None:
        self.encryption = encryption
        self.info_hashes = info_hashes
        self.hosts = listen_hosts(hosts)
        self.requested = port
        self.lookup = lookup
        self.route = route
        self.slots = slots if isinstance(slots, ConnectionSlots) else ConnectionSlots(slots)
        #: Every greenlet serving an accepted connection (bounded by the half-open cap and the peer caps).
        self.pool = gevent.pool.Group()
        self.port = 0
        self.servers: list[_Server] = []
        #: ``accept`` calls that failed for lack of resources (EMFILE...), and whether we are in such an episode.
        self.accept_failures = 0
        #: Incoming connections whose handshake failed, timed out or was pushed out by newer ones.
        self.refused_handshakes = 0
        #: Connections held by the reconnect throttle now (:meth:`_refuse_or_hold`).
        self.held = 0
        self._starved_logged = -STARVED_LOG_INTERVAL

    def start(self) -> int:
        """Bind and start accepting; return the port. An explicit port that cannot be bound raises ListenError;
        without one, a warning is logged and the session runs without incoming connections (port 0)."""
        candidates = [self.requested] if self.requested is not None else [*DEFAULT_PORTS, 0]
        v6only = any(":" not in h for h in self.hosts)  # with an IPv4 listener too, IPv6 ones take only IPv6
        last_error: OSError | None = None
        for port in candidates:
            try:
                first = self._server(self.hosts[0], port, v6only)
            except OSError as exc:
                last_error = exc
                continue
            self.servers = [first]
            self.port = first.server_port
            for host in self.hosts[1:]:  # more addresses (IPv6 beside IPv4, BEP 7) on the same port; optional
                try:
                    self.servers.append(self._server(host, self.port, v6only))
                except OSError as exc:
                    log.info("cannot listen on an extra address", host=host, error=str(exc))
            return self.port
        reason = last_error.strerror if last_error is not None and last_error.strerror else str(last_error)
        if self.requested is not None:
            raise ListenError(f"cannot listen on port {self.requested}: {reason} (choose another with --port, "
                              "or --port 0 for any free port)")
        log.warning("cannot listen for peers", error=reason)
        return 0

    def _server(self, host: str, port: int, v6only: bool) -> _Server:
        """A started listener on ``host:port`` (an IPv6 host gets its own AF_INET6 socket)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            # SO_REUSEADDR: a restart can bind while old connections linger in TIME_WAIT (two listening
            # sockets on one port still conflict).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if v6only else 0)
            sock.bind((host, port))
            sock.listen(BACKLOG)
        except OSError:
            sock.close()
            raise
        server = _Server(sock)
        server.greenlet = gevent.spawn(self._accept_loop, server)
        return server

    def _accept_loop(self, server: _Server) -> None:
        """Accept until the socket closes; out of fds: free one and back off (no spin, no exit)."""
        delay = ACCEPT_BACKOFF[0]
        accepted = 0
        while not server.closed:
            try:
                client, address = server.sock.accept()
            except OSError as exc:
                if server.closed:
                    return
                if exc.errno in _RESOURCE_ERRORS:
                    self._out_of_fds(exc)
                    # The oldest handshake gives its fd to the connection waiting; with none to give, wait.
                    if not self.slots.half_open.evict_oldest():
                        gevent.sleep(delay)
                        delay = min(ACCEPT_BACKOFF[1], delay * 2)
                    else:
                        gevent.sleep(0)
                elif exc.errno in _FATAL_ERRORS:
                    log.warning("stopped accepting peers", error=exc.strerror or str(exc))
                    return
                else:  # ECONNABORTED and friends: that one connection is gone
                    gevent.sleep(0.001)
                continue
            delay = ACCEPT_BACKOFF[0]
            ip = unmap(address[0])
            if not self.slots.open_from(ip):
                _close_quietly(client)
                continue
            state = {"handshaken": False}
            # Counted as half-open before its greenlet runs: a burst of accepts cannot outgrow the cap.
            key = self.slots.half_open.add(functools.partial(_evict, client, state))
            self.pool.spawn(self._serve, client, (ip, address[1]), key, state)
            accepted += 1
            if accepted % ACCEPT_BATCH == 0:
                gevent.sleep(0)  # let the handshakes (and evictions' closes) run between bursts

    def _out_of_fds(self, exc: OSError) -> None:
        """``accept`` failed for lack of fds: shrink the half-open cap below what the process can hold (it stays
        there: the fd limit does not grow), and log it at most every :data:`STARVED_LOG_INTERVAL` seconds."""
        self.accept_failures += 1
        half = self.slots.half_open
        half.cap = max(HALF_OPEN_MIN, min(half.cap, len(half) - HALF_OPEN_SPARE_FDS))
        now = time.monotonic()
        if now - self._starved_logged >= STARVED_LOG_INTERVAL:
            self._starved_logged = now
            log.warning("cannot accept peers: out of file descriptors", error=exc.strerror or str(exc),
                        handshaking=len(half), half_open_cap=half.cap, failures=self.accept_failures)

    def _serve(self, sock, addr: tuple[str, int], key: int, state: dict) -> None:
        """One accepted connection: handshake (bounded, evictable), then the peer's whole life. A peer in its
        back-off is refused after its handshake, and one from an address that misbehaved lately waits a moment
        before it is answered (:meth:`_refuse_or_hold`)."""
        try:
            try:
                with gevent.Timeout(HANDSHAKE_DEADLINE, ProtocolError("handshake took too long")):
                    done = handshake.accept(sock, addr, self.lookup, encryption=self.encryption,
                                            info_hashes=self.info_hashes, handshake_timeout=HANDSHAKE_DEADLINE,
                                            refuse=functools.partial(self._refuse_or_hold, addr[0], key))
            except (ProtocolError, OSError, ConnectionError):
                # Not logged one by one: under a flood that was a twentieth of the engine's time (py-spy).
                self.refused_handshakes += 1
                return
            finally:
                self.slots.half_open.done(key)
            state["handshaken"] = True
            self.route(done)
        finally:
            _close_quietly(sock)  # (closed already, unless the greenlet was killed before its handshake began)
            self.slots.closed_from(addr[0])

    def _refuse_or_hold(self, ip: str, key: int, peer_id: bytes) -> bool:
        """Once a peer's handshake is read: whether it is refused (:mod:`torrentcore.reconnect_throttle`), after
        holding it (a refused one for ``DELAY_MAX``, one from an address that misbehaved lately for its
        ``delay``) unless :data:`HELD_MAX` are held already. A held connection sent its handshake: it leaves the
        half-open cap, so a crowd held from one address never pushes out an honest newcomer's handshake."""
        reconnects = self.slots.reconnects
        refused = reconnects.refuses(ip, peer_id)
        wait = DELAY_MAX if refused else reconnects.delay(ip)
        if wait and self.held < HELD_MAX:
            self.slots.half_open.done(key)
            self.held += 1
            try:
                gevent.sleep(wait)
            finally:
                self.held -= 1
        return refused

    def accept_utp(self, sock, address) -> None:
        """An incoming uTP stream (from the session's multiplexer; never blocks): handshaken and routed as
        a TCP one, in the same bounded pool; refused with a reset when the pool is full."""
        ip = unmap(address[0])
        if self.pool.full() or not self.slots.open_from(ip):
            sock.abort()
            return
        state = {"handshaken": False}
        key = self.slots.half_open.add(functools.partial(_evict, sock, state))
        self.pool.spawn(self._serve, sock, (ip, address[1]), key, state)

    @property
    def addresses(self) -> list[str]:
        """The addresses listened on, as ``host:port``."""
        return [format_address(s.sock.getsockname()[:2]) for s in self.servers]

    def stop(self) -> None:
        """Stop accepting and close the connections still handshaking."""
        for server in self.servers:
            server.close()
        self.servers = []
        self.pool.kill(block=True, timeout=2)


class _Server:
    """One listening socket and the greenlet accepting on it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.greenlet: gevent.Greenlet | None = None
        self.closed = False
        self.server_port = sock.getsockname()[1]

    def close(self) -> None:
        self.closed = True
        if self.greenlet is not None:
            self.greenlet.kill(block=True, timeout=1)
        _close_quietly(self.sock)


def _evict(sock, state: dict) -> None:
    """End a half-open connection another greenlet waits on (runs in the accepting greenlet, synchronously:
    the fd is free at once, and a connection whose handshake completed is never touched). The waiting
    greenlet's next read or write fails."""
    if state["handshaken"]:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    _close_quietly(sock)


def _close_quietly(sock) -> None:
    try:
        sock.close()
    except OSError:
        pass


def listen_hosts(hosts: tuple[str, ...]) -> list[str]:
    """Addresses to listen on (``[v6]`` brackets allowed); ``0.0.0.0`` alone adds ``::`` where IPv6 works."""
    out = [h.strip().strip("[]") for h in hosts if h.strip()] or ["0.0.0.0"]
    if out == ["0.0.0.0"] and ipv6_available():
        out.append("::")
    return out


@functools.lru_cache(maxsize=1)
def ipv6_available() -> bool:
    """Whether this host can open IPv6 sockets at all."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def unmap(host: str) -> str:
    """``::ffff:1.2.3.4`` (an IPv4 peer on a dual-stack socket) -> ``1.2.3.4``; other hosts unchanged."""
    if host.startswith("::ffff:"):
        try:
            mapped = ipaddress.IPv6Address(host).ipv4_mapped
        except ValueError:
            return host
        if mapped is not None:
            return str(mapped)
    return host


__all__ = ["Listener", "ListenError", "listen_hosts", "unmap"]
