"""How the session opens an outgoing peer stream: uTP (BEP 29) first, TCP as the fall-back.

:class:`Dialer.connect` is the ``connect`` callback of :func:`torrentcore.peer.handshake.dial`. With
``transports = ("utp", "tcp")`` (the default) it sends a uTP SYN and waits :data:`UTP_CONNECT_TIMEOUT`
for the answer, then connects over TCP. A peer whose uTP SYN went unanswered is remembered (at most
:data:`REMEMBERED` addresses), so its next connections go to TCP at once; a peer said to speak uTP
(PEX ``added.f`` 0x04) is tried over uTP again.

Measured on loopback (benchmarks/utp.py, issue 15): a uTP answer comes in well under 10 ms, so the
wait costs a TCP-only peer the SYN timeout once; racing both would open a second connection to every
uTP peer for nothing, so uTP first it is.
"""

from __future__ import annotations

import socket
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import gevent

#: Seconds a uTP SYN (resent after 1 s) may wait for its answer in all.
UTP_CONNECT_TIMEOUT = 2.5
#: Seconds uTP has alone before TCP is tried beside it (the first to connect wins).
UTP_HEAD_START = 0.5
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

    def connect(self, address: tuple[str, int], timeout: float) -> Any:
        """A connected stream socket to ``address`` (UTPSocket or TCP socket); raises OSError."""
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


__all__ = ["Dialer", "UTP_CONNECT_TIMEOUT", "UTP_HEAD_START"]
