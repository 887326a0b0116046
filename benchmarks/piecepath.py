"""The per-piece path alone, in-process: complete pieces through :class:`~torrentcore.piece_outcome.PieceOutcome`,
the real :class:`~torrentcore.verifier.Verifier` (SHA-1 and the write in the worker threads), the real
``filesystem`` storage (into a temporary folder) and the real :class:`~torrentcore.events.Reporter` (the
installed plugins' hooks, the session's event queue).

    python benchmarks/piecepath.py --size 256M --rounds 3
    python benchmarks/piecepath.py --size 256M --rounds 3 --piece-kib 64     # 4x the pieces: the per-piece cost
    /work/venv-s5base/bin/python benchmarks/piecepath.py --installed ...   # the torrentcore installed there

No network: a feeder greenlet on the event loop stands in for a peer's reader. For each block of a piece it asks
the :class:`~torrentcore.piecemanager.PieceManager` for it, copies it in with one ``preadv`` from the payload
file (a system call that releases the GIL and copies 16 KiB, as ``recv_into`` does) and records it; it yields
to the hub every 4 blocks (a reader whose socket ran dry), and keeps to ``--rate`` MB/s (default 200: the workers
keep up, as in a download whose event loop is the bottleneck). The event loop's thread CPU (``time.thread_time``)
and the process's CPU per GiB are printed per round, with the MB/s and the context switches per piece (of the
event loop's thread and of the process: GIL and wake-up hand-overs between threads): the difference between two
versions is the per-piece path's (the feeder's own cost, ``--feeder-only``, is the same in both).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import hashlib  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import gevent.threadpool  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
if "--installed" not in sys.argv:
    sys.path.insert(0, os.path.join(HERE, os.pardir))

import structlog  # noqa: E402

from torrentcore import bencode, plugins  # noqa: E402
from torrentcore.bitfield import Bitfield  # noqa: E402
from torrentcore.events import EventQueue, Reporter  # noqa: E402
from torrentcore.metainfo import parse  # noqa: E402
from torrentcore.piece_outcome import OutcomeCalls, PieceOutcome  # noqa: E402
from torrentcore.piecemanager import PieceManager  # noqa: E402
from torrentcore.statefile import STATE_DIR_ENV  # noqa: E402
from torrentcore.verifier import Verifier  # noqa: E402
from torrentcore_plugins.filesystem import FilesystemStorage  # noqa: E402
from torrentcore_plugins.rarest_first import RarestFirst  # noqa: E402

PIECE = 256 * 1024
BLOCK = 16 * 1024


class _Peers:
    """No other peer (a download from one seeder: no HAVE is sent)."""

    peers: dict = {}
    connect_now = gevent.event.Event()

    def wake_requesters(self) -> None:
        pass

    def broadcast_have(self, index: int) -> None:
        pass

    def ban(self, address, reason: str) -> None:
        pass


class _NoWebSeeds:
    def owns(self, who) -> bool:
        return False

    def drop(self, seed, reason: str) -> None:
        pass


def _guard(fn, *args) -> None:
    fn(*args)


def _switches(who: int) -> int:
    """Context switches so far (voluntary and not) of the calling thread or of the process: each hand-over of
    the GIL between two threads that both want it is one or two."""
    usage = resource.getrusage(who)
    return usage.ru_nvcsw + usage.ru_nivcsw


def one_round(meta, payload: str, workdir: str, pool, feeder_only: bool = False,
              rate: float = 0.0) -> tuple[float, ...]:
    """(wall s, event-loop thread CPU s, process CPU s, context switches per piece of the event loop's
    thread and of the process) to pass every piece of ``payload`` through the path."""
    have = Bitfield(meta.num_pieces)
    manager = PieceManager(meta, have, RarestFirst(meta.num_pieces, random.Random(1)))
    storage = FilesystemStorage(meta, workdir)
    verifier = Verifier(meta, storage, have, pool, lambda: False, lambda i: None)
    queue = EventQueue()
    hooks = plugins.ContainedHooks(plugins.get_plugin_manager())
    reporter = Reporter(hooks, meta, meta.info_hash, queue.put)
    done = gevent.event.Event()
    calls = OutcomeCalls(manager=lambda: manager, stopping=lambda: False, completed=done.set,
                         incomplete_again=lambda: None, guard=_guard)
    outcome = PieceOutcome(calls, verifier, _Peers(), _NoWebSeeds(), reporter, lambda n: None,
                           structlog.get_logger("piecepath"))
    seeder = Bitfield(meta.num_pieces)
    for i in range(meta.num_pieces):
        seeder.set(i)
    manager.add_peer_pieces(seeder)
    fd = os.open(payload, os.O_RDONLY)

    def feed() -> None:
        n = 0
        start = time.perf_counter()
        while not manager.complete:
            if rate:  # paced: the workers keep up, as in a download whose event loop is the bottleneck
                ahead = n * BLOCK / rate - (time.perf_counter() - start)
                if ahead > 0.001:
                    gevent.sleep(ahead)
            blocks = manager.next_requests("peer", seeder, 16)
            if not blocks:
                gevent.sleep(0.001)
                continue
            for index, begin, length in blocks:
                view = manager.block_buffer(index, begin, length)
                os.preadv(fd, [view], index * meta.piece_length + begin)
                _, piece = manager.block_received("peer", index, begin)
                if piece is not None:
                    if feeder_only:  # the feeder's own cost: no hash, no write, no verdict
                        manager.piece_verified(piece.index)
                        manager.recycle(piece)
                        if manager.complete:
                            done.set()
                    else:
                        outcome.verify_piece(piece)
                n += 1
                if n % 4 == 0:
                    gevent.sleep(0)

    try:
        t0, c0, p0 = time.perf_counter(), time.thread_time(), time.process_time()
        s0, q0 = _switches(resource.RUSAGE_THREAD), _switches(resource.RUSAGE_SELF)
        feeder = gevent.spawn(feed)
        if not done.wait(300):
            raise SystemExit("not done in 300 s")
        wall, cpu, pcpu = time.perf_counter() - t0, time.thread_time() - c0, time.process_time() - p0
        switches = (_switches(resource.RUSAGE_THREAD) - s0) / meta.num_pieces
        pswitches = (_switches(resource.RUSAGE_SELF) - q0) / meta.num_pieces
        feeder.join(5)
        if not verifier.wait_idle(10):
            raise SystemExit("verifier not idle")
        verifier.close()
        events = meta.num_pieces if feeder_only else sum(1 for e in queue.drain(0) if e.kind == "piece_verified")
        if events != meta.num_pieces:
            raise SystemExit(f"{events} piece_verified events for {meta.num_pieces} pieces")
        return wall, cpu, pcpu, switches, pswitches
    finally:
        os.close(fd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="256M", help="bytes per round (k, M, G suffixes)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--installed", action="store_true", help="use the installed torrentcore, not this checkout's")
    ap.add_argument("--feeder-only", action="store_true",
                    help="the feeder alone: pieces are marked done as they complete (its share of the CPU)")
    ap.add_argument("--piece-kib", type=int, default=PIECE // 1024, help="piece length in KiB (default 256)")
    ap.add_argument("--rate", type=float, default=200.0,
                    help="MB/s the feeder keeps to (0: as fast as it can; default 200, a download's rate here)")
    args = ap.parse_args()
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(args.size[-1].lower(), 1)
    piece = args.piece_kib * 1024
    size = int(float(args.size.rstrip("kKmMgG")) * scale) // piece * piece
    tmp = tempfile.mkdtemp(prefix="piecepath-")
    os.environ[STATE_DIR_ENV] = os.path.join(tmp, "state")  # the storage's resume records go there, not to ~
    try:
        block = random.Random(7).randbytes(4 << 20)
        data = block * (size // len(block) + 1)
        payload = os.path.join(tmp, "payload.bin")
        with open(payload, "wb") as f:
            f.write(data[:size])
        pieces = b"".join(hashlib.sha1(data[i:i + piece]).digest() for i in range(0, size, piece))
        del data
        info = {b"name": b"piecepath.bin", b"piece length": piece, b"length": size, b"pieces": pieces}
        meta = parse(bencode.encode({b"info": info}))
        pool = gevent.threadpool.ThreadPool(2)
        gib = size / (1 << 30)
        results = []
        for r in range(args.rounds):
            out = os.path.join(tmp, f"round{r}")
            wall, cpu, pcpu, sw, psw = one_round(meta, payload, out, pool, args.feeder_only, args.rate * 1e6)
            shutil.rmtree(out)
            results.append((wall, cpu, pcpu, sw, psw))
            print(f"round {r}: {size / 1e6 / wall:6.0f} MB/s  event loop {cpu / gib:5.2f} CPU s/GiB  "
                  f"process {pcpu / gib:5.2f} CPU s/GiB  context switches per piece: event loop {sw:.1f}, "
                  f"process {psw:.1f}", flush=True)
        mid = sorted(results, key=lambda x: x[1])[len(results) // 2]
        print(f"median (by event-loop CPU): {size / 1e6 / mid[0]:.0f} MB/s, event loop {mid[1] / gib:.2f} CPU s/GiB, "
              f"process {mid[2] / gib:.2f} CPU s/GiB, context switches per piece {mid[3]:.1f} (event loop), "
              f"{mid[4]:.1f} (process); load average {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
