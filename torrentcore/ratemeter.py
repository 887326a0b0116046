"""Transfer rates over a sliding window of one-second samples."""

from __future__ import annotations

from collections import deque


class RateMeter:
    """Counts bytes; :meth:`tick` (once a second) closes a sample; :attr:`rate` averages the window."""

    __slots__ = ("total", "_pending", "_samples", "rate")

    def __init__(self, window: int = 5) -> None:
        self.total = 0
        self._pending = 0
        self._samples: deque[int] = deque(maxlen=window)
        self.rate = 0.0

    def add(self, n: int) -> None:
        """Count ``n`` bytes."""
        self.total += n
        self._pending += n

    @property
    def measured(self) -> bool:
        """True once a sample was closed (before that, :attr:`rate` is 0 whatever was counted)."""
        return bool(self._samples)

    def tick(self, seconds: float = 1.0) -> None:
        """Close the current sample (covering ``seconds``)."""
        self._samples.append(self._pending / max(seconds, 1e-3))
        self._pending = 0
        self.rate = sum(self._samples) / len(self._samples)
