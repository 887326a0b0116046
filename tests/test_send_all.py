"""torrentcore.peer.send_all: every byte sent, in order, as ``sendall`` would; a socket that takes nothing more
for its timeout raises TimeoutError; the connection's writer uses it on a real (gevent) socket."""

from __future__ import annotations

import os
import socket

import gevent
import pytest

from torrentcore.peer.connection import Connection
from torrentcore.peer.send_all import send_all, sender_for


class _Trickle:
    """A socket that takes at most ``most`` bytes per send, or nothing at all while ``stuck``."""

    def __init__(self, most: int, timeout: float | None = 5.0) -> None:
        self.most = most
        self.timeout = timeout
        self.got = bytearray()
        self.calls = 0
        self.stuck = False

    def send(self, data) -> int:
        self.calls += 1
        if self.stuck:
            gevent.sleep(0.01)  # gevent's send waits for the socket to become writable, then may send nothing
            return 0
        chunk = bytes(memoryview(data)[: self.most])
        self.got += chunk
        return len(chunk)

    def gettimeout(self) -> float | None:
        return self.timeout


def test_partial_sends_go_on_until_every_byte_is_sent_in_order():
    data = os.urandom(100_003)
    sock = _Trickle(most=4096)
    send_all(sock, data)
    assert bytes(sock.got) == data
    assert sock.calls == -(-len(data) // 4096)
    view = memoryview(bytearray(data))[1000:]
    sock = _Trickle(most=777)
    send_all(sock, view)
    assert bytes(sock.got) == data[1000:]


def test_one_send_that_takes_everything_is_one_call():
    sock = _Trickle(most=1 << 20)
    send_all(sock, b"x" * 4096)
    assert sock.calls == 1 and sock.got == b"x" * 4096


def test_a_socket_that_takes_nothing_more_raises_timeout_error_after_its_timeout():
    sock = _Trickle(most=10, timeout=0.05)
    real_send = sock.send

    def send(data) -> int:
        n = real_send(data)
        sock.stuck = True  # the first 10 bytes go out, then the peer reads nothing more
        return n

    sock.send = send  # type: ignore[method-assign]
    with pytest.raises(TimeoutError):
        send_all(sock, b"y" * 1000)
    assert sock.got == b"y" * 10
    assert sock.calls < 100  # (bounded: about timeout / 10 ms)


def test_the_writer_sends_a_large_queue_whole_on_a_real_socket():
    """8 MiB queued on a socketpair whose reader drains it slowly: the kernel takes it in many partial sends."""
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    conn = Connection(a, ("127.0.0.1", 1))
    conn.start_writer()
    data = os.urandom(8 << 20)
    for k in range(0, len(data), 1 << 20):
        conn.send(data[k : k + (1 << 20)])
    got = bytearray()
    with gevent.Timeout(30):
        while len(got) < len(data):
            chunk = b.recv(65536)
            assert chunk
            got += chunk
            if len(got) % (1 << 20) < 65536:
                gevent.sleep(0.001)
    assert bytes(got) == data
    conn.close()
    b.close()


def test_sender_for_a_gevent_socket_is_send_all_and_for_other_sockets_their_own_sendall():
    a, b = socket.socketpair()
    try:
        send = sender_for(a)
        assert send.func is send_all and send.args == (a,)
        send(b"hello")
        assert b.recv(5) == b"hello"
        trickle = _Trickle(most=3)
        trickle.sendall = lambda data: trickle.got.extend(data)  # type: ignore[attr-defined]
        assert sender_for(trickle) == trickle.sendall
    finally:
        a.close()
        b.close()
