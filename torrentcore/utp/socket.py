"""A blocking, socket-like face of one uTP connection, for code written for TCP sockets.

:class:`UTPSocket` has what the peer wire code and MSE use of a socket: ``recv``, ``recv_into``,
``send``, ``sendall``, ``settimeout``/``gettimeout``, ``setblocking``, ``shutdown``, ``close``,
``getpeername``, ``getsockname`` and a tolerant ``setsockopt``. Waits block the calling greenlet only
(gevent events) and honour the timeout like a socket's: ``TimeoutError`` (``socket.timeout``) when it
passes. It has no ``fileno``: there is no file descriptor per connection, the multiplexer's UDP
socket carries them all.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event

from .connection import CONNECTED, UTPConnection

if TYPE_CHECKING:  # pragma: no cover
    from .multiplexer import Multiplexer


class UTPSocket:
    """One uTP connection as a stream socket (see the module docstring)."""

    transport = "utp"

    def __init__(self, conn: UTPConnection, mux: Multiplexer, address: tuple[str, int]) -> None:
        self.conn = conn
        self.mux = mux
        self.address = address
        self._timeout: float | None = None
        self._event = gevent.event.Event()
        self._closed = False
        conn.notify = self._event.set

    # --- settings -----------------------------------------------------------------------------------

    def settimeout(self, timeout: float | None) -> None:
        """As ``socket.settimeout`` (None: block without end; 0: never block)."""
        self._timeout = None if timeout is None else max(0.0, float(timeout))

    def gettimeout(self) -> float | None:
        """As ``socket.gettimeout``."""
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        """As ``socket.setblocking``."""
        self._timeout = None if flag else 0.0

    def setsockopt(self, *args: Any) -> None:
        """Accepted and ignored (TCP options such as TCP_NODELAY have no meaning here)."""

    def getsockopt(self, *args: Any) -> int:
        """0 for every option."""
        return 0

    def getpeername(self) -> tuple[str, int]:
        """The peer's UDP address."""
        return self.address

    def getsockname(self) -> tuple[str, int]:
        """The multiplexer's UDP address."""
        return self.mux.address

    # --- waiting ------------------------------------------------------------------------------------

    def _deadline(self) -> float | None:
        """When the operation starting now times out (None: never)."""
        return None if self._timeout is None else time.monotonic() + self._timeout

    def _wait(self, deadline: float | None) -> None:
        """Wait for the connection to change (data, acks, an error) until ``deadline``: the socket's timeout
        bounds a whole ``recv``/``sendall``, however many acks arrive meanwhile."""
        if self._closed:
            raise OSError(9, "uTP socket closed")
        if self._timeout == 0.0:
            raise BlockingIOError(11, "uTP socket would block")
        left = None if deadline is None else deadline - time.monotonic()
        self._event.clear()
        if (left is not None and left <= 0) or not self._event.wait(left):
            raise TimeoutError("timed out")

    def wait_connected(self, timeout: float) -> None:
        """Block until the handshake is done; raise TimeoutError or the connection's error."""
        deadline = time.monotonic() + timeout
        conn = self.conn
        while conn.state != CONNECTED:
            if conn.error is not None:
                raise conn.error
            if conn.finished:
                raise ConnectionRefusedError("uTP connection refused")
            left = deadline - time.monotonic()
            self._event.clear()
            if left <= 0 or not self._event.wait(left):
                if conn.state == CONNECTED:
                    break
                raise TimeoutError("uTP connect timed out")

    # --- reading ------------------------------------------------------------------------------------

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:
        """As ``socket.recv_into``: at least one byte, or 0 at the end of the stream."""
        view = memoryview(buffer).cast("B")
        if nbytes:
            view = view[:nbytes]
        conn = self.conn
        deadline = None
        while True:
            n = conn.read_into(view)
            if n or not len(view):
                return n
            if conn.error is not None:
                raise conn.error
            if conn.eof or conn.finished:
                return 0
            if deadline is None:
                deadline = self._deadline()
            self._wait(deadline)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """As ``socket.recv``."""
        buf = bytearray(bufsize)
        n = self.recv_into(buf)
        return bytes(buf[:n])

    # --- writing ------------------------------------------------------------------------------------

    def send(self, data, flags: int = 0) -> int:
        """As ``socket.send``: queue what fits (waiting while nothing does); return the count."""
        view = memoryview(data).cast("B")
        deadline = self._deadline()
        while True:
            n = self.conn.write(view, self.mux.clock())
            if n or not len(view):
                return n
            self._wait(deadline)

    def sendall(self, data, flags: int = 0) -> None:
        """As ``socket.sendall``: queue everything, waiting while the send buffer is full."""
        view = memoryview(data).cast("B")
        pos = 0
        conn = self.conn
        clock = self.mux.clock
        deadline = self._deadline()
        while pos < len(view):
            pos += conn.write(view[pos:], clock())
            if pos < len(view):
                self._wait(deadline)

    # --- the end ------------------------------------------------------------------------------------

    def shutdown(self, how: int = 2) -> None:
        """Start the graceful close (our ST_FIN after what is queued)."""
        self.conn.close(self.mux.clock())

    def close(self) -> None:
        """Close (graceful: queued bytes are still sent, then ST_FIN); idempotent."""
        if self._closed:
            return
        self._closed = True
        self.conn.close(self.mux.clock())
        self._event.set()

    def abort(self) -> None:
        """Close at once with ST_RESET."""
        self._closed = True
        self.conn.abort()
        self._event.set()

    def __enter__(self) -> UTPSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<UTPSocket {self.address[0]}:{self.address[1]} {self.conn.state}>"


__all__ = ["UTPSocket"]
