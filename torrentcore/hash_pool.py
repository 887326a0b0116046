"""Reading and hashing pieces of files on every core: the worker threads of ``torrentcore create``.

The caller describes each piece by where its bytes are (:class:`Piece`: one or more :class:`Segment` of
files on disk, in order) and says how to hash one (``digest``); :func:`hash_pieces` cuts the pieces into
jobs of about :data:`JOB_BYTES` of consecutive pieces. Each worker thread takes the next job itself,
reads its segments with ``os.preadv`` into a buffer of its own (reused from job to job: a fresh buffer per
piece cost page faults and zeroing on the reading thread), calls ``digest`` on each piece's bytes, posts
the results and takes the next job; ``hashlib`` releases the GIL on buffers over 2 KiB, so the workers read
and hash in parallel. The calling greenlet only delivers the results, in piece order, to ``done``: a worker
never waits for it (handing out each job from the calling greenlet left a worker idle until that greenlet
got a CPU, and on a busy machine that was often).

Before, one greenlet read every piece (a new ``bytearray`` each) and the thread pool only hashed: the
reading thread was the limit and ``create`` used about 1.2 of the 2 cores here. For 512 MiB in 1 MiB v1
pieces the main thread took 0.36 CPU s (py-spy: allocating the buffers, then ``readinto``) and the
hashing threads 0.36 together; now the main thread takes 0.04 and, while hashing, 2.05 threads are
running or ready to run on average (1.1 with one worker).

Memory is bounded: one buffer of ``max(JOB_BYTES, piece_length)`` bytes per worker, all of them together
within :data:`MEMORY` (fewer workers when pieces are very large). Results waiting for an earlier job are
only digests (20-52 bytes a piece, at most the size of the hashes the torrent itself holds).

The workers are real OS threads of a gevent :class:`~gevent.threadpool.ThreadPool` of this call's own, so
this works in a monkey-patched process (the CLI) and the calling greenlet's hub keeps running. Errors raised
in a worker (a file that cannot be opened or read, or is shorter than listed) reach the caller in piece
order: the first failing piece's error is the one raised.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, TypeVar

import gevent
import gevent.event
import gevent.threadpool
from gevent import monkey

from .config import usable_cpus
from .errors import BadInputError, TorrentcoreError

#: Bytes of pieces per job a worker takes (a piece larger than this is a job of its own): one result posted
#: and one wake-up of the hub per job, against about 3 ms of SHA-1 for 4 MiB here (1.3 GB/s on one core).
JOB_BYTES = 4 * 1024 * 1024
#: Most bytes of the workers' buffers together (big explicit piece lengths get fewer workers).
MEMORY = 64 * 1024 * 1024

T = TypeVar("T")

__all__ = ["Segment", "Piece", "hash_pieces", "JOB_BYTES", "MEMORY"]


class Segment(NamedTuple):
    """``length`` bytes at ``offset`` of the file at ``path`` (listed as ``file_length`` bytes long)."""

    path: str
    offset: int
    length: int
    file_length: int


class Piece(NamedTuple):
    """One piece: the concatenation of ``segments`` (``length`` bytes); ``tag`` is the caller's own."""

    segments: tuple[Segment, ...]
    length: int
    tag: Any = None


def _open(path: str) -> int:
    """A read-only descriptor of ``path`` (tests replace this to simulate unreadable files)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc.strerror or exc}") from None


def _read_segment(fd: int, seg: Segment, view: memoryview) -> None:
    done = 0
    while done < seg.length:
        try:
            got = os.preadv(fd, [view[done:]], seg.offset + done)
        except OSError as exc:
            raise TorrentcoreError(f"cannot read {seg.path}: {exc.strerror or exc}") from None
        if not got:
            raise TorrentcoreError(
                f"{seg.path} changed while hashing: it is shorter than its {seg.file_length} bytes"
            )
        done += got


def _run_job(job: list[Piece], buf: bytearray, digest: Callable[[Piece, memoryview], Any]) -> list | Exception:
    """In a worker thread: read the pieces of ``job`` into ``buf`` one after the other and hash each.

    An error is returned, not raised: gevent prints a traceback for every error leaving its pool, and the
    caller raises it anyway (the pieces hashed before it in the job are then not delivered: the first
    error, in order, is the one that counts).
    """
    view = memoryview(buf)
    results = []
    path, fd = None, -1  # the last file opened: consecutive segments are mostly of the same file
    try:
        for piece in job:
            pos = 0
            for seg in piece.segments:
                if seg.path != path:
                    if fd >= 0:
                        os.close(fd)
                        fd = -1
                    fd, path = _open(seg.path), seg.path
                _read_segment(fd, seg, view[pos : pos + seg.length])
                pos += seg.length
            results.append(digest(piece, view[:pos]))
    except Exception as exc:  # noqa: BLE001 - handed to the caller, raised there
        return exc
    finally:
        if fd >= 0:
            os.close(fd)
    return results


def _jobs(pieces: Iterable[Piece], job_bytes: int) -> Iterator[list[Piece]]:
    job: list[Piece] = []
    size = 0
    for piece in pieces:
        if job and size + piece.length > job_bytes:
            yield job
            job, size = [], 0
        job.append(piece)
        size += piece.length
    if job:
        yield job


@functools.cache
def _thread_lock() -> Callable[[], Any]:
    """The real (unpatched) lock type: the workers and the hub thread share it."""
    return monkey.get_original("_thread", "allocate_lock")


def hash_pieces(
    pieces: Iterable[Piece],
    piece_length: int,
    digest: Callable[[Piece, memoryview], T],
    done: Callable[[Piece, T], None],
    threads: int | None = None,
) -> None:
    """Read and hash every piece of ``pieces`` (none longer than ``piece_length``) in ``threads`` worker
    threads (None: one per CPU this process may use); call ``done(piece, digest(piece, data))`` for each, in
    order, in the calling greenlet.

    ``digest`` runs in a worker thread on a view of the worker's buffer, which is reused once it returns: it
    must return a value that does not refer to ``data`` (e.g. ``bytes``). An error raised in a worker is
    raised here, for the first piece (in order) that failed; pieces after it are not delivered.
    """
    threads = usable_cpus() if threads is None else threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise BadInputError(f"invalid number of hashing threads {threads!r}: it must be at least 1")
    job_bytes = max(JOB_BYTES, piece_length)
    threads = max(1, min(threads, MEMORY // job_bytes))
    jobs = _jobs(pieces, job_bytes)
    lock = _thread_lock()()
    # Under ``lock``: results by job number, jobs taken, workers still running, and whether to stop.
    ready: dict[int, tuple[list[Piece], list | Exception]] = {}
    state = {"taken": 0, "running": threads, "stop": False}
    wake = gevent.event.Event()
    watcher = gevent.get_hub().loop.async_()
    watcher.start(wake.set)

    def work() -> None:
        """In a worker thread: take the next job, read and hash it in this worker's buffer, post the result."""
        try:
            buf = bytearray(job_bytes)
            while True:
                with lock:
                    if state["stop"]:
                        return
                    seq = state["taken"]
                    try:
                        job = next(jobs, None)
                    except Exception as exc:  # noqa: BLE001 - the caller's pieces failed: raised there
                        ready[seq] = ([], exc)
                        state["stop"] = True
                        return
                    if job is None:
                        return
                    state["taken"] = seq + 1
                result = _run_job(job, buf, digest)
                with lock:
                    ready[seq] = (job, result)
                    if isinstance(result, Exception):
                        state["stop"] = True
                watcher.send()
        except Exception as exc:  # noqa: BLE001 - e.g. no memory for the buffer: raised by the caller
            with lock:
                ready.setdefault(-1, ([], exc))
                state["stop"] = True
        finally:
            with lock:
                state["running"] -= 1
            watcher.send()

    pool = gevent.threadpool.ThreadPool(threads)
    try:
        for _ in range(threads):
            pool.spawn(work)
        delivered = 0
        while True:
            wake.clear()  # before looking: a result posted after the look sets it again
            with lock:
                item = ready.pop(delivered, None)
                finished = item is None and not state["running"]
            if item is not None:
                job, result = item
                if isinstance(result, Exception):
                    raise result
                for piece, value in zip(job, result):
                    done(piece, value)
                delivered += 1
            elif finished:
                if -1 in ready:
                    raise ready[-1][1]
                if ready:  # a worker left without posting a job it took: cannot happen
                    raise TorrentcoreError(f"hashing stopped after {delivered} of {state['taken']} jobs")
                return
            else:
                wake.wait()
    finally:
        with lock:
            state["stop"] = True  # on an error or an interrupt: running jobs end, no new one starts
        watcher.stop()
        watcher.close()
        pool.kill()
