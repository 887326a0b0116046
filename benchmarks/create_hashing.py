"""The hashing phase of ``create`` alone (no interpreter start-up), this torrentcore against an older one.

    python benchmarks/create_hashing.py --baseline DIR            # 512 MiB, 1 MiB pieces, 5 rounds
    python benchmarks/create_hashing.py --baseline DIR --size 1G --rounds 3

``DIR`` holds an older torrentcore's sources (``git archive COMMIT torrentcore | tar -x -C DIR``). Each
round runs, in alternating order and each in its own process, ``create_torrent`` of v1, v2 and hybrid on
the same file (in the page cache) with this checkout and with ``DIR`` (``PYTHONPATH=DIR``), and times only
the call: wall, CPU (``time.process_time``) and cores used. Prints medians, the best round's MB/s (the one
that found the CPUs freest: on a busy machine every session gets an equal share, see create_v2.py) and the
after/before ratios, with the load average.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from swarm import parse_size  # noqa: E402

CHILD = r"""
from gevent import monkey; monkey.patch_all()
import sys, time
from torrentcore.create import create_torrent
path, kind, pl = sys.argv[1], sys.argv[2], int(sys.argv[3])
t0 = time.monotonic(); c0 = time.process_time()
create_torrent(path, [], piece_length=pl, kind=kind)
print(time.monotonic() - t0, time.process_time() - c0)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, metavar="DIR")
    ap.add_argument("--size", type=parse_size, default=512 << 20)
    ap.add_argument("--piece-length", type=parse_size, default=1 << 20)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="create-hashing-", dir="/tmp")
    try:
        path = os.path.join(work, "payload.bin")
        with open(path, "wb") as fh:
            for _ in range(args.size >> 20):
                fh.write(os.urandom(1 << 20))
        load_before = os.getloadavg()
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for r in range(args.rounds):
            order = [("after", {}), ("before", {"PYTHONPATH": os.path.abspath(args.baseline)})]
            for name, env in order if r % 2 == 0 else order[::-1]:
                for kind in ("v1", "v2", "hybrid"):
                    out = subprocess.run([sys.executable, "-c", CHILD, path, kind, str(args.piece_length)],
                                         env={**os.environ, **env}, capture_output=True, text=True, check=True)
                    wall, cpu = (float(x) for x in out.stdout.split())
                    results.setdefault((kind, name), []).append((wall, cpu))
        mb = args.size / 1e6
        loads = [" ".join(f"{x:.1f}" for x in load) for load in (load_before, os.getloadavg())]
        print(f"{args.size >> 20} MiB, {args.piece_length >> 10} KiB pieces, {args.rounds} rounds; load average "
              f"before {loads[0]}, after {loads[1]}")
        print(f"{'':16} {'MB/s':>6} {'best':>6} {'CPU s':>6} {'cores':>6}")
        speed: dict[tuple[str, str], tuple[float, float]] = {}
        for kind in ("v1", "v2", "hybrid"):
            for name in ("after", "before"):
                samples = results[(kind, name)]
                wall = statistics.median(s[0] for s in samples)
                best = min(s[0] for s in samples)
                speed[(kind, name)] = (mb / wall, mb / best)
                cpu = statistics.median(s[1] for s in samples)
                cores = statistics.median(s[1] / s[0] for s in samples)
                print(f"{kind + ' ' + name:16} {mb / wall:6.0f} {mb / best:6.0f} {cpu:6.2f} {cores:6.2f}")
            a, b = speed[(kind, "after")], speed[(kind, "before")]
            print(f"{kind} after/before: median {a[0] / b[0]:.2f}, best {a[1] / b[1]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
