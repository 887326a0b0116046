"""Which torrents run: ``download-queue-size`` downloads and ``seed-queue-size`` seeds at once, in queue
order; the rest wait (status "queued"). A torrent that moved no data for ``queue-stalled-minutes`` is
stalled and does not hold a slot, as in Transmission.

:func:`plan` only decides; the daemon pauses and resumes the handles it names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class Queueable(Protocol):
    """What the queue needs of a torrent."""

    queued: bool

    @property
    def position(self) -> int: ...

    @property
    def complete(self) -> bool: ...

    @property
    def wants_to_run(self) -> bool: ...


@dataclass(frozen=True)
class QueuePlan:
    """Torrents to take out of the queue and start, and torrents to put into it."""

    start: list[Any]
    enqueue: list[Any]


def plan(torrents: Sequence[Any], settings: dict[str, Any], stalled: Callable[[Any], bool]) -> QueuePlan:
    """Decide the queue (``settings``: the session's, by Transmission name; ``stalled(t)``: t holds no slot)."""
    start: list[Any] = []
    enqueue: list[Any] = []
    for complete, enabled_key, size_key in ((False, "download-queue-enabled", "download-queue-size"),
                                            (True, "seed-queue-enabled", "seed-queue-size")):
        group = sorted((t for t in torrents if t.wants_to_run and t.complete == complete), key=lambda t: t.position)
        if not settings.get(enabled_key):
            start.extend(t for t in group if t.queued)
            continue
        size = max(0, int(settings.get(size_key, 0)))
        busy = sum(1 for t in group if not t.queued and not stalled(t))
        for t in group:
            if t.queued and busy < size:
                start.append(t)
                busy += 1
        # More running than slots (the size was lowered, or a torrent just completed): queue the last ones.
        running = [t for t in group if not t.queued and not stalled(t)]
        for t in running[size:]:
            enqueue.append(t)
    return QueuePlan(start, enqueue)


__all__ = ["plan", "QueuePlan", "Queueable"]
