"""The hand-over of downloaded pieces to the hashing threads (torrentcore.verifier.Verifier.submit/_drain).

Real worker threads (a gevent ThreadPool) and real SHA-1. A worker whose queue ran empty waits
(VERIFY_LINGER) for the next piece instead of ending, so pieces that come one by one do not each cost a
thread-pool task; close() ends a waiting worker at once. Every piece still gets exactly one verdict, after
its hash and its write. Counts only: the linger is set far longer than any wait here, so nothing depends on
the machine's speed.
"""

from __future__ import annotations

import hashlib
import socket

import gevent
import gevent.event
import gevent.threadpool

from torrentcore import bencode, metainfo, verifier
from torrentcore.bitfield import Bitfield
from torrentcore.errors import StorageError
from torrentcore.peer import messages as msg
from torrentcore.peer.connection import Connection
from torrentcore.piece_outcome import OutcomeCalls, PieceOutcome
from torrentcore.piecemanager import Piece

PIECE = 64 * 1024
N = 12


class _Storage:
    thread_safe_writes = True

    def __init__(self) -> None:
        self.written: list[int] = []
        self.complete: list[int] = []

    def write(self, index: int, begin: int, data) -> None:
        self.written.append(index)

    def mark_complete(self, index: int) -> None:
        assert self.written[-1] == index  # marked only after its write
        self.complete.append(index)

    def close(self) -> None:
        pass


class _CountingPool(gevent.threadpool.ThreadPool):
    spawned = 0

    def spawn(self, func, *args, **kwargs):
        self.spawned += 1
        return super().spawn(func, *args, **kwargs)


def _data(i: int) -> bytes:
    return bytes([i]) * PIECE


def test_pieces_one_by_one_share_one_worker_task_and_close_ends_it(monkeypatch):
    monkeypatch.setattr(verifier, "VERIFY_LINGER", 60.0)  # far longer than this test: the worker always waits
    pool = _CountingPool(2)
    v, storage = _verifier(N, pool)
    verdicts, arrived, on_verdict = _recorder()

    try:
        for i in range(N):  # one at a time: each waits for the previous verdict (the queue is empty between)
            piece = Piece(i, PIECE, bytearray(_data(i) if i != 5 else _data(99)))  # piece 5 is corrupt
            arrived.clear()
            v.acquire_slot()
            v.submit(piece, on_verdict)
            assert arrived.wait(10), f"no verdict for piece {i}"
        assert verdicts == {i: i != 5 for i in range(N)}
        assert storage.complete == [i for i in range(N) if i != 5]
        assert pool.spawned == 1, f"{pool.spawned} worker tasks for {N} pieces handed over one by one"
        assert v._lingering == 1 and v._draining == 1
        v.close()
        with gevent.Timeout(10, AssertionError("close() did not end the waiting worker")):
            while v._draining:
                gevent.sleep(0.01)
        assert v.wait_idle(1)
    finally:
        pool.kill()


def _recorder():
    """``(verdicts, arrived, on_verdict)``: ``on_verdict`` records each piece's verdict and sets ``arrived``."""
    verdicts: dict[int, object] = {}
    arrived = gevent.event.Event()

    def on_verdict(piece, verdict) -> None:
        verdicts[piece.index] = verdict
        arrived.set()

    return verdicts, arrived, on_verdict


def _verifier(n: int, pool, storage=None):
    pieces = b"".join(hashlib.sha1(_data(i)).digest() for i in range(n))
    meta = metainfo.parse(bencode.encode({b"info": {b"name": b"t", b"piece length": PIECE, b"pieces": pieces,
                                                     b"length": PIECE * n}}))
    storage = storage or _Storage()
    return verifier.Verifier(meta, storage, Bitfield(n), pool, lambda: False, lambda i: None), storage


class _CountingAsync:
    """The Verifier's async watcher (a worker's post of verdicts to the event loop), its sends counted."""

    def __init__(self, v) -> None:
        self._real = gevent.get_hub().loop.async_(ref=False)
        self._real.start(v._verdicts_ready)
        self.posts = 0

    def send(self) -> None:
        self.posts += 1  # (from a worker thread, holding the GIL)
        self._real.send()

    def close(self) -> None:
        self._real.close()


def test_verdicts_of_a_burst_are_posted_in_few_batches(monkeypatch):
    """A worker posts its verdicts in batches (VERDICT_BATCH_BYTES), so the event loop is woken a few times for
    32 pieces, not once per piece; each piece still gets one verdict, after its write."""
    # A worker that finds its queue empty posts what it holds after VERDICT_WAIT: longer than any pause between
    # two submits here, so that only full batches and each worker's last one are posted (counts, not timing).
    monkeypatch.setattr(verifier, "VERDICT_WAIT", 0.5)
    n = 32  # 2 MiB of 64 KiB pieces: batches of 16 (a quarter of the 64 slots), at most two workers
    pool = gevent.threadpool.ThreadPool(2)
    v, storage = _verifier(n, pool)
    v._async = notify = _CountingAsync(v)
    verdicts: dict[int, object] = {}
    done = gevent.event.Event()

    def on_verdict(piece, verdict) -> None:
        assert piece.index in storage.complete or verdict is not True  # written and marked before its verdict
        verdicts[piece.index] = verdict
        if len(verdicts) == n:
            done.set()

    try:
        for i in range(n):
            v.acquire_slot()
            v.submit(Piece(i, PIECE, bytearray(_data(i) if i != 7 else _data(99))), on_verdict)
        assert done.wait(20), f"{len(verdicts)} of {n} verdicts"
        assert verdicts == {i: i != 7 for i in range(n)}
        # Each worker posts when it holds 16 verdicts and when its queue stays empty: at most 4 posts in all.
        assert notify.posts <= 4, f"{notify.posts} posts for {n} pieces"
        assert v.wait_idle(5)
    finally:
        v.close()
        pool.kill()


def test_close_posts_the_verdicts_a_waiting_worker_holds(monkeypatch):
    """A worker holding verdicts while it waits for more pieces posts them when close() ends it: no piece that was
    stored stays without its verdict (the torrent counts it, and wait_idle() at shutdown returns)."""
    monkeypatch.setattr(verifier, "VERDICT_WAIT", 60.0)  # the worker holds the verdict until it is ended
    monkeypatch.setattr(verifier, "VERIFY_LINGER", 60.0)
    monkeypatch.setattr(verifier, "VERIFY_BATCH_WAIT", 0.0)  # handed over at once
    pool = gevent.threadpool.ThreadPool(2)
    v, storage = _verifier(4, pool)
    verdicts, arrived, on_verdict = _recorder()

    try:
        v.acquire_slot()
        v.submit(Piece(2, PIECE, bytearray(_data(2))), on_verdict)
        for _ in range(1000):  # bounded: 10 s
            if storage.complete and v._lingering:
                break
            gevent.sleep(0.01)
        assert storage.complete == [2] and v._lingering == 1
        assert not arrived.wait(0.05) and not verdicts  # held: one verdict is less than a batch
        v.close()
        assert arrived.wait(10), "close() did not post the held verdict"
        assert verdicts == {2: True}
        assert v.wait_idle(5)
    finally:
        pool.kill()


class _CountingSocket:
    """A socket whose sendall calls are counted (one per write of the peer's writer greenlet)."""

    def __init__(self, sock) -> None:
        self._sock = sock
        self.writes = 0

    def sendall(self, data) -> None:
        self.writes += 1
        self._sock.sendall(data)

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


class _OnePeer:
    """PieceOutcome's view of the swarm: one leecher on a real Connection (PieceOutcome.Peers)."""

    def __init__(self, conn) -> None:
        self.peers: dict = {}
        self.connect_now = gevent.event.Event()
        self.conn = conn

    def wake_requesters(self) -> None:
        pass

    def broadcast_have(self, index: int) -> None:
        self.conn.send(msg.have(index))

    def ban(self, address, reason: str) -> None:
        raise AssertionError(f"nobody lied: {address} {reason}")


class _Manager:
    complete = False

    def piece_verified(self, index: int) -> None:
        pass

    def recycle(self, piece) -> None:
        pass


class _Quiet:
    def emit(self, kind: str, **kwargs) -> None:
        pass

    def warning(self, *args, **kwargs) -> None:
        pass


def test_haves_of_a_batch_of_verdicts_leave_in_one_write(monkeypatch):
    """The HAVEs of the pieces delivered together are queued before the peer's writer runs: a burst of 32 pieces
    reaches a leecher as 32 HAVEs in at most 4 writes (at most one per post of verdicts), not one per piece."""
    monkeypatch.setattr(verifier, "VERDICT_WAIT", 0.5)  # as in the burst test: only full and last batches posted
    n = 32
    pool = gevent.threadpool.ThreadPool(2)
    v, _ = _verifier(n, pool)
    ours, theirs = socket.socketpair()
    counting = _CountingSocket(ours)
    conn = Connection(counting, ("127.0.0.1", 6881))
    conn.start_writer()
    calls = OutcomeCalls(manager=_Manager, stopping=lambda: False, completed=lambda: None,
                         incomplete_again=lambda: None, guard=lambda fn, *args: fn(*args))
    v._async = notify = _CountingAsync(v)
    outcome = PieceOutcome(calls, v, _OnePeer(conn), None, _Quiet(), lambda size: None, _Quiet())
    try:
        for i in range(n):
            outcome.verify_piece(Piece(i, PIECE, bytearray(_data(i))))
        got = b""
        with gevent.Timeout(20, AssertionError(f"{len(got) // 9} of {n} HAVEs arrived")):
            while len(got) < 9 * n:
                got += theirs.recv(4096)
        haves = [int.from_bytes(got[k + 5 : k + 9], "big") for k in range(0, len(got), 9)]
        assert all(got[k : k + 5] == b"\0\0\0\x05\x04" for k in range(0, len(got), 9)), got[:18]
        assert sorted(haves) == list(range(n))
        # One write per delivery at most (a delivery may carry several posts' verdicts), and few posts.
        assert counting.writes <= notify.posts <= 4, f"{counting.writes} writes, {notify.posts} posts for {n} HAVEs"
        assert v.wait_idle(5)
    finally:
        conn.close("done")
        theirs.close()
        v.close()
        pool.kill()


def test_a_storage_error_is_posted_at_once(monkeypatch):
    """A verdict that is an error (or a stop's None) is not held for a batch: the torrent hears of a failing disk
    at once, not after the worker wrote more pieces."""
    monkeypatch.setattr(verifier, "VERDICT_WAIT", 60.0)  # a held verdict would wait until close()
    monkeypatch.setattr(verifier, "VERIFY_BATCH_WAIT", 0.0)

    class _Full(_Storage):
        def write(self, index: int, begin: int, data) -> None:
            raise StorageError("cannot write t: disk full")

    pool = gevent.threadpool.ThreadPool(2)
    v, _ = _verifier(4, pool, _Full())
    verdicts, arrived, on_verdict = _recorder()

    try:
        v.acquire_slot()
        v.submit(Piece(1, PIECE, bytearray(_data(1))), on_verdict)
        assert arrived.wait(10), "the error was held"
        assert isinstance(verdicts[1], StorageError)
        assert v.wait_idle(5)
    finally:
        v.close()
        pool.kill()


class _CountingWake:
    """The Verifier's wake lock (a waiting worker's), its releases counted."""

    def __init__(self, real) -> None:
        self._real = real
        self.releases = 0

    def acquire(self, *args, **kwargs):
        return self._real.acquire(*args, **kwargs)

    def release(self) -> None:
        self.releases += 1
        self._real.release()


def test_a_waiting_worker_is_woken_by_a_batch_or_the_kick_not_by_each_piece(monkeypatch):
    """While the worker waits for more (VERIFY_LINGER), a piece smaller than VERIFY_BATCH_BYTES arms the kick
    instead of waking it (the kick then does, once); a batch's worth queued wakes it at once."""
    monkeypatch.setattr(verifier, "VERIFY_LINGER", 60.0)  # the worker always waits
    monkeypatch.setattr(verifier, "VERDICT_WAIT", 0.0)  # and posts each verdict as it waits
    per_batch = verifier.VERIFY_BATCH_BYTES // PIECE
    n = 1 + 1 + per_batch
    pool = _CountingPool(2)
    v, storage = _verifier(n, pool)
    verdicts, arrived, on_verdict = _recorder()
    try:
        arrived.clear()
        v.acquire_slot()
        v.submit(Piece(0, PIECE, bytearray(_data(0))), on_verdict)  # starts the one worker (by the kick)
        assert arrived.wait(10) and v._lingering == 1
        v._wake = wake = _CountingWake(v._wake)
        arrived.clear()
        v.acquire_slot()
        v.submit(Piece(1, PIECE, bytearray(_data(1))), on_verdict)
        assert wake.releases == 0 and v._kick is not None, "one small piece does not wake the worker by itself"
        assert arrived.wait(10), "the kick woke it"
        assert wake.releases == 1
        with gevent.Timeout(10, AssertionError("the worker did not wait for more again")):
            while v._lingering != 1:
                gevent.sleep(0.01)
        for i in range(2, n):  # a batch's worth in one go: woken once, as the last of them is queued
            v.acquire_slot()
            v.submit(Piece(i, PIECE, bytearray(_data(i))), on_verdict)
        assert wake.releases == 2
        with gevent.Timeout(10, AssertionError(f"{len(verdicts)} of {n} verdicts")):
            while len(verdicts) < n:
                gevent.sleep(0.01)
        assert verdicts == {i: True for i in range(n)} and storage.complete == list(range(n))
        assert pool.spawned == 1, "one worker task for all of them"
    finally:
        v.close()
        pool.kill()


def test_v1_pieces_are_written_by_one_worker_v2_pieces_hashed_by_two():
    """A v1 torrent's pieces were hashed on the event loop as they arrived: one worker task writes them, however
    many batches queue (a second only waited for the disk lock). v2 and hybrid pieces are hashed whole in the
    workers: two tasks share them."""
    pool = _CountingPool(4)
    n = 64  # 4 MiB of 64 KiB pieces: four batches queued before any worker could start
    v, storage = _verifier(n, pool)
    most = []
    verdicts, arrived, on_verdict = _recorder()

    def counting(piece, verdict) -> None:
        most.append(v._draining)
        on_verdict(piece, verdict)

    try:
        for i in range(n):
            v.acquire_slot()
            v.submit(Piece(i, PIECE, bytearray(_data(i))), counting)
            most.append(v._draining)
        with gevent.Timeout(20, AssertionError(f"{len(verdicts)} of {n} verdicts")):
            while len(verdicts) < n:
                gevent.sleep(0.01)
        assert verdicts == {i: True for i in range(n)}
        assert max(most) == 1 and pool.spawned == 1
    finally:
        v.close()
        pool.kill()
    tree = {b"f": {b"": {b"length": PIECE, b"pieces root": hashlib.sha256(b"root").digest()}}}
    meta = metainfo.parse(bencode.encode({b"info": {b"name": b"t", b"piece length": PIECE, b"meta version": 2,
                                                     b"file tree": tree}, b"piece layers": {}}))
    assert verifier.Verifier(meta, _Storage(), Bitfield(1), pool, lambda: False, lambda i: None)._workers == 2
