"""Transfer rates over a sliding window of one-second samples."""

from __future__ import annotations

from collections import deque


class RateMeter:
    """Counts bytes; :meth:`tick` (once a second) closes a sample; :attr:`rate` averages the window.

    Counting is one addition to :attr:`total` (:meth:`add`, or ``meter.total += n`` inline on a per-block path):
    a sample is what ``total`` grew by since the last tick.
    """

    __slots__ = ("total", "_ticked", "_samples", "rate")

    def __init__(self, window: int = 5) -> None:
        #: Bytes counted in all.
        self.total = 0
        self._ticked = 0  # total at the last tick
        self._samples: deque[float] = deque(maxlen=window)
        self.rate = 0.0

    def add(self, n: int) -> None:
        """Count ``n`` bytes."""
        self.total += n

    @property
    def measured(self) -> bool:
        """True once a sample was closed (before that, :attr:`rate` is 0 whatever was counted)."""
        return bool(self._samples)

    def tick(self, seconds: float = 1.0) -> None:
        """Close the current sample (covering ``seconds``)."""
        total = self.total
        self._samples.append((total - self._ticked) / max(seconds, 1e-3))
        self._ticked = total
        self.rate = sum(self._samples) / len(self._samples)
