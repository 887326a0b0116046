"""Rate limits: a token bucket, and a torrent's limit chained with its session's (both must allow it)."""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable

import gevent

#: Bytes a new bucket holds: one block (16 KiB), so the first block passes at once. A bucket that started
#: full gave its whole second's worth to the first fast peer (at 100 kB/s, 6 blocks passed before any wait, on
#: the fake clock of tests/test_ratelimit.py); libtorrent's bandwidth channels start empty too (quota 0).
START_TOKENS = 16 * 1024.0
#: Seconds' worth of bytes an idle bucket saves (at least one block). libtorrent saves none while no one
#: waits (its channels are refilled only for queued requests). Measured, ``seed --max-upload-rate 1M`` to
#: libtorrent, 4 MiB, 3 rounds each (load 4.5): one second saved, as before, let 0.93 MB through in the
#: first 0.3 s and 1.21 MB/s over the transfer; 0.25 s: 0.58 MB, 1.11 MB/s; 0.1 s: 0.43 MB, 1.07 MB/s
#: (the limit: 1.05 MB/s; no run fell below it).
IDLE_BURST = 0.1


class TokenBucket:
    """Allows ``rate`` bytes per second on average; a new bucket holds one block (:data:`START_TOKENS`), an
    idle one saves at most :data:`IDLE_BURST` seconds' worth (a block at least).

    ``rate`` of 0 or None means unlimited. :meth:`consume` blocks the calling
    greenlet (never the hub) until the bytes may pass. ``clock`` and ``sleep`` are the monotonic clock and
    the sleep used (tests pass a fake clock).
    """

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = gevent.sleep) -> None:
        self.rate = float(rate or 0)
        self.capacity = max(self.rate * IDLE_BURST, START_TOKENS)
        self._tokens = min(START_TOKENS, self.capacity)
        self._clock = clock
        self._sleep = sleep
        self._stamp = clock()
        #: The chains this bucket is part of: told when its rate changes (they keep their ``rate`` current).
        self._chains: weakref.WeakSet[RateLimits] = weakref.WeakSet()

    def set_rate(self, rate: float | None) -> None:
        """Change the limit now (0 or None: unlimited)."""
        self._refill()
        self.rate = float(rate or 0)
        self.capacity = max(self.rate * IDLE_BURST, START_TOKENS)
        self._tokens = min(self._tokens, self.capacity)
        for chain in list(self._chains):
            chain._update()

    @property
    def limited(self) -> bool:
        """True when a limit is set."""
        return self.rate > 0

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def consume(self, n: int) -> None:
        """Take ``n`` tokens, sleeping until the bucket has paid for them."""
        if not self.rate:
            return
        self._refill()
        self._tokens -= n
        if self._tokens < 0:
            self._sleep(-self._tokens / self.rate)


class RateLimits:
    """Several buckets at once (a torrent's own limit and the session's): bytes pass when all allow them.

    :attr:`rate` is a plain attribute, kept current by the buckets (:meth:`TokenBucket.set_rate`) and by
    assigning :attr:`buckets`: it is read for every block received and sent (``if limits.rate:``), where a
    property looping over the buckets cost a call and 24 bytecodes per block.
    """

    def __init__(self, *buckets: TokenBucket) -> None:
        self._buckets: tuple[TokenBucket, ...] = ()
        #: The tightest limit set (0: none).
        self.rate = 0.0
        self.buckets = tuple(b for b in buckets if b is not None)

    @property
    def buckets(self) -> tuple[TokenBucket, ...]:
        """The buckets that must all allow the bytes (assign a new sequence to change them)."""
        return self._buckets

    @buckets.setter
    def buckets(self, buckets) -> None:
        for bucket in self._buckets:
            bucket._chains.discard(self)
        self._buckets = tuple(buckets)
        for bucket in self._buckets:
            bucket._chains.add(self)
        self._update()

    def _update(self) -> None:
        best = 0.0
        for bucket in self._buckets:
            rate = bucket.rate
            if rate and (not best or rate < best):
                best = rate
        self.rate = best

    def consume(self, n: int) -> None:
        """Take ``n`` tokens from every bucket, sleeping as each requires."""
        for bucket in self.buckets:
            bucket.consume(n)
