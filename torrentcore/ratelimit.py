"""Rate limits: a token bucket, and a torrent's limit chained with its session's (both must allow it)."""

from __future__ import annotations

import time
import weakref

import gevent


class TokenBucket:
    """Allows ``rate`` bytes per second on average, bursts up to one second's worth.

    ``rate`` of 0 or None means unlimited. :meth:`consume` blocks the calling
    greenlet (never the hub) until the bytes may pass.
    """

    def __init__(self, rate: float | None) -> None:
        self.rate = float(rate or 0)
        self.capacity = max(self.rate, 16 * 1024.0)
        self._tokens = self.capacity
        self._stamp = time.monotonic()
        #: The chains this bucket is part of: told when its rate changes (they keep their ``rate`` current).
        self._chains: weakref.WeakSet[RateLimits] = weakref.WeakSet()

    def set_rate(self, rate: float | None) -> None:
        """Change the limit now (0 or None: unlimited)."""
        self._refill()
        self.rate = float(rate or 0)
        self.capacity = max(self.rate, 16 * 1024.0)
        self._tokens = min(self._tokens, self.capacity)
        for chain in list(self._chains):
            chain._update()

    @property
    def limited(self) -> bool:
        """True when a limit is set."""
        return self.rate > 0

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def consume(self, n: int) -> None:
        """Take ``n`` tokens, sleeping until the bucket has paid for them."""
        if not self.rate:
            return
        self._refill()
        self._tokens -= n
        if self._tokens < 0:
            gevent.sleep(-self._tokens / self.rate)


class RateLimits:
    """Several buckets at once (a torrent's own limit and the session's): bytes pass when all allow them.

    :attr:`rate` is a plain attribute, kept current by the buckets (:meth:`TokenBucket.set_rate`) and by
    assigning :attr:`buckets`: it is read for every block received and sent (``if limits.rate:``), where a
    property looping over the buckets cost 24 bytecodes and a call per block (/tmp/recv2/opcount.py).
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
