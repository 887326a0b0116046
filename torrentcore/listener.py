"""The session's listen sockets: one port (IPv4 and IPv6) for all its torrents.

:class:`Listener` binds the port (the one asked for, or the first free of 6881-6889, or any free one),
accepts connections, and hands each to :func:`torrentcore.peer.handshake.accept`, which reads the
peer's handshake and asks ``lookup`` for the torrent with that info-hash. A connection for an unknown
info-hash is closed; one for a torrent we serve is given to ``route`` (the torrent's swarm) and runs in
the accepting greenlet. Accepting greenlets come from one bounded pool.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Callable, Iterable

import gevent.pool
import gevent.server
import structlog

from .errors import BadInputError, ProtocolError
from .peer import handshake
from .peer.connection import format_address

log = structlog.get_logger(__name__)

#: Ports tried when none was asked for (then any free port).
DEFAULT_PORTS = tuple(range(6881, 6890))
#: Pending connections the kernel may queue per socket.
BACKLOG = 128


class ListenError(BadInputError):
    """The port asked for cannot be used (in use, or not permitted)."""


class Listener:
    """Listen sockets of a session; ``port`` is the bound port (0 until :meth:`start`)."""

    def __init__(self, hosts: tuple[str, ...], port: int | None, lookup: handshake.Lookup,
                 route: Callable[[handshake.Handshaken], None], max_connections: int, encryption: str = "prefer",
                 info_hashes: Callable[[], Iterable[bytes]] | None = None) -> None:
        self.encryption = encryption
        self.info_hashes = info_hashes
        self.hosts = listen_hosts(hosts)
        self.requested = port
        self.lookup = lookup
        self.route = route
        self.pool = gevent.pool.Pool(max_connections)
        self.port = 0
        self.servers: list[gevent.server.StreamServer] = []

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

    def _server(self, host: str, port: int, v6only: bool) -> gevent.server.StreamServer:
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
        server = gevent.server.StreamServer(sock, self._accept, spawn=self.pool)
        server.start()
        return server

    def _accept(self, sock, address) -> None:
        addr = (unmap(address[0]), address[1])
        try:
            done = handshake.accept(sock, addr, self.lookup, encryption=self.encryption, info_hashes=self.info_hashes)
        except (ProtocolError, OSError, ConnectionError) as exc:
            log.debug("incoming connection refused", peer=format_address(addr), reason=str(exc))
            return
        self.route(done)

    def accept_utp(self, sock, address) -> None:
        """An incoming uTP stream (from the session's multiplexer; never blocks): handshaken and routed as
        a TCP one, in the same bounded pool; refused with a reset when the pool is full."""
        if self.pool.full():
            sock.abort()
            return
        self.pool.spawn(self._accept, sock, address)

    @property
    def addresses(self) -> list[str]:
        """The addresses listened on, as ``host:port``."""
        return [format_address((s.server_host, s.server_port)) for s in self.servers]

    def stop(self) -> None:
        """Stop accepting and close the connections still handshaking."""
        for server in self.servers:
            server.stop(timeout=1)
        self.servers = []
        self.pool.kill(block=True, timeout=2)


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
