"""Hash-then-store: the start-up check of data on disk, and every downloaded piece's verification.

The rule that protects users' data lives here: a piece is written through the storage only after its
hash matched (:meth:`Metainfo.piece_ok`: SHA-1 for v1, the SHA-256 Merkle piece hash for v2, both for a
hybrid), and marked complete only after the write returned. Hashing (and, for storages that
declare ``thread_safe_writes``, the write too) runs in the session's worker threads so the event loop
keeps receiving; every storage call that can overlap with a worker holds :attr:`Verifier.disk_lock`.

Downloaded pieces are handed over in batches (:meth:`Verifier.submit`): the event loop appends each
complete piece to a queue, one task in a worker thread drains that queue (hash, then write) for as long as
it holds pieces, and its verdicts come back through one async watcher, delivered by one greenlet per
batch. A per-piece greenlet, thread-pool task and result (the former design) cost several GIL hand-overs
and wake-ups per piece.
"""

from __future__ import annotations

import functools
import hashlib
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event
import structlog
from gevent import monkey

from .errors import StorageError
from .piecemanager import hashes_on_arrival
from .verify_slots import VerifySlots

if TYPE_CHECKING:  # pragma: no cover
    from .bitfield import Bitfield
    from .metainfo import Metainfo
    from .piecemanager import Piece

log = structlog.get_logger(__name__)

#: The start-up check's tasks in the pool at once, one per core: pieces (storages without thread-safe writes) or
#: batches of CHECK_BATCH_BYTES (the others; the next is handed over as the oldest one's verdicts are collected).
#: Four batches at once (the pool's size, on two cores) contended for the disk lock, which the reads take one at
#: a time, and for the GIL: 1 GiB in place checked, medians of 5 (four at once, then two; wall s, CPU s, context
#: switches): 256 KiB pieces 0.62/0.61, 0.97/0.97, 3,400/1,900; 64 KiB 0.86/0.81, 1.26/1.16, 17,700/5,000;
#: 16 KiB 2.03/1.59, 2.46/1.83, 102,000/30,000 (2026-12-04).
CHECK_PARALLEL = 2
#: Complete pieces waiting for their hash check and write, in bytes (at least 2 pieces, at most 16 unless
#: small: see :func:`verify_slots`): beyond it the peer that completes a piece waits. A reader on a busy
#: socket never yields to the event loop by itself, so without this bound finished pieces piled up in
#: memory (700 MiB for 1 GiB measured).
VERIFY_QUEUE_BYTES = 16 * 1024 * 1024
#: Small pieces may queue this many hand-over batches (VERIFY_BATCH_BYTES) beyond 16 pieces: 16 pieces of
#: 16 KiB (256 KiB) never filled one batch, so every hand-over waited VERIFY_BATCH_WAIT while the peers
#: waited for a slot (downloads of 16 KiB pieces stayed near 50 MB/s, benchmarks/large_torrent.py).
VERIFY_QUEUE_BATCHES = 4
#: Downloaded pieces are handed to the worker thread once this many bytes of them are queued (or after
#: VERIFY_BATCH_WAIT seconds): one wake-up of the worker for several pieces. Measured (benchmarks/swarm.py's
#: kind of download of 256 MiB, 256 KiB pieces, one peer; main-thread and process CPU per GiB): one thread-pool
#: task and greenlet per piece 2.6-3.0 and 4.2-4.4 s; batched 1.8-2.3 and 3.0-3.4 s.
VERIFY_BATCH_BYTES = 1 << 20
#: ...or after this many seconds. The same holds for a worker waiting for more (VERIFY_LINGER): woken once
#: VERIFY_BATCH_BYTES are queued, or by this kick, not once per piece (a futex wake by the event loop, a context
#: switch and a GIL hand-over by the worker each). Measured (the code before and after in the same shuffled
#: rounds, medians and their 95 % bootstrap intervals; 2026-12-04): 1 GiB of 64 KiB pieces from 1 seeder 1.04x
#: as fast (1.00-1.10, 10 rounds), 0.96x the CPU; 256 KiB pieces the same within the noise (the 512 MiB tree from
#: 3 seeders 1.02x, 0.92-1.10, 20 rounds; 1 GiB from 1 seeder 1.01x, 0.97-1.04, 14 rounds; 0.99x the CPU);
#: benchmarks/large_torrent.py, 1 GiB of 16 KiB pieces: 0.95x the download CPU.
VERIFY_BATCH_WAIT = 0.002
#: Worker tasks draining one torrent's queue at most (a second starts while two batches wait) when the workers
#: hash whole pieces (v2 and hybrid torrents): hashing then uses both cores, and on a busy machine two threads
#: get their share of the CPU (one alone fell behind).
VERIFY_WORKERS = 2
#: ...and when the event loop fed each piece's hash as its blocks arrived (v1: :func:`~torrentcore.piecemanager.
#: hashes_on_arrival`): the workers then finish the few hashes of pieces whose blocks came out of order and write,
#: one at a time (``disk_lock``), so a second worker mostly waited for the lock, and every wake-up and GIL hand-over
#: of its thread cost the event loop (a worker woke 2,500 times per 512 MiB download, mostly for the GIL).
#: Measured (2026-12-04, swarm.py's kind of download from a persistent swarm, the code before and after in the
#: same shuffled rounds, medians and their 95 % bootstrap intervals): the 512 MiB tree from 3 seeders 1.04x as
#: fast (0.99-1.06, 24 rounds), 0.96x the CPU; from 1 seeder 1.10x (0.98-1.16, 20 rounds), 0.98x the CPU; 1 GiB
#: from 3 seeders 1.04x (0.98-1.10, 12 rounds), 0.96x the CPU.
WRITE_WORKERS = 1
#: A worker task whose queue ran empty waits this long for the next piece before it ends: submit() then wakes
#: it (a lock release) instead of starting a thread-pool task (72 us of the event loop's CPU each, 200-400 per
#: 512 MiB) once a batch has queued. Longer than the gap between pieces at any useful rate (0.6 ms at 400 MB/s,
#: 2.6 ms at 100 MB/s), short enough that a waiting worker holds a pool thread only briefly. Measured
#: (benchmarks/readpath.py, 2 x 256 MiB, 3 pairs, load 2-5): tasks 198-410 -> 4-13 per 512 MiB, the event
#: loop's CPU in submit() 30-52 -> 22-30 ms; swarm.py 512 MiB, 1 seeder, 5 rounds, load 5-6, against the same
#: code without it: 1.10x the MB/s (4 of 5 rounds), CPU 2.38 against 2.51 s.
VERIFY_LINGER = 0.005
#: A worker posts its verdicts to the event loop (one wake-up of the loop, one greenlet delivering them) once
#: it holds this many bytes of them (at most a quarter of the verify slots' pieces, at least one piece), or
#: when it found no piece to check for VERDICT_WAIT seconds, or when it ends (an error or a stop's verdict at
#: once, with those it holds). One post per verdict (the former design) woke the loop once per piece: at a
#: loop-bound rate the worker's queue empties after every piece.
#: Measured (benchmarks/piecepath.py, 256 MiB at 200 MB/s, 256 KiB pieces, 2 x 3 rounds alternating with the
#: code before, load 2.1-2.6): context switches per piece 5.0-5.5 -> 3.0-3.3 (process), 2.2-2.7 -> 1.4
#: (event loop); process CPU 3.04-3.25 -> 2.54-2.87 s/GiB.
VERDICT_BATCH_BYTES = 1 << 20
VERDICT_WAIT = 0.002
#: Start-up check with thread-safe storages: bytes read and hashed per hand-off to a worker thread.
CHECK_BATCH_BYTES = 4 << 20
#: ...and read per hold of the disk lock (at least one piece): a lock hand-over per 16 KiB piece between
#: the two workers and the event loop was a third of the check's time in py-spy (1 GiB of 16 KiB pieces).
#: Small on purpose: freeing several read buffers at once lets malloc return the memory to the OS, and the
#: next reads fault it in again (1 MiB per hold: 74,000 page faults per 256 MiB, and the check of 256 KiB
#: pieces took 1.4x the CPU). 512 MiB checked, user+sys CPU s, medians of 3 (base, 1 MiB, 64 KiB):
#: 16 KiB pieces 2.2 / 1.7 / 1.8, 64 KiB 1.4 / 1.8 / 1.5, 256 KiB 1.2 / 1.7 / 1.3.
CHECK_LOCK_BYTES = 64 << 10


def verify_slots(piece_length: int) -> int:
    """Pieces that may wait for their hash check at once: VERIFY_QUEUE_BYTES of them, at least 2, at most 16
    or VERIFY_QUEUE_BATCHES batches' worth (for small pieces: 64 of 64 KiB, 256 of 16 KiB)."""
    size = max(1, piece_length)
    most = max(16, VERIFY_QUEUE_BATCHES * VERIFY_BATCH_BYTES // size)
    return max(2, min(most, VERIFY_QUEUE_BYTES // size))


def sha1(data) -> bytes:
    """The SHA-1 digest of ``data``."""
    return hashlib.sha1(data).digest()


@functools.cache
def _thread_lock_type() -> Any:
    """The real (unpatched) ``threading.Lock``, looked up once: ``monkey.get_original`` took 170 us, two
    per torrent, 0.17 s of adding 500 torrents (cProfile, benchmarks/many_torrents.py)."""
    return monkey.get_original("threading", "Lock")


class Verifier:
    """Checks and stores one torrent's pieces.

    ``pool`` is the session's thread pool; ``stopping()`` says the torrent is shutting down (no write
    starts then); ``verified(index)`` is called for every piece found good at start.
    """

    def __init__(self, meta: Metainfo, storage: Any, have: Bitfield, pool: Any,
                 stopping: Callable[[], bool], verified: Callable[[int], None]) -> None:
        self.meta = meta
        self.storage = storage
        self.have = have
        self.pool = pool
        self._stopping = stopping
        self._verified = verified
        self.disk_lock = _thread_lock_type()()
        self.storage_closed = False
        self.checked = 0
        self.threaded = bool(getattr(storage, "thread_safe_writes", False))
        #: The slots of the queue of complete pieces (:mod:`torrentcore.verify_slots`: waits are counted as stalls).
        self.slots = VerifySlots(verify_slots(meta.piece_length))
        slots = self.slots.count
        #: Verdicts a worker holds before it posts them (see VERDICT_BATCH_BYTES).
        self._verdict_batch = max(1, min(slots // 4, VERDICT_BATCH_BYTES // max(1, meta.piece_length)))
        # Batched hand-over (see the module docstring): pieces to check, verdicts to deliver, and whether a
        # worker task is draining ``_todo`` (both sides look at them under ``_todo_lock``, a real thread lock).
        self._todo: deque = deque()
        self._verdicts: deque = deque()
        self._todo_lock = _thread_lock_type()()
        self._draining = 0  # worker tasks draining ``_todo`` (at most ``_workers``)
        self._workers = WRITE_WORKERS if hashes_on_arrival(meta) else VERIFY_WORKERS
        self._todo_bytes = 0
        self._kick: Any = None
        # Workers waiting (VERIFY_LINGER) for a piece, and the real lock they wait on: released by submit()
        # to wake one (``_wake_pending`` while released and not yet taken).
        self._lingering = 0
        self._wake = _thread_lock_type()()
        self._wake.acquire()
        self._wake_pending = False
        self._closing = False
        self._delivering = False
        self._async: Any = None
        #: Pieces taken from the resume record without being hashed: each is hashed the first time it is read
        #: for upload (:meth:`confirm`), so a record claiming data that is not there never uploads bad bytes.
        self.unconfirmed: set[int] = set()
        self._confirming: dict[int, gevent.event.AsyncResult] = {}
        #: Pieces with data on disk that the start-up check could not verify: a v2-only torrent's pieces
        #: whose file's piece layer is not known yet (:mod:`torrentcore.layer_recheck` checks them later).
        self.held: set[int] = set()

    # --- the start-up check --------------------------------------------------------------------------

    def check_existing(self, force: bool = False) -> bool:
        """Find verified pieces: from the storage's completion record (unless ``force``), else by hashing.

        Returns False when the check was cut short by a stop (then ``have`` holds what was verified).
        """
        record = None if force else self.storage.completed_pieces()
        if record is not None:
            for i in record:
                if 0 <= i < self.meta.num_pieces:
                    self.have.set(i)
                    self.storage.mark_complete(i)
                    self.unconfirmed.add(i)
            log.info("resume record trusted", torrent=self.meta.name, pieces=len(record))
            self.checked = self.meta.num_pieces
            return True
        todo = list(self.storage.pieces_with_data())
        log.info("checking existing data", torrent=self.meta.name, candidates=len(todo))
        if self.threaded:
            finished = self._check_in_threads(todo)
        else:
            finished = self._check_in_loop(todo)
        if finished:
            self.checked = self.meta.num_pieces
            if self.meta.v2_only and self.meta.missing_layers():  # checked again when their layer arrives
                self.held = {i for i in todo if not self.have[i]}
            if hasattr(self.storage, "check_finished"):  # optional (hookspec.Storage): a record may be written
                with self.disk_lock:
                    self.storage.check_finished()
        return finished

    def _check_in_loop(self, todo: list[int]) -> bool:
        pending: list = []
        for index in todo:
            if self._stopping():
                return False
            data = self.storage.read(index, 0, self.meta.piece_size(index))
            pending.append((index, self.pool.spawn(self.meta.piece_ok, index, data)))
            if len(pending) >= CHECK_PARALLEL:
                self._collect_one(*pending.pop(0))
        for item in pending:
            self._collect_one(*item)
        return True

    def _collect_one(self, index: int, result) -> None:
        if result.get() is True:
            self._found_good(index)
        self.checked += 1

    def _check_in_threads(self, todo: list[int]) -> bool:
        """Worker threads read (under the disk lock) and hash batches of about 4 MiB, so the event loop only
        collects verdicts. Per-piece hand-offs with the loop reading kept the check at one core's SHA-1
        speed (0.56 of the two-core limit)."""
        size = max(1, CHECK_BATCH_BYTES // max(1, self.meta.piece_length))
        batches = [todo[k : k + size] for k in range(0, len(todo), size)]
        pending: list = []
        for batch in batches:
            if self._stopping():
                return False
            pending.append((batch, self.pool.spawn(self._read_and_hash, batch)))
            if len(pending) >= CHECK_PARALLEL:
                self._collect_batch(*pending.pop(0))
        for item in pending:
            self._collect_batch(*item)
        return True

    def _read_and_hash(self, indices: list[int]) -> list[bool] | StorageError:
        """In a worker thread: read pieces (holding the disk lock, once per CHECK_LOCK_BYTES of them) and hash
        them (not holding it).

        A StorageError is returned, not raised (gevent prints a traceback for errors leaving its pool).
        """
        digests = []
        k = 0
        while k < len(indices):
            group, size = [], 0
            try:
                with self.disk_lock:
                    while k < len(indices) and (not group or size < CHECK_LOCK_BYTES):
                        index = indices[k]
                        group.append((index, self.storage.read(index, 0, self.meta.piece_size(index))))
                        size += len(group[-1][1])
                        k += 1
            except StorageError as exc:
                return exc
            digests.extend(self.meta.piece_ok(index, data) for index, data in group)
        return digests

    def _collect_batch(self, indices: list[int], result) -> None:
        digests = result.get()
        if isinstance(digests, StorageError):
            raise digests  # on the event loop: the torrent makes it one clear line
        good = [index for index, ok in zip(indices, digests) if ok]
        for index in good:
            self.have.set(index)
        with self.disk_lock:  # once per batch: the workers hold it while they read
            for index in good:
                self.storage.mark_complete(index)
        for index in good:
            self._verified(index)
        self.checked += len(indices)

    def _found_good(self, index: int) -> None:
        self.have.set(index)
        with self.disk_lock:
            self.storage.mark_complete(index)
        self._verified(index)

    # --- downloaded pieces ---------------------------------------------------------------------------

    def acquire_slot(self) -> None:
        """Wait while :func:`verify_slots` pieces are queued for their hash check and write (a stall of the
        download, counted and timed by :attr:`slots`)."""
        self.slots.acquire()

    def release_slot(self) -> None:
        """A queued piece was hashed and its verdict handled (stored and counted, or refused)."""
        self.slots.release()

    def wait_idle(self, timeout: float) -> bool:
        """Wait (bounded) until no piece is being hashed or stored: at shutdown, so that the summary counts
        every piece the storage recorded. False on timeout."""
        return self.slots.wait_idle(timeout)

    def submit(self, piece: Piece, on_verdict: Callable[[Piece, Any], None]) -> None:
        """Queue a complete piece (its slot taken with :meth:`acquire_slot`) for hash-then-store.

        ``on_verdict(piece, verdict)`` is called later in a greenlet of the event loop, once per piece
        (not always in order); ``verdict`` is True (stored), False (the hash did not match), None (the torrent is
        stopping: nothing written) or the exception raised (a StorageError). The slot is released after
        ``on_verdict`` returned. Returns at once.
        """
        with self._todo_lock:
            if self._async is None:
                self._async = gevent.get_hub().loop.async_(ref=False)
                self._async.start(self._verdicts_ready)
            self._todo.append((piece, on_verdict))
            self._todo_bytes += len(piece.buffer)
            if self._lingering:
                start = False
                if not self._wake_pending:
                    if self._todo_bytes >= VERIFY_BATCH_BYTES:
                        self._wake_pending = True
                        self._wake.release()  # a waiting worker takes it, and the pieces queued meanwhile
                    elif self._kick is None:  # fewer: woken by the kick (see VERIFY_BATCH_WAIT)
                        self._kick = gevent.spawn_later(VERIFY_BATCH_WAIT, self._kick_drain)
            else:
                start = (self._draining < self._workers
                         and self._todo_bytes >= VERIFY_BATCH_BYTES * (1 + self._draining))
                if start:
                    self._draining += 1
        if start:
            self.pool.spawn(self._drain)
        elif not self._draining and self._kick is None:
            self._kick = gevent.spawn_later(VERIFY_BATCH_WAIT, self._kick_drain)

    def _kick_drain(self) -> None:
        """Fewer than VERIFY_BATCH_BYTES queued for VERIFY_BATCH_WAIT: hand them over anyway (wake a waiting
        worker, else start one)."""
        self._kick = None
        with self._todo_lock:
            if self._lingering and self._todo and not self._wake_pending:
                self._wake_pending = True
                self._wake.release()
            start = not self._draining and bool(self._todo)
            if start:
                self._draining = 1
        if start:
            self.pool.spawn(self._drain)

    def _drain(self) -> None:
        """In a worker thread: check and store queued pieces until the queue is empty (one hand-over for
        every piece that arrives meanwhile), posting the verdicts to the event loop in batches (see
        VERDICT_BATCH_BYTES); then wait up to VERIFY_LINGER for another piece (submit() wakes it) before the task
        ends. Every verdict it holds is posted before it waits longer than VERDICT_WAIT, and before it ends."""
        notify = self._async
        batch = self._verdict_batch
        held = 0  # verdicts appended to ``_verdicts`` and not posted yet
        while True:
            with self._todo_lock:
                if self._todo:
                    piece, on_verdict = self._todo.popleft()
                    self._todo_bytes -= len(piece.buffer)
                elif self._closing:
                    if held:
                        notify.send()  # (under the lock: close() closes the watcher only once no task drains)
                    self._draining -= 1
                    return
                else:
                    piece = None
                    self._lingering += 1
            if piece is None:
                woken = False
                if held:
                    woken = self._wake.acquire(timeout=VERDICT_WAIT)
                    if not woken:
                        notify.send()
                        held = 0
                if not woken:
                    woken = self._wake.acquire(timeout=VERIFY_LINGER)  # (the GIL is released while it waits)
                with self._todo_lock:
                    self._lingering -= 1
                    if woken:
                        self._wake_pending = False
                    elif not self._todo:
                        self._draining -= 1
                        return
                continue
            try:
                if self.threaded:
                    stored = self._hash_and_store(piece)
                    verdict = stored if stored is not False or not self._stopping() else None
                else:
                    verdict = self._matches(piece)  # stored on the loop
            except BaseException as exc:  # noqa: BLE001 - carried to the loop, which makes it fatal
                verdict = exc
            self._verdicts.append((piece, on_verdict, verdict))
            held += 1
            if held >= batch or (verdict is not True and verdict is not False):  # an error or a stop: at once
                notify.send()
                held = 0

    def _verdicts_ready(self) -> None:
        """Async-watcher callback (in the hub): deliver the waiting verdicts in one greenlet."""
        if not self._delivering and self._verdicts:
            self._delivering = True
            gevent.spawn(self._deliver)

    def _deliver(self) -> None:
        try:
            while self._verdicts:
                piece, on_verdict, verdict = self._verdicts.popleft()
                try:
                    if not self.threaded and verdict is True:
                        verdict = self._store_on_loop(piece)
                    on_verdict(piece, verdict)
                finally:
                    self.release_slot()
        finally:
            self._delivering = False
            if self._verdicts:  # posted while the last callback ran (its watcher call found us busy)
                self._verdicts_ready()

    def _store_on_loop(self, piece: Piece) -> Any:
        """For storages without thread-safe writes: write a piece whose hash matched, on the event loop."""
        if self._stopping() or self.storage_closed:
            return None
        try:
            self.storage.write(piece.index, 0, piece.buffer)
            self.storage.mark_complete(piece.index)
        except StorageError as exc:
            return exc
        return True

    def _matches(self, piece: Piece) -> bool:
        """Whether a downloaded piece matches its hash; its SHA-1 may already be fed with its first bytes
        (:attr:`Piece.sha1 <torrentcore.piecemanager.Piece.sha1>`)."""
        return self.meta.piece_ok(piece.index, piece.buffer, sha1=piece.sha1, hashed=piece.hashed)

    def _hash_and_store(self, piece: Piece) -> bool | StorageError:
        """In a worker thread: hash the piece and only if it matches write it and mark it complete.

        For storages that declare ``thread_safe_writes``: the write (a quarter of the event loop's time
        when it ran there) then overlaps with receiving. False: the hash did not match, or the torrent is
        stopping (nothing written). A StorageError is returned, not raised.
        """
        if not self._matches(piece):
            return False
        with self.disk_lock:
            if self.storage_closed or self._stopping():
                return False
            try:
                self.storage.write(piece.index, 0, piece.buffer)
                self.storage.mark_complete(piece.index)
            except StorageError as exc:
                return exc
        return True

    def confirm(self, index: int) -> bool:
        """For a piece trusted from the resume record: hash it now, once (others asking meanwhile wait for the
        same verdict). True: good (or hashed before). False: the data does not match; the piece is no longer
        ours (``have`` cleared, the storage's record told). Raises StorageError."""
        if index not in self.unconfirmed:
            return bool(self.have[index])
        pending = self._confirming.get(index)
        if pending is not None:
            return pending.get()
        pending = self._confirming[index] = gevent.event.AsyncResult()
        try:
            digest = self.pool.apply(self._read_and_hash, ([index],))
            if isinstance(digest, StorageError):
                raise digest
            good = digest[0] is True  # _read_and_hash gives piece_ok's verdicts (both hashes for a hybrid)
            self.unconfirmed.discard(index)
            if not good:
                log.warning("a piece the resume record claimed does not match its hash; downloading it again",
                            torrent=self.meta.name, piece=index)
                self.have.clear(index)
                with self.disk_lock:
                    if not self.storage_closed:
                        self.storage.mark_incomplete(index)
            pending.set(good)
            return good
        except BaseException as exc:
            pending.set_exception(exc)
            raise
        finally:
            self._confirming.pop(index, None)

    def check_pieces(self, indices: list[int]) -> list[bool]:
        """Read and hash these pieces on disk in a worker thread (:meth:`Metainfo.piece_ok`); nothing is
        marked. Raises StorageError."""
        verdicts = self.pool.apply(self._read_and_hash, (indices,))
        if isinstance(verdicts, StorageError):
            raise verdicts
        return verdicts

    def read(self, index: int, begin: int, length: int) -> bytes:
        """Read from a verified piece (under the disk lock). Raises StorageError."""
        with self.disk_lock:
            return self.storage.read(index, begin, length)

    def flush(self) -> None:
        """Flush the storage (on completion)."""
        with self.disk_lock:
            self.storage.flush()

    def close(self) -> None:
        """Close the storage; waits for a write in a worker thread, and none starts after this."""
        with self._todo_lock:
            self._closing = True  # waiting workers end now
            if self._lingering and not self._wake_pending:
                self._wake_pending = True
                self._wake.release()
            if self._async is not None and not self._draining:  # else the worker still posts to it
                self._async.close()
                self._async = None
        with self.disk_lock:
            self.storage_closed = True
            self.storage.close()


__all__ = ["Verifier", "VERIFY_QUEUE_BYTES", "CHECK_PARALLEL", "sha1"]
