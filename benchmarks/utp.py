"""uTP (BEP 29) on loopback: throughput and CPU per GiB, against libtorrent's uTP and our own TCP, same run.

    python benchmarks/utp.py --size 64M --rounds 3

Seeders are libtorrent sessions in this process, one uTP-only (``enable_*_tcp`` false) and one TCP-only,
holding the same data. Each round, in turn, downloads the torrent with:

* ``lt_utp``: a uTP-only libtorrent (``benchmarks/lt_leecher.py --utp``, its own process) from the uTP seeder;
* ``tc_utp``: ``torrentcore run --transports utp`` from the uTP seeder;
* ``tc_tcp``: ``torrentcore run --transports tcp`` from the TCP seeder;

each checked byte for byte. CPU is the downloader process's user + system time (``wait4``); wall time runs
from the process's start to its exit (start-up included, the same for both torrentcore cases). Read the
ratios of each round and their medians (the machine is shared and noisy): ``tc_utp / lt_utp`` throughput
(goal >= 0.5) and ``tc_utp / tc_tcp`` CPU per GiB (goal <= 3).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir, "tests"))

import realpeers as rp  # noqa: E402
from common import private_state_dir, write_json  # noqa: E402

GiB = 1 << 30
UTP_ONLY = {"enable_outgoing_utp": True, "enable_incoming_utp": True,
            "enable_outgoing_tcp": False, "enable_incoming_tcp": False}


def parse_size(text: str) -> int:
    """``64M`` -> bytes."""
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1].lower(), 1)
    return int(float(text.rstrip("kKmMgG")) * scale)


def timed(cmd: list[str], timeout: float) -> tuple[float, float]:
    """Run ``cmd``; return (wall seconds, CPU seconds of the process: the RUSAGE_CHILDREN difference, exact
    since one child runs at a time). The wait yields to gevent (the seeders' alert pollers keep running)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"timed out: {cmd}") from None
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[2:4]} failed ({proc.returncode}): {err[-2000:]!r}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=parse_size, default=parse_size("64M"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--json", default="", metavar="FILE", help="also write the results as JSON ('-': stdout)")
    args = ap.parse_args()
    private_state_dir()
    work = tempfile.mkdtemp(prefix="torrentcore-bench-utp-")
    try:
        root = rp.make_payload(os.path.join(work, "seed"), args.size, seed="utp-bench", name="data.bin")
        torrent = os.path.join(work, "t.torrent")
        rp.make_torrent(root, [], piece_length=256 * 1024, out=torrent)
        with rp.LibtorrentPeer(name="utp-seeder", **UTP_ONLY) as utp_seed, \
                rp.LibtorrentPeer(name="tcp-seeder") as tcp_seed:
            utp_seed.add_torrent(torrent, os.path.join(work, "seed"), seed=True)
            tcp_seed.add_torrent(torrent, os.path.join(work, "seed"), seed=True)
            gevent.sleep(1)
            cases = {
                "lt_utp": lambda out: [sys.executable, os.path.join(HERE, "lt_leecher.py"), torrent, out, "--utp",
                                       "--peer", "%s:%d" % utp_seed.endpoint],
                "tc_utp": lambda out: _tc(torrent, out, "utp", utp_seed.endpoint),
                "tc_tcp": lambda out: _tc(torrent, out, "tcp", tcp_seed.endpoint),
            }
            rounds = []
            for r in range(args.rounds):
                row = {}
                for name, make in cases.items():
                    out = os.path.join(work, f"out-{name}-{r}")
                    wall, cpu = timed(make(out), args.timeout)
                    rp.assert_same_tree(root, os.path.join(out, "data.bin"), name)
                    shutil.rmtree(out)
                    row[name] = {"seconds": round(wall, 3), "MiB_per_s": round(args.size / wall / (1 << 20), 1),
                                 "cpu_s_per_GiB": round(cpu * GiB / args.size, 2)}
                row["throughput_tc_utp_over_lt_utp"] = round(row["lt_utp"]["seconds"] / row["tc_utp"]["seconds"], 2)
                row["cpu_per_GiB_tc_utp_over_tc_tcp"] = round(row["tc_utp"]["cpu_s_per_GiB"]
                                                              / row["tc_tcp"]["cpu_s_per_GiB"], 2)
                rounds.append(row)
                print(f"round {r + 1}: " + "  ".join(
                    f"{n} {row[n]['MiB_per_s']} MiB/s {row[n]['cpu_s_per_GiB']} cpu-s/GiB" for n in cases)
                    + f"  | tc_utp/lt_utp throughput {row['throughput_tc_utp_over_lt_utp']}"
                    + f"  tc_utp/tc_tcp cpu {row['cpu_per_GiB_tc_utp_over_tc_tcp']}", flush=True)
        summary = {key: statistics.median(r[key] for r in rounds)
                   for key in ("throughput_tc_utp_over_lt_utp", "cpu_per_GiB_tc_utp_over_tc_tcp")}
        print(f"median: tc_utp/lt_utp throughput {summary['throughput_tc_utp_over_lt_utp']} (goal >= 0.5), "
              f"tc_utp/tc_tcp CPU per GiB {summary['cpu_per_GiB_tc_utp_over_tc_tcp']} (goal <= 3)")
        if args.json:
            write_json({"size": args.size, "rounds": rounds, "median": summary}, args.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _tc(torrent: str, out: str, transport: str, peer: tuple[str, int]) -> list[str]:
    return [sys.executable, "-m", "torrentcore", "run", torrent, "-o", out, "--no-seed", "--quiet", "--no-dht",
            "--port", str(rp.free_port()), "--listen-host", "127.0.0.1", "--transports", transport,
            "--peer", f"{peer[0]}:{peer[1]}"]


if __name__ == "__main__":
    sys.exit(main())
