"""Sending all of a buffer on a gevent socket, without the cost gevent's own ``sendall`` adds to every call.

gevent's ``socket.sendall`` (26.x) asks the kernel for ``SO_SNDBUF`` with a ``getsockopt`` on every call, to
size the chunks of a long send, and builds its timeout bookkeeping before the first byte goes out. The peer
wire sends small buffers (a batch of requests is 4 KiB, a HAVE 9 bytes) and one batch of uploaded blocks at a
time, so most calls are one ``send`` that takes everything: measured on loopback (a reader draining the other
end, 20,000 calls), 5.7-7.2 us per 4 KiB ``sendall`` against 3.6-3.7 us here, 7.7-8.0 against 5.6 us for one
16 KiB block. Under load the ``getsockopt`` also takes the socket's lock, and with it the receive work queued
behind it (py-spy, benchmarks/many_peers.py with 50 peers: 0.8 % of the process in gevent's ``getsockopt``).

:func:`send_all` keeps ``sendall``'s contract: every byte is sent, or an ``OSError`` is raised
(``TimeoutError`` once the socket's timeout has passed without the rest going out; gevent's ``send`` waits
for the socket to take more, for at most that timeout each time). :func:`sender_for` picks it for a socket once:
other sockets (the RC4 wrapper, uTP) keep their own ``sendall``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import gevent.socket


def send_all(sock: Any, data: bytes | bytearray | memoryview) -> None:
    """Send every byte of ``data`` on ``sock`` (a gevent socket), as ``sock.sendall(data)`` does."""
    size = len(data) if not isinstance(data, memoryview) else data.nbytes
    sent = sock.send(data)
    if sent == size:
        return
    view = memoryview(data).cast("B")
    timeout = sock.gettimeout()
    deadline = None if timeout is None else time.monotonic() + timeout
    while sent < size:
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"timed out with {size - sent} of {size} bytes not sent")
        sent += sock.send(view[sent:])


def sender_for(sock: Any) -> Callable[[bytes | bytearray | memoryview], None]:
    """What sends all of a buffer on ``sock``: :func:`send_all` for a gevent socket, else its own ``sendall``."""
    if type(sock) is gevent.socket.socket:
        return functools.partial(send_all, sock)
    return sock.sendall
