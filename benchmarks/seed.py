"""Upload speed: a libtorrent leecher fed by ``torrentcore seed`` against one fed by a libtorrent seeder.

    python benchmarks/seed.py --size 256M --rounds 3

Each round starts a fresh libtorrent leecher twice, once connected to a
libtorrent seeder and once to a ``torrentcore seed`` process (alternating
order), and checks the bytes. The figure to read is the ratio
libtorrent-seeder time / torrentcore-seeder time (1.0 = torrentcore uploads as
fast as libtorrent); seconds on these shared machines are noise.
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
sys.path.insert(0, HERE)

import realpeers as rp  # noqa: E402
from common import private_state_dir  # noqa: E402
from download import alternate_rounds, parse_size  # noqa: E402


def leech_from(torrent: bytes, endpoint: tuple[str, int], out: str, timeout: float) -> float:
    with rp.LibtorrentPeer(name="bench-leecher") as leecher:
        t0 = time.monotonic()
        leecher.add_torrent(torrent, out)
        leecher.connect_peer(*endpoint)
        if not leecher.wait_finished(timeout=timeout):
            raise RuntimeError(f"leecher did not finish: {leecher.describe()}")
        return time.monotonic() - t0


def main() -> int:
    private_state_dir()  # resume records and DHT state never go to the user's state folder
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=parse_size, default=parse_size("256M"))
    ap.add_argument("--piece-length", type=parse_size, default=parse_size("256k"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="tc-bench-seed-")
    tc_proc = None
    try:
        root = rp.make_payload(os.path.join(work, "seed"), args.size, seed="bench-seed")
        torrent_path = os.path.join(work, "bench.torrent")
        torrent, _ = rp.make_torrent(root, [], piece_length=args.piece_length, out=torrent_path)
        tc_port = rp.free_port()
        tc_proc = subprocess.Popen(
            [sys.executable, "-m", "torrentcore", "seed", torrent_path, "-d", os.path.dirname(root),
             "--port", str(tc_port), "--quiet", "--no-dht"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        if not rp.wait_port_open(tc_port, timeout=60):
            raise RuntimeError("torrentcore seed did not start listening")
        with rp.LibtorrentPeer(name="lt-seed") as lt_seed:
            lt_seed.add_torrent(torrent, os.path.dirname(root), seed=True)
            runners = {
                "libtorrent": lambda out: leech_from(torrent, lt_seed.endpoint, out, args.timeout),
                "torrentcore": lambda out: leech_from(torrent, ("127.0.0.1", tc_port), out, args.timeout),
            }
            rounds = alternate_rounds(args.rounds, runners, root, work, args.size, args.json)
        median = statistics.median(r["ratio"] for r in rounds)
        if args.json:
            print(json.dumps({"size": args.size, "rounds": rounds, "median_upload_speed_ratio_tc_over_lt": median},
                             indent=2))
        else:
            print(f"median upload speed ratio torrentcore/libtorrent: {median:.2f} (1.0 = as fast as libtorrent)")
    finally:
        if tc_proc is not None:
            tc_proc.kill()
            tc_proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
