"""Hashing cost of ``torrentcore create`` for v1, v2 and hybrid torrents, against libtorrent's.

    python benchmarks/create_v2.py                  # a 256 MiB file, 256 KiB pieces, 3 rounds
    python benchmarks/create_v2.py --size 1G --piece-length 1M --rounds 2

Each round runs, in rotating order and each in its own process, ``torrentcore create --v1|--v2|--hybrid``
and libtorrent's ``create_torrent`` + ``set_piece_hashes`` (v1-only, v2-only and hybrid flags) on the
same file (in the page cache: it was just written), and records wall time and CPU time (children's
user + system, ``os.wait4``). ``cores`` = CPU / wall: 2.0 means both cores of this machine were busy.
``runnable`` = (CPU + time spent waiting for a CPU) / wall, from the threads' ``/proc/PID/task/*/schedstat``
polled every 10 ms: how many threads the tool kept busy or ready to run, which other processes' load
hardly changes (``cores`` drops when others take the CPUs; ``runnable`` does not); ``best``: the MB/s of
the fastest round (the one that found the CPUs freest). Each round also
times every tool on a 1-byte file (``start-up``: interpreter, imports, writing the torrent), and ``MB/s
hashing`` divides the size by the median wall time minus that median start-up. The load average is
printed before and after. The SHA-1 and SHA-256 limits of one core on the same bytes are printed too,
and the info-hashes of both tools are checked equal.

Read the speeds only from a quiet machine: with the kernel's autogroup scheduling
(``/proc/sys/kernel/sched_autogroup_enabled``), every session gets an equal share of the CPUs, so while
other sessions keep the CPUs busy a process of two busy threads gets no more CPU than one of one thread
(measured here at load 5-9: ``cores`` 0.3-0.6 for both). ``runnable`` still shows what a tool would use.
``--baseline DIR`` runs an older torrentcore (e.g. ``git archive COMMIT torrentcore | tar -x -C DIR``) in
the same rounds.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir, "tests"))

from swarm import parse_size  # noqa: E402

LT_SCRIPT = r"""
import os, sys, libtorrent as lt
path, pl, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
flags = {"v1": lt.create_torrent.v1_only, "v2": lt.create_torrent.v2_only, "hybrid": 0}[kind]
ct = lt.create_torrent(lt.list_files(path), pl, flags=flags)
lt.set_piece_hashes(ct, os.path.dirname(path))
ih = lt.torrent_info(lt.bencode(ct.generate())).info_hashes()
print(ih.v1.to_bytes().hex() if kind == "v1" else ih.v2.to_bytes().hex())
"""


def _schedstat(pid: int, seen: dict[str, tuple[int, int]]) -> None:
    """Record the CPU and run-queue nanoseconds of each thread of ``pid`` (the latest reading per thread)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                on_cpu, waiting = (int(x) for x in fh.read().split()[:2])
        except (OSError, ValueError):
            continue
        seen[tid] = (on_cpu, waiting)


def run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float, str]:
    """Wall and CPU seconds of one child process, its threads' CPU + run-queue seconds, its standard output."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=None if env is None else {**os.environ, **env})
    seen: dict[str, tuple[int, int]] = {}
    while True:  # bounded by the child: it exits (or the benchmark is interrupted)
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        _schedstat(proc.pid, seen)
        time.sleep(0.01)
    wall = time.monotonic() - start
    out = proc.stdout.read()
    proc.stdout.close()
    if status:
        raise SystemExit(f"{' '.join(cmd[:5])} failed ({status})")
    runnable = sum(a + b for a, b in seen.values()) / 1e9
    return wall, usage.ru_utime + usage.ru_stime, runnable, out


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=parse_size, default=256 << 20)
    ap.add_argument("--piece-length", type=parse_size, default=256 << 10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tc-arg", action="append", default=[], metavar="ARG",
                    help="pass ARG to torrentcore create (repeatable), e.g. --tc-arg=--threads=1")
    ap.add_argument("--baseline", metavar="DIR",
                    help="also run the torrentcore of the source folder DIR (PYTHONPATH=DIR), e.g. an older "
                         "commit's `git archive`: rows before-v1, before-v2, before-hybrid, and after/before ratios")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="create-v2-", dir="/tmp")
    try:
        path = os.path.join(work, "payload.bin")
        with open(path, "wb") as fh:
            for _ in range(args.size >> 20):
                fh.write(os.urandom(1 << 20))
        with open(path, "rb") as fh:
            block = fh.read(64 << 20)
        limits = {}
        for name in ("sha1", "sha256"):
            start = time.monotonic()
            for i in range(0, len(block), 16384):
                hashlib.new(name, block[i : i + 16384]).digest()
            limits[name] = len(block) / (time.monotonic() - start) / 1e6
        tiny = os.path.join(work, "tiny.bin")
        with open(tiny, "wb") as fh:
            fh.write(b"x")
        results: dict[str, list[tuple[float, float, float]]] = {}
        startup: dict[str, list[float]] = {}
        hashes: dict[str, set[str]] = {}
        jobs = []
        for kind in ("v1", "v2", "hybrid"):
            out = os.path.join(work, f"{kind}.torrent")
            create = [sys.executable, "-m", "torrentcore", "create", "{path}", "-o", out, "--force", "--no-date",
                      "--piece-length", str(args.piece_length), f"--{kind}"]
            jobs.append((f"torrentcore-{kind}", kind, [*create, *args.tc_arg], None))
            jobs.append((f"libtorrent-{kind}", kind, [sys.executable, "-c", LT_SCRIPT, "{path}", str(args.piece_length),
                                                      kind], None))
            if args.baseline:
                jobs.append((f"before-{kind}", kind, create, {"PYTHONPATH": os.path.abspath(args.baseline)}))
        load_before = _load()
        for r in range(args.rounds):
            for name, kind, cmd, env in jobs[r % len(jobs):] + jobs[: r % len(jobs)]:
                startup.setdefault(name, []).append(run([tiny if c == "{path}" else c for c in cmd], env)[0])
                wall, cpu, runnable, out = run([path if c == "{path}" else c for c in cmd], env)
                results.setdefault(name, []).append((wall, cpu, runnable))
                if name.startswith("libtorrent"):
                    hashes.setdefault(kind, set()).add(out.strip())
                else:
                    from torrentcore import metainfo
                    meta = metainfo.load(os.path.join(work, f"{kind}.torrent"))
                    hashes.setdefault(kind, set()).add(meta.info_hash_hex if kind == "v1" else meta.info_hash_v2_hex)
        mb = args.size / 1e6
        print(f"{args.size >> 20} MiB, {args.piece_length >> 10} KiB pieces, {args.rounds} rounds, "
              f"{os.cpu_count()} cores; one core: SHA-1 {limits['sha1']:.0f} MB/s, "
              f"SHA-256 {limits['sha256']:.0f} MB/s; load average before {load_before}, after {_load()}")
        print(f"{'':20} {'MB/s':>8} {'best':>6} {'CPU s':>6} {'cores':>6} {'runnable':>9} {'start-up s':>11} "
              f"{'MB/s hashing':>13}")
        speed = {}
        hashing = {}
        for name, samples in results.items():
            wall = statistics.median(s[0] for s in samples)
            cores = statistics.median(s[1] / s[0] for s in samples)
            runnable = statistics.median(s[2] / s[0] for s in samples)
            boot = statistics.median(startup[name])
            speed[name] = mb / wall
            hashing[name] = mb / max(wall - boot, 1e-3)
            cpu = statistics.median(s[1] for s in samples)
            best = mb / min(s[0] for s in samples)
            print(f"{name:20} {mb / wall:8.0f} {best:6.0f} {cpu:6.2f} {cores:6.2f} {runnable:9.2f} {boot:11.2f} "
                  f"{hashing[name]:13.0f}")
        for kind in ("v1", "v2", "hybrid"):
            same = "same info-hash" if len(hashes[kind]) == 1 else f"DIFFERENT info-hashes {hashes[kind]}"
            print(f"torrentcore/libtorrent {kind}: {speed[f'torrentcore-{kind}'] / speed[f'libtorrent-{kind}']:.2f}, "
                  f"hashing {hashing[f'torrentcore-{kind}'] / hashing[f'libtorrent-{kind}']:.2f} ({same})")
            if args.baseline:
                print(f"  before/libtorrent {kind}: {speed[f'before-{kind}'] / speed[f'libtorrent-{kind}']:.2f}, "
                      f"hashing {hashing[f'before-{kind}'] / hashing[f'libtorrent-{kind}']:.2f}; after/before "
                      f"{speed[f'torrentcore-{kind}'] / speed[f'before-{kind}']:.2f}, "
                      f"hashing {hashing[f'torrentcore-{kind}'] / hashing[f'before-{kind}']:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
