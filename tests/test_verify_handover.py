"""The hand-over of downloaded pieces to the hashing threads (torrentcore.verifier.Verifier.submit/_drain).

Real worker threads (a gevent ThreadPool) and real SHA-1. A worker whose queue ran empty waits
(VERIFY_LINGER) for the next piece instead of ending, so pieces that come one by one do not each cost a
thread-pool task; close() ends a waiting worker at once. Every piece still gets exactly one verdict, after
its hash and its write. Counts only: the linger is set far longer than any wait here, so nothing depends on
the machine's speed.
"""

from __future__ import annotations

import hashlib

import gevent
import gevent.event
import gevent.threadpool

from torrentcore import bencode, metainfo, verifier
from torrentcore.bitfield import Bitfield
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
    pieces = b"".join(hashlib.sha1(_data(i)).digest() for i in range(N))
    meta = metainfo.parse(bencode.encode({b"info": {b"name": b"t", b"piece length": PIECE, b"pieces": pieces,
                                                     b"length": PIECE * N}}))
    storage = _Storage()
    pool = _CountingPool(2)
    v = verifier.Verifier(meta, storage, Bitfield(N), pool, lambda: False, lambda i: None)
    verdicts: dict[int, object] = {}
    arrived = gevent.event.Event()

    def on_verdict(piece, verdict) -> None:
        verdicts[piece.index] = verdict
        arrived.set()

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
