"""LEDBAT congestion control for uTP (BEP 29, RFC 6817): keep the one-way queuing delay near 100 ms.

Each acknowledgement carries the peer's ``timestamp_difference``: its receive time minus our send
time, that is the one-way delay plus the clocks' offset. The smallest such sample over the last two
minutes is the base delay (the offset plus the propagation delay); a sample minus the base is the
queuing delay we cause. The window grows while that is under the target and shrinks above it::

    off_target = (TARGET - delay) / TARGET
    cwnd += MAX_CWND_INCREASE * off_target * bytes_acked / cwnd

as the BEP writes it (libtorrent's ``MAX_CWND_INCREASE_BYTES_PER_RTT`` is 3000). A lost packet halves
the window (at most once per round trip), a timeout drops it to one packet.
"""

from __future__ import annotations

from collections import deque

#: Target queuing delay in microseconds (BEP 29: 100 ms).
TARGET_US = 100_000
#: Most bytes the window may grow by per round trip (BEP 29 / libutp / libtorrent: 3000).
MAX_CWND_INCREASE = 3000
#: Base-delay history: one minimum per minute, this many minutes (the BEP keeps two minutes).
BASE_HISTORY_MINUTES = 2
#: The window never goes under this many bytes (a packet must always be sendable).
MIN_WINDOW = 2 * 1500
#: Largest window (bytes in flight): 1 MiB. On loopback the delay never reaches the target so the
#: window would grow without end; 1 MiB is ~700 packets, well past what a Python sender fills.
MAX_WINDOW = 1024 * 1024
#: Window at the start: libtorrent starts at one MTU and slow-starts; we start at 16 packets.
INITIAL_WINDOW = 16 * 1500


class Ledbat:
    """One connection's congestion window (bytes allowed in flight)."""

    def __init__(self) -> None:
        self.cwnd = float(INITIAL_WINDOW)
        self.slow_start = True
        self.ssthresh = float(MAX_WINDOW)
        self._minutes: deque[tuple[int, int]] = deque(maxlen=BASE_HISTORY_MINUTES + 1)  # (minute, min sample)
        self._last_cut = 0.0
        self.delay_us = 0

    @property
    def window(self) -> int:
        """Bytes that may be in flight now."""
        return int(self.cwnd)

    def base_delay(self) -> int | None:
        """The smallest delay sample of the history (None before the first one)."""
        return min(m for _, m in self._minutes) if self._minutes else None

    def on_delay_sample(self, sample_us: int, now: float) -> None:
        """Record one ``timestamp_difference`` sample (a 32-bit wrapping value, microseconds)."""
        minute = int(now // 60)
        if self._minutes and self._minutes[-1][0] == minute:
            if _wrap_less(sample_us, self._minutes[-1][1]):
                self._minutes[-1] = (minute, sample_us)
        else:
            self._minutes.append((minute, sample_us))
        base = self._minutes[0][1]
        for _, m in self._minutes:
            if _wrap_less(m, base):
                base = m
        self.delay_us = max(0, (sample_us - base) & 0xFFFFFFFF) if not _wrap_less(sample_us, base) else 0

    def on_ack(self, bytes_acked: int, in_flight_before: int) -> None:
        """Grow or shrink the window for ``bytes_acked`` newly acknowledged bytes."""
        if bytes_acked <= 0:
            return
        off_target = (TARGET_US - min(self.delay_us, 10 * TARGET_US)) / TARGET_US
        gain = MAX_CWND_INCREASE * off_target * bytes_acked / max(self.cwnd, 1.0)
        if self.slow_start and off_target > 0:
            # Slow start (libtorrent does it too): double per round trip until a loss or the target delay.
            ss = self.cwnd + bytes_acked
            if ss > self.ssthresh:
                self.slow_start = False
            else:
                gain = max(gain, float(bytes_acked))
        elif off_target <= 0:
            self.slow_start = False
        if gain > 0 and in_flight_before + bytes_acked < self.cwnd * 0.5:
            gain = 0.0  # the application did not fill the window: do not grow it (libtorrent's cwnd_full rule)
        self.cwnd = min(float(MAX_WINDOW), max(float(MIN_WINDOW), self.cwnd + gain))

    def on_loss(self, now: float, rtt: float) -> None:
        """A packet was lost (fast retransmit, or a selective ack hole): halve, once per round trip."""
        if now - self._last_cut < max(rtt, 0.05):
            return
        self._last_cut = now
        self.cwnd = max(float(MIN_WINDOW), self.cwnd / 2)
        self.ssthresh = self.cwnd
        self.slow_start = False

    def on_timeout(self) -> None:
        """The retransmission timer fired: back to the minimum window."""
        self.ssthresh = max(float(MIN_WINDOW), self.cwnd / 2)
        self.cwnd = float(MIN_WINDOW)
        self.slow_start = True


def _wrap_less(a: int, b: int) -> bool:
    """``a < b`` for 32-bit wrapping microsecond values."""
    return a != b and ((b - a) & 0xFFFFFFFF) < 0x80000000


__all__ = ["Ledbat", "TARGET_US", "MAX_CWND_INCREASE", "MIN_WINDOW", "MAX_WINDOW"]
