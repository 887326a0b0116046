"""A token bucket shared by all peers of a session (``--max-download-rate``/``--max-upload-rate``)."""

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
