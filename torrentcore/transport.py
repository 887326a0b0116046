"""How the session opens an outgoing peer stream: uTP (BEP 29) first, TCP beside it after a head start.

:class:`Dialer.connect` is the ``connect`` callback of :func:`torrentcore.peer.handshake.dial`. With
``transports = ("utp", "tcp")`` (the default) it sends a uTP SYN; if no answer came within
:data:`UTP_HEAD_START`, it opens a TCP connection beside it and keeps whichever connects first (the
other is stopped, or closed before a byte of the BitTorrent handshake). A SYN answered by ICMP port
unreachable fails at once (the multiplexer reads the socket's error queue). A peer reached over TCP
after uTP lost is remembered (at most :data:`REMEMBERED` addresses): its next connections go to TCP at
once. With one transport only, only that one is tried. A peer that said it speaks uTP (PEX ``added.f``
0x04, ``utp=True``) is dialled over uTP alone first (for up to :data:`UTP_FIRST_SHARE` of the connect
time, whatever was remembered), then over TCP if uTP failed.

Measured on loopback here (issue 15; the cases of tests/test_utp.py::test_dialer_*): a uTP peer answers
the SYN in 0.5-3 ms; a TCP-only peer with nothing on its UDP port costs 22-37 ms (ICMP) before TCP;
one whose UDP port is open but silent (libtorrent with uTP off) costs the head start (0.20 s; 0.50 s
with a 0.5 s one), once per address, then nothing. Racing both from the start would open a second
connection to every uTP peer (libtorrent closes one as a duplicate peer id): uTP gets a head start.
"""

from __future__ import annotations

import socket
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import gevent

#: Seconds a uTP SYN (resent after 1 s) may wait for its answer in all.
UTP_CONNECT_TIMEOUT = 2.5
#: Seconds uTP has alone before TCP is tried beside it (the first to connect wins): a uTP peer answers
#: within this plus the TCP connect time (both one round trip), so it still wins; a TCP-only one waits this.
UTP_HEAD_START = 0.2
#: Share of the connect timeout that uTP has alone with a peer that said it speaks uTP, before TCP: the
#: rest is left to TCP (one round trip on loopback, ~0.1 ms here), so a wrong flag costs a slower start only.
UTP_FIRST_SHARE = 0.5
#: Addresses remembered as not answering uTP.
REMEMBERED = 4096


class Dialer:
    """Opens streams over the session's ``transports`` (see the module docstring)."""

    def __init__(self, transports: tuple[str, ...], utp_connect: Callable[[tuple[str, int], float], Any] | None):
        self.transports = transports
        self.utp_connect = utp_connect if "utp" in transports else None
        self.tcp = "tcp" in transports
        self.no_utp: OrderedDict[tuple[str, int], None] = OrderedDict()
        #: How the connections went (``utp``, ``tcp``, ``tcp_after_utp``): for benchmarks and the report.
        self.counts: dict[str, int] = {"utp": 0, "tcp": 0, "tcp_after_utp": 0}

    def speaks_utp(self, address: tuple[str, int]) -> None:
        """The peer at ``address`` said it supports uTP (PEX flag 0x04): try uTP with it again."""
        self.no_utp.pop(address, None)

    def connect(self, address: tuple[str, int], timeout: float, utp: bool | None = None) -> Any:
        """A connected stream socket to ``address`` (UTPSocket or TCP socket); raises OSError. ``utp``:
        True when the peer said it speaks uTP (then uTP first, TCP after it failed)."""
        if utp and self.utp_connect is not None and self.tcp:
            self.speaks_utp(address)
            return self._utp_first(address, timeout)
        if self.utp_connect is None or (self.tcp and address in self.no_utp):
            if not self.tcp:
                raise OSError("uTP is not available and TCP is not among the transports")
            self.counts["tcp"] += 1
            return socket.create_connection(address, timeout=timeout)
        if not self.tcp:
            sock = self.utp_connect(address, timeout)
            self.counts["utp"] += 1
            return sock
        with gevent.Timeout(timeout, TimeoutError(f"connect to {address[0]}:{address[1]} timed out")):
            return self._race(address, timeout)

    def _utp_first(self, address: tuple[str, int], timeout: float) -> Any:
        """uTP alone for :data:`UTP_FIRST_SHARE` of ``timeout`` (at most :data:`UTP_CONNECT_TIMEOUT`), then TCP."""
        with gevent.Timeout(timeout, TimeoutError(f"connect to {address[0]}:{address[1]} timed out")):
            budget = min(timeout * UTP_FIRST_SHARE, UTP_CONNECT_TIMEOUT)
            utp = gevent.spawn(_quiet, self.utp_connect, address, budget)
            utp.join(budget + 0.5)  # _quiet returns the OSError: join sees every end
            if not utp.ready():
                utp.kill(block=True, timeout=1)
            value = utp.value if utp.ready() and utp.successful() else None
            if value is not None and not isinstance(value, BaseException):
                self.counts["utp"] += 1
                return value
            self.counts["tcp_after_utp"] += 1
            self._remember(address)
            return socket.create_connection(address, timeout=max(0.1, timeout - budget))

    def _race(self, address: tuple[str, int], timeout: float) -> Any:
        """uTP with a head start of :data:`UTP_HEAD_START`, then TCP beside it: the first to connect wins;
        a loser still connecting is stopped, one that connected is closed (no handshake byte was sent)."""
        utp = gevent.spawn(_quiet, self.utp_connect, address, min(timeout, UTP_CONNECT_TIMEOUT))
        utp.join(UTP_HEAD_START)
        if utp.ready() and not isinstance(utp.value, BaseException):
            self.counts["utp"] += 1
            return utp.value
        tcp = gevent.spawn(_quiet, socket.create_connection, address, timeout)
        winner = None
        try:
            pending = [tcp] if utp.ready() else [utp, tcp]
            while pending and winner is None:
                for g in gevent.wait(pending, count=1):
                    pending.remove(g)
                    if g.successful() and winner is None and not isinstance(g.value, BaseException):
                        winner = g
            if winner is None:
                raise tcp.value if isinstance(tcp.value, OSError) else OSError(str(tcp.value))
            if winner is tcp:
                self.counts["tcp_after_utp"] += 1
                self._remember(address)
            else:
                self.counts["utp"] += 1
            return winner.value
        finally:
            for g in (utp, tcp):
                if g is winner:
                    continue
                g.kill(block=True, timeout=1)
                value = g.value if g.ready() and g.successful() else None
                if value is not None and not isinstance(value, BaseException):
                    try:
                        value.close()
                    except OSError:
                        pass

    def _remember(self, address: tuple[str, int]) -> None:
        self.no_utp[address] = None
        while len(self.no_utp) > REMEMBERED:
            self.no_utp.popitem(last=False)


def _quiet(connect: Callable[[tuple[str, int], float], Any], address: tuple[str, int], timeout: float) -> Any:
    """``connect(address, timeout)``, its OSError returned rather than raised (no greenlet traceback)."""
    try:
        return connect(address, timeout)
    except (OSError, ConnectionError) as exc:
        return exc


__all__ = ["Dialer", "UTP_CONNECT_TIMEOUT", "UTP_FIRST_SHARE", "UTP_HEAD_START"]
