"""Download speed: torrentcore against libtorrent, same seeders, same run, reported as a ratio.

    python benchmarks/download.py --size 256M --seeders 2 --rounds 3

Seeders are libtorrent sessions on 127.0.0.1 holding the data. Each round
downloads the torrent once with a fresh libtorrent leecher and once with
``torrentcore run`` (a subprocess, as a user runs it), in alternating order,
and checks the result byte for byte. Machines here are shared and noisy, so
the figure to read is the ratio torrentcore/libtorrent of each round and
their median, not the seconds.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir, "tests"))

import realpeers as rp  # noqa: E402
from common import private_state_dir  # noqa: E402


def parse_size(text: str) -> int:
    """``256M`` -> bytes."""
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1].lower(), 1)
    return int(float(text.rstrip("kKmMgG")) * scale)


def run_libtorrent(torrent: bytes, seeders, out: str, timeout: float) -> float:
    with rp.LibtorrentPeer(name="bench-leecher") as leecher:
        t0 = time.monotonic()
        leecher.add_torrent(torrent, out)
        for s in seeders:
            leecher.connect_peer(*s.endpoint)
        if not leecher.wait_finished(timeout=timeout):
            raise RuntimeError(f"libtorrent did not finish: {leecher.describe()}")
        return time.monotonic() - t0


def run_torrentcore(torrent_path: str, seeders, out: str, timeout: float) -> float:
    cmd = [sys.executable, "-m", "torrentcore", "run", torrent_path, "-o", out, "--no-seed", "--quiet",
           "--port", str(rp.free_port()), "--no-dht"]
    for s in seeders:
        cmd += ["--peer", f"{s.endpoint[0]}:{s.endpoint[1]}"]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"torrentcore failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return elapsed


def alternate_rounds(rounds: int, runners: dict, root: str, work: str, size: int, quiet: bool) -> list[dict]:
    """Run ``runners["libtorrent"]`` and ``runners["torrentcore"]`` (each ``out_dir -> seconds``) ``rounds``
    times in alternating order, check every result byte for byte, and return per-round times and the
    speed ratio torrentcore/libtorrent (libtorrent's time over torrentcore's)."""
    results = []
    for r in range(rounds):
        times = {}
        for who in (["libtorrent", "torrentcore"] if r % 2 == 0 else ["torrentcore", "libtorrent"]):
            out = os.path.join(work, f"out-{who}-{r}")
            times[who] = runners[who](out)
            rp.assert_same_tree(root, os.path.join(out, os.path.basename(root)), who)
            shutil.rmtree(out)
        ratio = times["libtorrent"] / times["torrentcore"]
        results.append({"round": r, **{k: round(v, 3) for k, v in times.items()}, "ratio": round(ratio, 3)})
        if not quiet:
            mb = size / 1e6
            print(f"round {r}: libtorrent {times['libtorrent']:.2f}s ({mb / times['libtorrent']:.0f} MB/s), "
                  f"torrentcore {times['torrentcore']:.2f}s ({mb / times['torrentcore']:.0f} MB/s), "
                  f"ratio torrentcore/libtorrent {ratio:.2f}")
    return results


def main() -> int:
    private_state_dir()  # resume records and DHT state never go to the user's state folder
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=parse_size, default=parse_size("256M"), help="payload size (default 256M)")
    ap.add_argument("--files", type=int, default=1, help="split the payload into this many files")
    ap.add_argument("--piece-length", type=parse_size, default=parse_size("256k"))
    ap.add_argument("--seeders", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="tc-bench-")
    try:
        spec = args.size if args.files == 1 else {
            f"d{i % 7}/f{i}.bin": args.size // args.files for i in range(args.files)
        }
        root = rp.make_payload(os.path.join(work, "seed"), spec, seed="bench")
        torrent_path = os.path.join(work, "bench.torrent")
        torrent, _ = rp.make_torrent(root, [], piece_length=args.piece_length, out=torrent_path)
        seeders = [rp.LibtorrentPeer(name=f"seed{i}") for i in range(args.seeders)]
        try:
            for s in seeders:
                s.add_torrent(torrent, os.path.dirname(root), seed=True)
            runners = {
                "libtorrent": lambda out: run_libtorrent(torrent, seeders, out, args.timeout),
                "torrentcore": lambda out: run_torrentcore(torrent_path, seeders, out, args.timeout),
            }
            rounds = alternate_rounds(args.rounds, runners, root, work, args.size, args.json)
        finally:
            for s in seeders:
                s.close()
        median = statistics.median(r["ratio"] for r in rounds)
        result = {"size": args.size, "files": args.files, "piece_length": args.piece_length,
                  "seeders": args.seeders, "rounds": rounds, "median_speed_ratio_tc_over_lt": median}
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(f"median speed ratio torrentcore/libtorrent: {median:.2f} (1.0 = as fast as libtorrent)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
