"""Rate limits: a token bucket, and a torrent's limit chained with its session's (both must allow it)."""

from __future__ import annotations

import time

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

    def set_rate(self, rate: float | None) -> None:
        """Change the limit now (0 or None: unlimited)."""
        self._refill()
        self.rate = float(rate or 0)
        self.capacity = max(self.rate, 16 * 1024.0)
        self._tokens = min(self._tokens, self.capacity)

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
    """Several buckets at once (a torrent's own limit and the session's): bytes pass when all allow them."""

    def __init__(self, *buckets: TokenBucket) -> None:
        self.buckets = [b for b in buckets if b is not None]

    @property
    def rate(self) -> float:
        """The tightest limit set (0: none)."""
        best = 0.0  # read for every block received: a plain loop, no list
        for bucket in self.buckets:
            rate = bucket.rate
            if rate and (not best or rate < best):
                best = rate
        return best

    def consume(self, n: int) -> None:
        """Take ``n`` tokens from every bucket, sleeping as each requires."""
        for bucket in self.buckets:
            bucket.consume(n)
