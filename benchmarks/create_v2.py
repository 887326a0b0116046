"""Hashing cost of ``torrentcore create`` for v1, v2 and hybrid torrents, against libtorrent's.

    python benchmarks/create_v2.py                  # a 256 MiB file, 256 KiB pieces, 3 rounds
    python benchmarks/create_v2.py --size 1G --piece-length 1M --rounds 2

Each round runs, in rotating order and each in its own process, ``torrentcore create --v1|--v2|--hybrid``
and libtorrent's ``create_torrent`` + ``set_piece_hashes`` (v1-only, v2-only and hybrid flags) on the
same file (in the page cache: it was just written), and records wall time and CPU time (children's
user + system, ``os.wait4``). ``cores`` = CPU / wall: 2.0 means both cores of this machine were busy.
Also the SHA-1 and SHA-256 limits of one core on the same bytes. The info-hashes of both tools are
checked equal.
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


def run(cmd: list[str]) -> tuple[float, float, str]:
    """Wall and CPU seconds of one child process, and its standard output."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    if status:
        raise SystemExit(f"{' '.join(cmd[:5])} failed ({status})")
    return wall, usage.ru_utime + usage.ru_stime, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=parse_size, default=256 << 20)
    ap.add_argument("--piece-length", type=parse_size, default=256 << 10)
    ap.add_argument("--rounds", type=int, default=3)
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
        results: dict[str, list[tuple[float, float]]] = {}
        hashes: dict[str, set[str]] = {}
        jobs = []
        for kind in ("v1", "v2", "hybrid"):
            out = os.path.join(work, f"{kind}.torrent")
            jobs.append((f"torrentcore-{kind}", kind, [sys.executable, "-m", "torrentcore", "create", path, "-o", out,
                                                       "--force", "--no-date", "--piece-length",
                                                       str(args.piece_length), f"--{kind}"]))
            jobs.append((f"libtorrent-{kind}", kind, [sys.executable, "-c", LT_SCRIPT, path, str(args.piece_length),
                                                      kind]))
        for r in range(args.rounds):
            for name, kind, cmd in jobs[r % len(jobs):] + jobs[: r % len(jobs)]:
                wall, cpu, out = run(cmd)
                results.setdefault(name, []).append((wall, cpu))
                if name.startswith("libtorrent"):
                    hashes.setdefault(kind, set()).add(out.strip())
                else:
                    from torrentcore import metainfo
                    meta = metainfo.load(os.path.join(work, f"{kind}.torrent"))
                    hashes.setdefault(kind, set()).add(meta.info_hash_hex if kind == "v1" else meta.info_hash_v2_hex)
        mb = args.size / 1e6
        print(f"{args.size >> 20} MiB, {args.piece_length >> 10} KiB pieces, {args.rounds} rounds, "
              f"{os.cpu_count()} cores; one core: SHA-1 {limits['sha1']:.0f} MB/s, SHA-256 {limits['sha256']:.0f} MB/s")
        print(f"{'':20} {'MB/s':>8} {'cores':>6}")
        speed = {}
        for name, samples in results.items():
            wall = statistics.median(s[0] for s in samples)
            cores = statistics.median(s[1] / s[0] for s in samples)
            speed[name] = mb / wall
            print(f"{name:20} {mb / wall:8.0f} {cores:6.2f}")
        for kind in ("v1", "v2", "hybrid"):
            same = "same info-hash" if len(hashes[kind]) == 1 else f"DIFFERENT info-hashes {hashes[kind]}"
            print(f"torrentcore/libtorrent {kind}: {speed[f'torrentcore-{kind}'] / speed[f'libtorrent-{kind}']:.2f} "
                  f"({same})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
