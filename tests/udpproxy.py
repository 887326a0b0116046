"""A UDP proxy on loopback for uTP tests: drops, duplicates and delays datagrams (jitter reorders them)."""

from __future__ import annotations

import random
import socket

import gevent


def _udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


class LossyProxy:
    """A UDP proxy on loopback between one client and ``target``: drops, duplicates and delays (jitter
    reorders) each datagram independently, both ways. ``blackhole`` drops everything."""

    def __init__(self, target, loss=0.02, dup=0.01, delay=0.030, jitter=0.010, seed=15) -> None:
        self.rng = random.Random(seed)
        self.target = target
        self.loss, self.dup, self.delay, self.jitter = loss, dup, delay, jitter
        self.outer = _udp()  # clients talk to this one
        self.inner = _udp()  # this one talks to the target
        self.address = self.outer.getsockname()
        self.client = None
        self.blackhole = False
        self.forwarded = 0
        self.greenlets = [gevent.spawn(self._pump, self.outer, self.inner, True),
                          gevent.spawn(self._pump, self.inner, self.outer, False)]

    def _pump(self, src, dst, upstream: bool) -> None:
        while True:
            data, addr = src.recvfrom(65536)
            if upstream:
                self.client = addr
            to = self.target if upstream else self.client
            if to is None or self.blackhole or self.rng.random() < self.loss:
                continue
            copies = 2 if self.rng.random() < self.dup else 1
            for _ in range(copies):
                wait = max(0.0, self.delay + self.rng.uniform(-self.jitter, self.jitter))
                gevent.spawn_later(wait, self._send, dst, data, to)

    def _send(self, sock, data, to) -> None:
        self.forwarded += 1
        try:
            sock.sendto(data, to)
        except OSError:
            pass

    def close(self) -> None:
        gevent.killall(self.greenlets)
        self.outer.close()
        self.inner.close()
