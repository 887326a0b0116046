"""Which torrents run: ``download-queue-size`` downloads and ``seed-queue-size`` seeds at once, in queue
order; the rest wait (status "queued"). A torrent that moved no data for ``queue-stalled-minutes`` is
stalled and does not hold a slot, as in Transmission.

:func:`plan` only decides; the daemon pauses and resumes the handles it names. :func:`moved` is the queue
order after a ``queue-move-*``.
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


def moved(order: Sequence[Any], chosen: Sequence[Any], how: str) -> list[Any]:
    """``order`` (the queue, first first) after queue-move-``how`` (top, up, down, bottom) of the ``chosen``
    ones; up and down move each by one place, past torrents not chosen only."""
    order = list(order)
    picked = {id(t) for t in chosen}
    if how == "top":
        return [t for t in order if id(t) in picked] + [t for t in order if id(t) not in picked]
    if how == "bottom":
        return [t for t in order if id(t) not in picked] + [t for t in order if id(t) in picked]
    if how == "up":
        for i in range(1, len(order)):
            if id(order[i]) in picked and id(order[i - 1]) not in picked:
                order[i - 1], order[i] = order[i], order[i - 1]
    elif how == "down":
        for i in range(len(order) - 2, -1, -1):
            if id(order[i]) in picked and id(order[i + 1]) not in picked:
                order[i + 1], order[i] = order[i], order[i + 1]
    return order


__all__ = ["plan", "moved", "QueuePlan", "Queueable"]
