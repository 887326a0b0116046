"""The filesystem storage's write path alone: a torrent's pieces written in random order, then closed.

    python benchmarks/storage_write.py                          # 512 MiB, 200 files (swarm.py's tree), 3 rounds
    python benchmarks/storage_write.py --files 1 --rounds 5     # one file, for comparison
    python benchmarks/storage_write.py --extent 16              # 4 MiB extents in random order, as rarest-first
    python benchmarks/storage_write.py --extent 16 --rate 200   # paced as a 200 MB/s download (fsyncs keep up)
    python benchmarks/storage_write.py --baseline-python /work/venv-s4base/bin/python   # before/after

No network: each round builds the storage (``FilesystemStorage`` of the installed torrentcore), writes every
piece once in a random order (as rarest-first with equal availability asked for them; ``--extent N``: runs of
N pieces in order, the runs in random order, as it asks for them now: plugins/rarest_first.py) with
``write`` + ``mark_complete``, as the verifier's worker does, and then closes it (fsync of the files written,
the resume record). It reports, per GiB, the CPU seconds of the writing thread (``time.thread_time``) and the
system calls that matter here, counted by wrapping ``os`` functions in this process (opens of files and
folders, ``mkdir``, ``fstat``/``stat``, ``pwrite``, ``close``, ``fsync``), and the wall time of ``close``.
``--baseline-python`` runs the same rounds with another environment's torrentcore, alternating, and prints
both. The layout is swarm.py's 200-file tree (``benchmarks/common.py``'s ``tree_spec``: uneven sizes, nested folders).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # the child runs with -I, which leaves the script's folder out of sys.path
from common import tree_spec  # noqa: E402

COUNTED = ("open", "mkdir", "stat", "fstat", "pwrite", "close", "fsync")


def _storage_modules() -> list:
    """The modules of the installed torrentcore whose descriptors this benchmark counts."""
    import importlib

    names = ("torrentcore.statefile", "torrentcore_plugins.filesystem", "torrentcore_plugins._folders",
             "torrentcore_plugins._sync_ahead")
    found = []
    for name in names:
        try:
            found.append(importlib.import_module(name))
        except ImportError:  # an older torrentcore
            pass
    return found


def _counting_close(counts: dict, close):
    def wrapper(fd):
        counts["close"] += 1
        return close(fd)
    return wrapper


def one_round(size: int, files: int, piece_length: int, seed: int, extent: int = 1, rate: float = 0) -> dict:
    """In this process: write a torrent of ``size`` bytes in ``files`` files; return CPU, counts and times."""
    from torrentcore import bencode, metainfo
    from torrentcore_plugins import filesystem as fsmod

    spec = tree_spec(size, files) if files > 1 else {"payload.bin": size}
    num_pieces = (size + piece_length - 1) // piece_length
    info = {b"name": b"payload", b"piece length": piece_length, b"pieces": bytes(20 * num_pieces),
            b"files": [{b"length": n, b"path": [p.encode() for p in path.split("/")]} for path, n in spec.items()]}
    meta = metainfo.parse(bencode.encode({b"info": info}))
    counts = dict.fromkeys(COUNTED, 0)
    real = {name: getattr(os, name) for name in COUNTED}
    # Storages that close with the standard library's os.close whatever gevent patched (statefile.close_fd)
    # bound it by name: their closes are counted there (an older torrentcore has no close_fd).
    closers = [m for m in _storage_modules() if hasattr(m, "close_fd")]
    real_close_fd = {m: m.close_fd for m in closers}

    def counting(name):
        fn = real[name]

        def wrapper(*a, **k):
            counts[name] += 1
            return fn(*a, **k)
        return wrapper

    work = tempfile.mkdtemp(prefix="storage-write-", dir="/tmp")
    os.environ["TORRENTCORE_STATE_DIR"] = os.path.join(work, "state")
    data = hashlib.sha256(b"x").digest() * (piece_length // 32)
    starts = list(range(0, num_pieces, extent))
    random.Random(seed).shuffle(starts)
    order = [i for s in starts for i in range(s, min(s + extent, num_pieces))]
    try:
        for name in COUNTED:
            setattr(os, name, counting(name))
        for m in closers:
            m.close_fd = _counting_close(counts, real_close_fd[m])
        try:
            storage = fsmod.FilesystemStorage(meta, os.path.join(work, "out"))
            cpu0, t0, proc0 = time.thread_time(), time.perf_counter(), time.process_time()
            done = 0
            for index in order:
                storage.write(index, 0, memoryview(data)[: meta.piece_size(index)])
                storage.mark_complete(index)
                done += meta.piece_size(index)
                if rate:  # paced: no faster than a download of ``rate`` MB/s
                    ahead = t0 + done / (rate * 1e6) - time.perf_counter()
                    if ahead > 0:
                        time.sleep(ahead)
            cpu_write, t_write = time.thread_time() - cpu0, time.perf_counter() - t0
            writes = dict(counts)
            t1 = time.perf_counter()
            storage.close()
            t_close = time.perf_counter() - t1
            proc_cpu = time.process_time() - proc0
        finally:
            for name, fn in real.items():
                setattr(os, name, fn)
            for m, fn in real_close_fd.items():
                m.close_fd = fn
    finally:
        shutil.rmtree(work, ignore_errors=True)
    gib = size / (1 << 30)
    return {"write_cpu_per_gib": cpu_write / gib, "process_cpu_per_gib": proc_cpu / gib,
            "write_wall": t_write, "close_wall": t_close,
            "calls_per_piece": {k: round(v / num_pieces, 2) for k, v in writes.items()},
            "close_calls": {k: counts[k] - writes[k] for k in COUNTED}, "fsyncs": counts["fsync"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="512M", help="payload size (k, M, G suffixes)")
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--piece-length", type=int, default=256 << 10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--extent", type=int, default=1, help="pieces per run in order (default 1: random order)")
    ap.add_argument("--rate", type=float, default=0, help="pace the writes at this many MB/s (default: no pacing)")
    ap.add_argument("--baseline-python", help="another environment's python, run in alternating rounds")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a single round, JSON on stdout
    args = ap.parse_args()
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(args.size[-1].lower(), 1)
    size = int(float(args.size.rstrip("kKmMgG")) * scale)
    if args.one:
        print(json.dumps(one_round(size, args.files, args.piece_length, seed=args.rounds, extent=args.extent,
                                   rate=args.rate)))
        return 0
    pythons = {"torrentcore": sys.executable}
    if args.baseline_python:
        pythons["baseline"] = args.baseline_python
    results: dict[str, list[dict]] = {name: [] for name in pythons}
    for r in range(args.rounds):
        names = list(pythons) if r % 2 == 0 else list(reversed(pythons))
        for name in names:
            cmd = [pythons[name], "-I", os.path.abspath(__file__), "--one", "--size", args.size, "--files",
                   str(args.files), "--piece-length", str(args.piece_length), "--rounds", str(r),
                   "--extent", str(args.extent), "--rate", str(args.rate)]
            out = subprocess.run(cmd, capture_output=True, text=True, cwd="/tmp", timeout=600, check=True).stdout
            res = json.loads(out)
            results[name].append(res)
            print(f"round {r} {name:12s} write CPU/GiB {res['write_cpu_per_gib']:.3f} s, "
                  f"process CPU/GiB {res['process_cpu_per_gib']:.3f} s, "
                  f"write {res['write_wall']:.2f} s, close {res['close_wall']:.3f} s, fsyncs {res['fsyncs']}, "
                  f"per piece {res['calls_per_piece']}, close {res['close_calls']}")
    for name, rs in results.items():
        print(f"{name}: median write CPU/GiB {statistics.median(r['write_cpu_per_gib'] for r in rs):.3f} s, "
              f"process CPU/GiB {statistics.median(r['process_cpu_per_gib'] for r in rs):.3f} s, "
              f"close {statistics.median(r['close_wall'] for r in rs):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
