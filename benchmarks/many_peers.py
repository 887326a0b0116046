"""Many peers: does torrentcore's CPU per GiB stay flat from 3 to 50 connected peers of one torrent?

    python benchmarks/many_peers.py                               # 512 MiB, 50 seeders, 3 rounds
    python benchmarks/many_peers.py --size 256M --rounds 2        # quicker
    python benchmarks/many_peers.py --peers 3,20,50 --json out.json
    python benchmarks/many_peers.py --profile /tmp/prof           # py-spy (raw collapsed stacks) per run
    python benchmarks/many_peers.py --clients torrentcore --baseline-python BASE_VENV/bin/python   # before/after

The script writes a sparse payload of zeros (cheap to create; still hashed and sent in full), makes a
v1 torrent (256 KiB pieces by default), starts opentracker and ``--seeders`` libtorrent seeders on
127.0.0.1 (each its own session and port, in this process; each checks the data once at start), then per
round downloads the torrent with each client in turn, the order rotating every round:

* ``torrentcore-N`` for each N of ``--peers``: ``torrentcore run T -o OUT --no-seed --max-peers M``
  (it finds every seeder through the tracker; M is the smallest limit whose outgoing share,
  ``torrentcore.slots.direction_limit``, is N: 66 for 50, as a quarter is kept for incoming peers);
* with ``--baseline-python PYTHON`` also ``torrentcore-baseline-N``: an older torrentcore installed for PYTHON,
  in the same rounds (both then started as ``PYTHON -I -m torrentcore``, as in ``benchmarks/swarm.py``), and
  the ratio of their CPU per N;
* ``libtorrent-N``: ``benchmarks/lt_leecher.py --max-peers N`` (libtorrent's ``connections_limit``), the
  reference: how much does libtorrent's own CPU per GiB grow with the peer count?

So the 3-peer and the 50-peer case run against the same swarm, in the same rounds. Per download it records
the CPU (user+sys, ``os.wait4``), wall time and, for torrentcore, how many distinct peers connected
(its ``peer connected`` log lines). The summary gives medians of CPU s/GiB and MB/s, and the ratio of
each N to the smallest N of the same client (goal for torrentcore: 50 peers within 1.2x of 3 peers).
Each download is checked (size and, since the payload is zeros, a sampled scan for non-zero bytes) and
deleted. The machine is shared: read the ratios and the load average printed with each round.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, os.pardir, "tests"))

import libtorrent as lt  # noqa: E402
import realpeers as rp  # noqa: E402
import swarm  # noqa: E402
from common import private_state_dir, write_json  # noqa: E402
from large_torrent import sparse_payload  # noqa: E402
from opentracker_fixture import OpenTracker  # noqa: E402

from torrentcore.slots import direction_limit  # noqa: E402

MIB = 1 << 20
GIB = 1 << 30


def start_seeders(n: int, torrent: bytes, data_dir: str, timeout: float) -> list[rp.LibtorrentPeer]:
    """``n`` libtorrent seeders (one session each, one disk thread) that checked ``data_dir`` and announced."""
    return swarm.start_seeders(n, torrent, data_dir, timeout, aio_threads=1, announce_timeout=30)


def connected_peers(log_path: str) -> tuple[int, int | None]:
    """Distinct peers in torrentcore's ``peer connected`` lines (JSON log), and the bytes of blocks received
    twice (``wasted`` of its ``download complete`` line; None from a torrentcore that does not log it)."""
    peers = set()
    wasted = None
    with open(log_path, errors="replace") as f:
        for line in f:
            if '"peer connected"' in line or '"download complete"' in line:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("event") == "peer connected":
                    peers.add(record.get("peer"))
                elif record.get("event") == "download complete":
                    wasted = record.get("wasted")
    return len(peers), wasted


def tc_max_peers(n: int) -> int:
    """The ``--max-peers`` that lets torrentcore dial ``n`` peers (a quarter of it is kept for incoming ones)."""
    m = n
    while direction_limit(m) < n:
        m += 1
    return m


def all_zeros(path: str, size: int) -> bool:
    """The file has ``size`` bytes and (sampled: 64 KiB every 16 MiB, plus the end) only zeros."""
    if os.path.getsize(path) != size:
        return False
    with open(path, "rb") as f:
        for pos in [*range(0, size, 16 * MIB), max(0, size - 65536)]:
            f.seek(pos)
            if f.read(65536).strip(b"\0"):
                return False
    return True


def one_download(client: str, n: int, torrent_path: str, name: str, size: int, work: str,
                 args: argparse.Namespace, tag: str) -> dict:
    out = os.path.join(work, f"out-{client}-{n}")
    shutil.rmtree(out, ignore_errors=True)
    extra: dict = {"torrentcore": [], "libtorrent": ["--max-peers", str(n)]}
    if args.baseline_python:
        extra["baseline-python"] = [args.baseline_python]
    if args.profile and client == "torrentcore":
        os.makedirs(args.profile, exist_ok=True)
        spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
        extra["torrentcore-prefix"] = [spy, "record", "-r", "200", "-f", "raw", "-o",
                                       os.path.join(args.profile, f"{tag}.txt"), "--"]
    res = swarm.download(client, torrent_path, out, work, args.timeout,
                         tc_max_peers(n) if client in swarm.TORRENTCORES else n, extra)
    got = os.path.join(out, name)
    if not all_zeros(got, size):
        raise RuntimeError(f"{client}-{n}: the download is not the payload")
    shutil.rmtree(out)
    row = {"cpu": res["cpu"], "wall": res["wall"], "rss_mib": res["rss_mib"], "seeders_cpu": res["seeders_cpu"]}
    if client in swarm.TORRENTCORES:
        row["peers"], row["wasted"] = connected_peers(os.path.join(work, f"{client}.log"))
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=swarm.parse_size, default=512 * MIB, help="payload (default 512M)")
    ap.add_argument("--piece-kib", type=int, default=256, help="piece length in KiB (default 256)")
    ap.add_argument("--seeders", type=int, default=50, help="libtorrent seeders in the swarm (default 50)")
    ap.add_argument("--peers", default="3,50", help="comma-separated peer counts to compare (default 3,50)")
    ap.add_argument("--clients", default="torrentcore,libtorrent", help="torrentcore and/or libtorrent")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--profile", metavar="DIR", help="run torrentcore under py-spy record (DIR/tc-N-rR.txt); "
                    "its CPU figure is then py-spy's")
    ap.add_argument("--baseline-python", metavar="PYTHON", default=None,
                    help="also torrentcore-baseline: an older torrentcore installed for PYTHON, in the same rounds "
                         "(both then run as PYTHON -I -m torrentcore; see benchmarks/swarm.py)")
    ap.add_argument("--json", help="write the results to this file (- for stdout)")
    args = ap.parse_args()
    counts = sorted({int(x) for x in args.peers.split(",")})
    clients = [c for c in args.clients.split(",") if c]
    if args.baseline_python and "torrentcore-baseline" not in clients:
        clients.insert(clients.index("torrentcore") + 1 if "torrentcore" in clients else 0, "torrentcore-baseline")
    if max(counts) > args.seeders:
        ap.error(f"--peers {max(counts)} needs at least that many --seeders")
    private_state_dir()
    work = tempfile.mkdtemp(prefix="tc-many-peers-")
    installs = swarm.check_installs(args.baseline_python, work) if args.baseline_python else None
    t0 = time.monotonic()
    runs = [(c, n) for c in clients for n in counts]
    rows: list[dict] = []
    try:
        seed_dir = os.path.join(work, "seed")
        name = "zeros"
        root = sparse_payload(seed_dir, args.size, name)
        _, info_hash = rp.make_torrent(root, [], piece_length=args.piece_kib << 10)
        torrent_path = os.path.join(work, "t.torrent")
        with OpenTracker(os.path.join(work, "tracker"), [info_hash]) as tracker:
            torrent, _ = rp.make_torrent(root, [tracker.http_url], piece_length=args.piece_kib << 10,
                                         out=torrent_path)
            pieces = lt.torrent_info(torrent_path).num_pieces()
            print(f"== {args.size / MIB:.0f} MiB in {args.piece_kib} KiB pieces ({pieces}), {args.seeders} "
                  f"libtorrent seeders", flush=True)
            seeders = start_seeders(args.seeders, torrent, seed_dir, args.timeout)
            print(f"   seeders ready in {time.monotonic() - t0:.0f} s", flush=True)
            try:
                for r in range(args.rounds):
                    order = runs[r % len(runs):] + runs[: r % len(runs)]
                    row: dict = {"round": r, "load": round(os.getloadavg()[0], 2)}
                    for client, n in order:
                        res = one_download(client, n, torrent_path, name, args.size, work, args,
                                           f"{client}-{n}-r{r}")
                        row[f"{client}-{n}"] = res
                        peers = f" peers {res['peers']:3d}" if "peers" in res else ""
                        if res.get("wasted") is not None:
                            peers += f" twice {res['wasted'] / MIB:5.1f} MiB"
                        print(f"  round {r} (load {row['load']:.1f}): {client}-{n:<3d} cpu {res['cpu']:6.2f}s "
                              f"wall {res['wall']:6.2f}s ({args.size / 1e6 / res['wall']:4.0f} MB/s){peers} "
                              f"seeders cpu {res['seeders_cpu']:.1f}s", flush=True)
                    rows.append(row)
            finally:
                for s in seeders:
                    s.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    gib = args.size / GIB
    summary: dict = {"size": args.size, "piece_length": args.piece_kib << 10, "seeders": args.seeders,
                     "loads": [row["load"] for row in rows], "clients": {}}
    print(f"\n| client | peers | CPU s/GiB | x vs {counts[0]} peers | MB/s | connected |")
    print("|---|---:|---:|---:|---:|---:|")
    for client in clients:
        base = None
        for n in counts:
            key = f"{client}-{n}"
            cpu = statistics.median(row[key]["cpu"] for row in rows) / gib
            # the ratio: median of per-round ratios (same round, same load)
            ratio = statistics.median(row[key]["cpu"] / row[f"{client}-{counts[0]}"]["cpu"] for row in rows)
            mb_s = args.size / 1e6 / statistics.median(row[key]["wall"] for row in rows)
            conn = [row[key].get("peers") for row in rows]
            base = base or cpu
            summary["clients"][key] = {"cpu_s_per_gib": round(cpu, 3), "ratio": round(ratio, 3),
                                       "mb_s": round(mb_s, 1), "connected": conn}
            conn_text = "/".join(str(c) for c in conn) if conn[0] is not None else "-"
            print(f"| {client} | {n} | {cpu:.2f} | {ratio:.2f} | {mb_s:.0f} | {conn_text} |")
    if installs:
        summary["installs"] = installs
        summary["vs_baseline"] = {}
        for n in counts:
            ratio = statistics.median(row[f"torrentcore-{n}"]["cpu"] / row[f"torrentcore-baseline-{n}"]["cpu"]
                                      for row in rows)
            summary["vs_baseline"][n] = round(ratio, 3)
        print("CPU torrentcore/torrentcore-baseline (median of per-round ratios): "
              + ", ".join(f"{n} peers {r:.2f}" for n, r in summary["vs_baseline"].items()))
    print(f"load average per round: {summary['loads']} (all in {time.monotonic() - t0:.0f} s)")
    summary["rounds"] = rows
    if args.json:
        write_json(summary, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
