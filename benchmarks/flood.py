"""Honest transfers under connection floods (issue 13): the rate under a flood over the clean rate.

    python benchmarks/flood.py --size 64M --rounds 3 [--json]

Scenarios (each round measures a clean transfer, then the same under the crowd of ``tests/flooder.py``):

* ``seed``: a libtorrent leecher downloads from ``torrentcore seed`` while 1,000 idle connections and 300
  handshakes sent one byte a second hit the seed; ``seed+handshaken`` adds 60 peers that handshake and then
  say nothing (they hold peer slots until evicted); ``libtorrent-seed`` is the same flood against a
  libtorrent seeder, for reference;
* ``run``: ``torrentcore run`` downloads from a libtorrent seed with the same crowd on its listen port from
  before it starts (the whole run is timed, start-up included);
* ``greedy``: 200 peers that request endlessly, choked or not, against ``torrentcore seed``.

The figure to read is the median of clean time / flooded time per scenario (1.0: the flood costs nothing;
goal 0.8). Seconds on these shared machines are noise.
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

import gevent  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir, "tests"))
sys.path.insert(0, HERE)

import realpeers as rp  # noqa: E402
from common import private_state_dir  # noqa: E402
from download import parse_size  # noqa: E402

FLOODER = os.path.join(HERE, os.pardir, "tests", "flooder.py")
HALF_OPEN = {"idle": 1000, "slow": 300}


class Crowd:
    """The flooder process against ``port`` (started, connected after ``settle`` seconds)."""

    def __init__(self, port: int, seconds: float, settle: float = 2.0, **kinds) -> None:
        args = [sys.executable, FLOODER, "--port", str(port), "--seconds", str(seconds)]
        for key, value in kinds.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if settle:
            self.process.stdout.readline()  # the whole crowd tried to connect
            gevent.sleep(settle)

    def stop(self) -> dict:
        self.process.terminate()
        try:
            out, _ = self.process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate(timeout=5)
        lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
        return lines[-1] if lines else {}


def leech(torrent: bytes, endpoint: tuple[str, int], out: str, timeout: float) -> float:
    with rp.LibtorrentPeer(name="bench-leecher") as leecher:
        leecher.add_torrent(torrent, out)
        t0 = time.monotonic()
        leecher.connect_peer(*endpoint)
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if leecher.wait_finished(timeout=1.0):
                return time.monotonic() - t0
            if not leecher.peer_info():
                leecher.connect_peer(*endpoint)
        raise RuntimeError(f"leecher did not finish: {leecher.describe()}")


def tc_seed(torrent_path: str, data_dir: str, *extra: str) -> tuple[subprocess.Popen, int]:
    port = rp.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "torrentcore", "seed", torrent_path, "-d", data_dir, "--port", str(port),
         "--listen-host", "127.0.0.1", "--quiet", "--no-dht", "--max-connections-per-ip", "5000", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not rp.wait_port_open(port, timeout=60):
        raise RuntimeError("torrentcore seed did not start listening")
    return proc, port


def tc_run(torrent: bytes, torrent_path: str, data_dir: str, out: str, flood: dict | None, timeout: float) -> float:
    """``torrentcore run`` from a libtorrent seed (``--peer``), the whole run timed; with ``flood`` the crowd is
    already hammering the run's port (refused until it listens) when the run starts, so it must dial the seed
    and download through it."""
    port = rp.free_port()
    with rp.LibtorrentPeer(name="bench-seed") as seed:
        seed.add_torrent(torrent, data_dir, seed=True)
        crowd = Crowd(port, timeout, settle=0.0, **flood) if flood else None
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "torrentcore", "run", torrent_path, "-o", out, "--port", str(port),
             "--listen-host", "127.0.0.1", "--quiet", "--no-dht", "--no-seed", "--max-connections-per-ip", "5000",
             "--peer", f"127.0.0.1:{seed.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            code = proc.wait(timeout=timeout)
            took = time.monotonic() - t0
            if crowd is not None:
                crowd.stop()
            if code != 0:
                raise RuntimeError(f"torrentcore run exited {code}")
            return took
        finally:
            proc.kill()
            proc.wait()


def main() -> int:
    private_state_dir()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=parse_size, default=parse_size("64M"))
    ap.add_argument("--piece-length", type=parse_size, default=parse_size("256k"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--only", default="", help="comma-separated scenarios (default: all)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    only = {s for s in args.only.split(",") if s}
    work = tempfile.mkdtemp(prefix="tc-bench-flood-")
    results: dict[str, list[dict]] = {}
    procs: list[subprocess.Popen] = []
    try:
        root = rp.make_payload(os.path.join(work, "data"), args.size, seed="bench-flood")
        data_dir = os.path.dirname(root)
        torrent_path = os.path.join(work, "bench.torrent")
        torrent, info_hash = rp.make_torrent(root, [], piece_length=args.piece_length, out=torrent_path)
        pieces = -(-args.size // args.piece_length)
        greedy = {"greedy": 200, "info_hash": info_hash.hex(), "pieces": pieces, "piece_length": args.piece_length,
                  "length": args.size}
        handshaken = {**HALF_OPEN, "handshaken": 60, "info_hash": info_hash.hex()}
        seed_proc, seed_port = tc_seed(torrent_path, data_dir, "--max-peers", "300")
        procs.append(seed_proc)
        lt_seed = rp.LibtorrentPeer(name="lt-seed")
        lt_seed.add_torrent(torrent, data_dir, seed=True)
        scenarios = {
            "seed": lambda out, fl: _leech_under(torrent, ("127.0.0.1", seed_port), out, fl and HALF_OPEN, args),
            "seed+handshaken": lambda out, fl: _leech_under(torrent, ("127.0.0.1", seed_port), out,
                                                            fl and handshaken, args),
            "libtorrent-seed": lambda out, fl: _leech_under(torrent, lt_seed.endpoint, out, fl and HALF_OPEN, args),
            "greedy": lambda out, fl: _leech_under(torrent, ("127.0.0.1", seed_port), out, fl and greedy, args),
            "run": lambda out, fl: tc_run(torrent, torrent_path, data_dir, out, fl and HALF_OPEN, args.timeout),
        }
        n = 0
        for name, measure in scenarios.items():
            if only and name not in only:
                continue
            for r in range(args.rounds):
                times = {}
                for flooded in (False, True):
                    n += 1
                    out = os.path.join(work, f"out{n}")
                    times["flooded" if flooded else "clean"] = measure(out, flooded)
                    shutil.rmtree(out, ignore_errors=True)
                row = {"round": r, **times, "ratio": times["clean"] / times["flooded"]}
                results.setdefault(name, []).append(row)
                if not args.json:
                    print(f"{name} round {r}: clean {times['clean']:.2f} s, flooded {times['flooded']:.2f} s, "
                          f"ratio {row['ratio']:.2f}", flush=True)
        lt_seed.close()
        summary = {name: statistics.median(r["ratio"] for r in rows) for name, rows in results.items()}
        if args.json:
            print(json.dumps({"size": args.size, "rounds": results, "median_ratio": summary}, indent=2))
        else:
            for name, ratio in summary.items():
                print(f"{name}: median rate ratio flooded/clean {ratio:.2f} (goal 0.8)")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _leech_under(torrent: bytes, endpoint: tuple[str, int], out: str, flood: dict | None, args) -> float:
    crowd = Crowd(endpoint[1], args.timeout, **flood) if flood else None
    try:
        return leech(torrent, endpoint, out, args.timeout)
    finally:
        if crowd is not None:
            crowd.stop()


if __name__ == "__main__":
    sys.exit(main())
