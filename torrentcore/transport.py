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

#: Seconds a uTP SYN (resent after 1 s) may wait for its answer before TCP is tried.
UTP_CONNECT_TIMEOUT = 2.5
#: Addresses remembered as not answering uTP.
REMEMBERED = 4096


class Dialer:
    """Opens streams over the session's ``transports`` (see the module docstring)."""

    def __init__(self, transports: tuple[str, ...], utp_connect: Callable[[tuple[str, int], float], Any] | None):
        self.transports = transports
        self.utp_connect = utp_connect if "utp" in transports else None
        self.tcp = "tcp" in transports
        self.no_utp: OrderedDict[tuple[str, int], None] = OrderedDict()

    def speaks_utp(self, address: tuple[str, int]) -> None:
        """The peer at ``address`` said it supports uTP (PEX flag 0x04): try uTP with it again."""
        self.no_utp.pop(address, None)

    def connect(self, address: tuple[str, int], timeout: float) -> Any:
        """A connected stream socket to ``address`` (UTPSocket or TCP socket); raises OSError."""
        if self.utp_connect is not None and (address not in self.no_utp or not self.tcp):
            try:
                return self.utp_connect(address, min(timeout, UTP_CONNECT_TIMEOUT) if self.tcp else timeout)
            except (OSError, ConnectionError) as exc:
                if not self.tcp:
                    raise
                if isinstance(exc, TimeoutError):
                    self.no_utp[address] = None
                    while len(self.no_utp) > REMEMBERED:
                        self.no_utp.popitem(last=False)
        if not self.tcp:
            raise OSError("uTP is not available and TCP is not among the transports")
        return socket.create_connection(address, timeout=timeout)


__all__ = ["Dialer", "UTP_CONNECT_TIMEOUT"]
