"""The session's clock: one greenlet that calls every torrent's once-a-second work.

A torrent's periodic jobs (rates, request time-outs, seeding limits, the progress report, the choker's
rounds) used to be three greenlets per torrent, each sleeping on its own timer: 500 seeding torrents woke
the event loop 1,000 times a second and kept 6 % of a core busy with no peer at all
(benchmarks/many_torrents.py). A :class:`Ticker` runs them all from one greenlet, one timer.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import gevent

#: Seconds between ticks (progress reports, rates, request time-outs, seeding limits).
TICK = 1.0


class Ticker:
    """Calls each added callback with ``time.monotonic()`` once per ``interval`` seconds, in one greenlet.

    Callbacks must not raise or block for long (they delay every other torrent's tick); a torrent wraps
    its own in its guard. The greenlet runs only while callbacks are registered.
    """

    def __init__(self, interval: float = TICK) -> None:
        self.interval = interval
        self._callbacks: dict[int, Callable[[float], None]] = {}
        self._next_token = 0
        self._greenlet: gevent.Greenlet | None = None

    def add(self, callback: Callable[[float], None]) -> int:
        """Call ``callback(now)`` every tick from now on (the first in ``interval`` seconds); returns a token."""
        token = self._next_token
        self._next_token += 1
        self._callbacks[token] = callback
        if self._greenlet is None or self._greenlet.dead:
            self._greenlet = gevent.spawn(self._run)
        return token

    def remove(self, token: int) -> None:
        """Stop calling the callback ``token`` (nothing if it is gone already)."""
        self._callbacks.pop(token, None)

    def __len__(self) -> int:
        return len(self._callbacks)

    def _run(self) -> None:
        while self._callbacks:
            gevent.sleep(self.interval)
            now = time.monotonic()
            for callback in list(self._callbacks.values()):
                callback(now)

    def close(self) -> None:
        """Stop ticking (the session closes)."""
        self._callbacks.clear()
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None


__all__ = ["Ticker", "TICK"]
