"""The slots of a torrent's queue of complete pieces waiting for their hash check and write, and the stalls
they cause.

A peer's reader takes a slot (:meth:`VerifySlots.acquire`) for each piece it completes and waits while none is
free; the verdict of the piece gives it back (:meth:`VerifySlots.release`). A wait means the storage (or the
hashing of what was not hashed on arrival), not the network, is the limit of the download at that moment: it
is counted (:attr:`VerifySlots.stalls`) and timed (:attr:`VerifySlots.stalled_seconds`, the time during which
at least one reader waited), as libtorrent counts the peers waiting for the disk. The count and the time are
what "download complete" logs and :class:`~torrentcore.handle.TorrentStatus` reports: a user whose downloads
stall on a slow disk can see it.

Found while profiling issue 17: a 512 MiB download of 200 files (256 KiB pieces, 16 slots) from 3 libtorrent
seeders on a 2-core VM had its readers wait 424-644 times per download, 0.65-1.75 s in all (summed over the
readers); 64 slots cut that to 2-139 waits without changing the speed (the process is CPU-bound there, and the
waits only moved the CPU to the writers: see docs/performance.md, session 16).
"""

from __future__ import annotations

import time

import gevent.event
import gevent.lock


class VerifySlots:
    """``count`` slots for pieces waiting for their hash check and write (used on the event loop only)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._free = gevent.lock.Semaphore(count)
        self._in_flight = 0
        self._idle = gevent.event.Event()
        self._idle.set()
        #: Times a reader found every slot taken and waited.
        self.stalls = 0
        self._waiting = 0  # readers waiting for a slot now
        self._stalled_since = 0.0  # when the first of them began to wait
        self._stalled_total = 0.0  # seconds of the stalls that ended

    def acquire(self) -> None:
        """Take a slot, waiting while none is free (a stall, counted and timed). A free slot costs no clock
        read: this runs once per piece."""
        if not self._free.locked():
            self._free.acquire()
        else:
            self.stalls += 1
            self._waiting += 1
            if self._waiting == 1:
                self._stalled_since = time.monotonic()
            try:
                self._free.acquire()
            finally:
                self._waiting -= 1
                if not self._waiting:
                    self._stalled_total += time.monotonic() - self._stalled_since
        self._in_flight += 1
        self._idle.clear()

    def release(self) -> None:
        """A piece's verdict was handled: its slot is free again."""
        self._free.release()
        self._in_flight -= 1
        if not self._in_flight:
            self._idle.set()

    def wait_idle(self, timeout: float) -> bool:
        """Wait (bounded) until every slot is free; False on timeout."""
        return self._idle.wait(timeout)

    @property
    def stalled_seconds(self) -> float:
        """Seconds during which at least one reader waited for a slot (several at once count once); a stall
        still going on counts up to now."""
        if self._waiting:
            return self._stalled_total + time.monotonic() - self._stalled_since
        return self._stalled_total


__all__ = ["VerifySlots"]
