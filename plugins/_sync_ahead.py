"""Making written files durable while the download goes on, instead of all at the end.

:class:`SyncAhead` is the filesystem storage's helper: the files written are ``fsync``-ed in the background
while the download goes on, in batches of :data:`SYNC_AHEAD_BYTES` (real OS threads, also under gevent's
monkey-patching), on duplicates of their descriptors, so that the storage may close its own meanwhile.
What it has synced no longer waits for the ``fsync`` at close, which then covers only what was written
after the last hand-over (most of the data of a download is on disk by then). Each file is synced once it is
finished (no byte of it is written again), big ones also every :data:`SYNC_AHEAD_FILE_BYTES`, so each file's
``fsync`` (a journal commit on ext4) happens about once however many files there are. The storage's rule:
the resume record vouches for a file as on the disk only once it was ``fsync``-ed without error, its last
write before the ``fsync`` started (:meth:`SyncAhead.not_synced` lists the others; a failure in the background
makes :meth:`SyncAhead.wait` and :attr:`SyncAhead.failed` say so, and then no record is written).

Where the resume record can name the boot (``plugins/_boot.py``), nothing waits for these ``fsync`` calls, so
each hand-over first *settles* (:func:`settle_seconds`): a file is ``fsync``-ed only once the kernel has had the
time to write its pages by itself, and the ``fsync`` then finds nothing left to write. A download shorter than
that pays nothing for the writeback, as libtorrent's and aria2c's never do (they never ``fsync``); a longer one
still does for a big file being written, whose ``fsync`` also covers its pages written since.

:func:`in_threads` runs blocking calls in several OS threads at once (ext4 commits concurrent fsyncs
together).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable

from gevent import monkey

from torrentcore.hookspec import close_fd

#: A file is handed to the background fsync once it is finished (every byte of it written) or once
#: SYNC_AHEAD_FILE_BYTES were written to it since; a batch starts once the files handed over hold
#: SYNC_AHEAD_BYTES. Measured with benchmarks/storage_write.py (512 MiB written in random piece order, then
#: closed; 2-core VM, ext4 on virtio, load 2-4): close() took 0.20 s for one file and 0.33-0.50 s for
#: swarm.py's 200-file tree when every fsync waited for it. Every 32 MiB written, all files written since (in
#: random order nearly all of them each time): the tree's close 0.16-0.19 s, but 1,100 fsyncs instead of 200;
#: finished files only: 0.31-0.43 s (in random order most files finish near the end); finished files and
#: every 4 MiB of one: 0.20-0.30 s, 1 MiB: 0.25-0.31 s. In swarm.py downloads (tree, 3 seeders, same run as
#: the code before): "download complete" to exit 0.17-0.21 s instead of 0.50-0.59 s (one file: 0.07-0.17 s
#: instead of 0.38-0.50 s); libtorrent, which never fsyncs, 0.31 s.
SYNC_AHEAD_BYTES = 32 << 20
SYNC_AHEAD_FILE_BYTES = 4 << 20
#: A background batch runs in one OS thread (close, which is waited for, helps it with the storage's
#: SYNC_THREADS). Each thread takes the GIL back after every fsync, from the event loop and the verifier's
#: workers: swarm.py tree, 1 seeder, summed time peers waited for a verify slot (2 runs each, load 7): the
#: code before 0.42/0.45 s, batches in 8 threads 0.50/0.43 s, in 1 thread 0.25/0.24 s.

#: Settling (see the module docstring): a hand-over is fsync-ed once this many seconds have passed beyond the
#: kernel's own writeback of dirty pages (``vm.dirty_expire_centisecs`` after their first change, checked every
#: ``vm.dirty_writeback_centisecs``). Measured (200 files of 2.5 MiB written, then each fsync-ed; 2-core VM,
#: ext4 on virtio): at once 0.059 s of CPU and 0.45 s of wall time, 40 s later 0.003 s and 0.015 s. In
#: swarm.py downloads of the 200-file tree against the code before, in the same rounds (1 and 3 seeders, 4-8
#: rounds, 2026-12-03): with no fsync during the download 1.11-1.13x as fast, with settling 0.88-1.11x (median
#: 1.03; one 4-round run moves by ±13 %), CPU 0.92-1.04x (median 0.94); the 1 GiB file 0.93-1.20x.
SETTLE_MARGIN = 5.0
#: The most seconds a hand-over settles: a kernel told to keep dirty pages longer writes them later than this,
#: and the fsync then writes them itself, as it did before settling.
SETTLE_MOST = 120.0
#: Where the kernel's writeback settings are read (Linux).
DIRTY_EXPIRE_PATH = "/proc/sys/vm/dirty_expire_centisecs"
DIRTY_WRITEBACK_PATH = "/proc/sys/vm/dirty_writeback_centisecs"


def settle_seconds() -> float:
    """How long a hand-over waits before its ``fsync``: the kernel's expiry of dirty pages plus one period of its
    writeback thread, plus :data:`SETTLE_MARGIN`, at most :data:`SETTLE_MOST`. 0 (fsync at once, as before) where
    the settings cannot be read or the periodic writeback is off (``dirty_writeback_centisecs`` 0)."""
    try:
        with open(DIRTY_EXPIRE_PATH, encoding="ascii") as f:
            expire = int(f.read(32).strip())
        with open(DIRTY_WRITEBACK_PATH, encoding="ascii") as f:
            period = int(f.read(32).strip())
    except (OSError, ValueError):
        return 0.0
    if expire < 0 or period <= 0:
        return 0.0
    return min((expire + period) / 100 + SETTLE_MARGIN, SETTLE_MOST)


class SyncAhead:
    """Background ``fsync`` of finished files (and of big files every :data:`SYNC_AHEAD_FILE_BYTES`), in batches.

    ``note(key, nbytes, finished)`` after each write returns whether a batch should start now;
    ``ready()`` lists the files handed over since the last batch; ``start(items)`` takes ``(key, fd)``
    pairs for them, descriptors this object now owns (duplicates: it closes them) or ``None`` with
    ``open_fd(key)`` opening the file again. Called by one thread at a time (the storage's callers hold its
    lock); a batch runs in OS threads of its own, one batch at a time.

    With ``settle`` > 0 a hand-over joins the next batch only ``settle`` seconds later (by ``clock``), seen at the
    first :meth:`note` after that; :meth:`settled_finished` gives the finished files whose time has come
    meanwhile (at close, when no write comes any more).
    """

    def __init__(self, open_fd: Callable[[object], int], settle: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._open_fd = open_fd
        self._settle = settle
        self._clock = clock
        self._pending: dict[object, int] = {}  # bytes written to each file since it was last handed over
        #: Hand-overs settling, oldest first: (when they may be fsync-ed, file, bytes, finished).
        self._settling: deque[tuple[float, object, int, bool]] = deque()
        self._ready: set[object] = set()  # files handed over for the next batch
        self._ready_finished: set[object] = set()  # ...of them, those settled as finished files (a subset)
        self._ready_bytes = 0
        self._busy = None  # the running batch's lock (held until it ends), or None
        self._queue: deque = deque()  # the running batch's files not taken by a thread yet
        self._failed = False
        self._inflight: set = set()  # files handed to a batch whose fsync has not ended well (yet)

    def note(self, key: object, nbytes: int, finished: bool) -> bool:
        """``nbytes`` were written to file ``key`` (``finished``: all of it is written now): True if a batch
        should start now (enough handed over, none running)."""
        pending = self._pending.get(key, 0) + nbytes
        if finished or pending >= SYNC_AHEAD_FILE_BYTES:
            self._pending.pop(key, None)
            if self._settle > 0:
                self._settling.append((self._clock() + self._settle, key, pending, finished))
            else:
                self._ready.add(key)
                self._ready_bytes += pending
        else:
            self._pending[key] = pending
        if self._settling:
            self._take_settled()
        if self._ready_bytes < SYNC_AHEAD_BYTES:
            return False
        if self._busy is not None and not self._busy.locked():
            self._busy = None  # the last batch ended
        return self._busy is None

    def _take_settled(self) -> None:
        """Move the hand-overs whose settling time has come into the next batch."""
        now = self._clock()
        settling = self._settling
        while settling and settling[0][0] <= now:
            _when, key, nbytes, finished = settling.popleft()
            self._ready.add(key)
            self._ready_bytes += nbytes
            if finished:
                self._ready_finished.add(key)

    def settled_finished(self) -> list:
        """At close: the finished files whose settling time has come and that no batch took yet (their fsync
        finds nothing left to write), taken from the next batch; the caller fsyncs them itself."""
        self._take_settled()
        finished, self._ready_finished = self._ready_finished, set()
        self._ready -= finished
        return sorted(finished)

    def ready(self) -> list:
        """The files handed over for the next batch, in order."""
        return sorted(self._ready)

    def start(self, items: list[tuple[object, int | None]]) -> None:
        """fsync these files (those of :meth:`ready`) in the background; the caller forgets them as unsynced
        (:meth:`wait` says whether their fsync went well)."""
        self._ready.clear()
        self._ready_finished.clear()
        self._ready_bytes = 0
        if not items:
            return
        self._inflight.update(key for key, _ in items)
        start_thread = monkey.get_original("_thread", "start_new_thread")
        lock = monkey.get_original("_thread", "allocate_lock")()
        lock.acquire()
        self._busy = lock
        self._queue = deque(items)

        def run() -> None:
            try:
                self._drain()
            finally:
                lock.release()

        try:
            start_thread(run, ())
        except RuntimeError:  # no thread to be had: sync them here, now
            self._busy = None
            lock.release()
            self._drain()

    def _drain(self, _: object = None) -> bool:
        """fsync the files of the running batch until none is left (in the batch's thread, and at close in
        several more: :meth:`wait`); ``popleft`` hands each file to one thread only."""
        queue = self._queue
        while True:
            try:
                item = queue.popleft()
            except IndexError:
                return True
            if not self._sync_one(item):
                self._failed = True

    def _sync_one(self, item: tuple[object, int | None]) -> bool:
        key, fd = item
        try:
            if fd is None:
                fd = self._open_fd(key)
                if fd is None:
                    return False  # gone since it was written: never vouch for it
            try:
                os.fsync(fd)
            finally:
                close_fd(fd)
        except OSError:
            return False
        self._inflight.discard(key)
        return True

    def not_synced(self) -> set:
        """The files handed over whose ``fsync`` has not ended well: still running, waiting, abandoned or failed."""
        return set(self._inflight)

    @property
    def failed(self) -> bool:
        """Whether an ``fsync`` of a batch failed."""
        return self._failed

    def abandon(self) -> None:
        """Start no more ``fsync`` of the running batch (the one under way ends by itself); its files stay in
        :meth:`not_synced`. For a close that does not wait for the disk (see ``plugins/_boot.py``)."""
        while True:
            try:
                _key, fd = self._queue.popleft()
            except IndexError:
                return
            if fd is not None:
                try:
                    close_fd(fd)
                except OSError:
                    pass

    def wait(self, threads: int = 0) -> bool:
        """Finish the running batch, if any, helping it with ``threads`` OS threads (0: only wait for it).
        Blocking, as close is (the batch's one thread alone took 0.36 s of a close after the 200-file tree's
        last pieces). False if any fsync of any batch failed."""
        busy, self._busy = self._busy, None
        if busy is not None:
            if threads > 0:
                in_threads(self._drain, list(range(threads)), threads)
            busy.acquire()
            busy.release()
        return not self._failed


def in_threads(func, items: list, threads: int) -> list[bool]:
    """``[func(item) for item in items]`` in up to ``threads`` OS threads (real ones, also under gevent's
    monkey-patching, which makes ``threading`` threads greenlets), waiting for all of them: blocking, as the
    calls themselves are (the caller may hold a thread lock, so it must not yield to other greenlets).
    ``func`` must not raise."""
    if len(items) <= 1 or threads <= 1:
        return [func(item) for item in items]
    start = monkey.get_original("_thread", "start_new_thread")
    allocate = monkey.get_original("_thread", "allocate_lock")
    results: list[bool] = [False] * len(items)
    n = min(threads, len(items))
    done = []

    def run(k: int, lock) -> None:
        try:
            for j in range(k, len(items), n):
                results[j] = func(items[j])
        finally:
            lock.release()

    for k in range(n):
        lock = allocate()
        lock.acquire()
        try:
            start(run, (k, lock))
        except RuntimeError:  # no thread to be had: this share here
            lock.release()
            for j in range(k, len(items), n):
                results[j] = func(items[j])
            continue
        done.append(lock)
    for lock in done:
        lock.acquire()
    return results
