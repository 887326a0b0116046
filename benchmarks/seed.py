"""Upload speed: a libtorrent and an aria2c leecher fed by ``torrentcore seed``, against the same leecher fed by a
libtorrent seeder, in the same run.

    python benchmarks/seed.py --size 256M --rounds 3
    python benchmarks/seed.py --size 128M --rounds 3 --leechers aria2c     # aria2c only

Each round starts, for each leecher kind, a fresh leecher twice: once fed by a libtorrent seeder and once by a
``torrentcore seed`` process (alternating order), and checks the bytes. The libtorrent leecher runs in this
process and is told the seeder's address; aria2c (which cannot be told a peer) runs as its own process and
finds its seeder through an opentracker: each seeder has a tracker of its own (two .torrent files with the
same info, so the same info-hash, and different announce URLs), so an aria2c leecher only ever sees one seeder.
aria2c's time is until its ``--on-bt-download-complete`` hook (it lingers about 3 s before exiting).

The figures to read are the ratios libtorrent-seeder time / torrentcore-seeder time per leecher (1.0 =
torrentcore uploads as fast as libtorrent); seconds on these shared machines are noise. The torrentcore
seeder's CPU seconds (user+sys, from /proc) per GiB uploaded are given too, and the load average.
``--profile FILE`` records the torrentcore seeder with py-spy (``--pid``) over all rounds (collapsed stacks).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir, "tests"))
sys.path.insert(0, HERE)

import realpeers as rp  # noqa: E402
from common import aria2_done_hook, private_state_dir  # noqa: E402
from download import parse_size  # noqa: E402
from opentracker_fixture import OpenTracker  # noqa: E402

LEECHERS = ("libtorrent", "aria2c")


def leech_from(torrent: bytes, endpoint: tuple[str, int], out: str, timeout: float) -> float:
    """A libtorrent leecher (in this process) dialling ``endpoint``; seconds until every piece is verified."""
    with rp.LibtorrentPeer(name="bench-leecher") as leecher:
        t0 = time.monotonic()
        leecher.add_torrent(torrent, out)
        leecher.connect_peer(*endpoint)
        if not leecher.wait_finished(timeout=timeout):
            raise RuntimeError(f"leecher did not finish: {leecher.describe()}")
        return time.monotonic() - t0


def aria2_leech(torrent_path: str, out: str, work: str, timeout: float) -> float:
    """An aria2c leecher finding its seeder through the torrent's tracker; seconds until its completion hook."""
    os.makedirs(out, exist_ok=True)
    hook, stamp = aria2_done_hook(work)
    t0 = time.time()
    with rp.Aria2Peer(torrent_path, out, extra_args=[f"--on-bt-download-complete={hook}"], debug_log=False,
                      log_dir=work) as leecher:
        code = leecher.wait(timeout)
        if code != 0 or not os.path.exists(stamp):
            raise RuntimeError(f"aria2c leecher failed (exit {code}): {leecher.describe()}")
    with open(stamp) as f:
        return float(f.read().strip()) - t0


def _cpu_seconds(pid: int) -> float:
    """user+sys CPU seconds of a running process (from /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    private_state_dir()  # resume records and DHT state never go to the user's state folder
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=parse_size, default=parse_size("256M"))
    ap.add_argument("--piece-length", type=parse_size, default=parse_size("256k"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--leechers", default=",".join(LEECHERS), help="comma-separated: libtorrent, aria2c")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--seeder-log", metavar="FILE", help="the torrentcore seeder's info-level log (JSON lines) here")
    ap.add_argument("--seeder-arg", action="append", default=[], help="extra argument for torrentcore seed")
    ap.add_argument("--profile", metavar="FILE", help="py-spy record the torrentcore seeder (--pid, all rounds) "
                    "into FILE (collapsed stacks; py-spy must be installed)")
    args = ap.parse_args()
    leechers = [name for name in args.leechers.split(",") if name]
    if not leechers or set(leechers) - set(LEECHERS):
        ap.error(f"--leechers: a comma-separated subset of {', '.join(LEECHERS)}")

    work = tempfile.mkdtemp(prefix="tc-bench-seed-")
    tc_proc = spy = None
    try:
        root = rp.make_payload(os.path.join(work, "seed"), args.size, seed="bench-seed")
        _, info_hash = rp.make_torrent(root, [], piece_length=args.piece_length)
        with OpenTracker(os.path.join(work, "tracker-lt"), [info_hash]) as tr_lt, \
                OpenTracker(os.path.join(work, "tracker-tc"), [info_hash]) as tr_tc:
            paths = {who: os.path.join(work, f"bench-{who}.torrent") for who in ("libtorrent", "torrentcore")}
            torrents = {
                "libtorrent": rp.make_torrent(root, [tr_lt.http_url], piece_length=args.piece_length,
                                              out=paths["libtorrent"])[0],
                "torrentcore": rp.make_torrent(root, [tr_tc.http_url], piece_length=args.piece_length,
                                               out=paths["torrentcore"])[0],
            }
            tc_port = rp.free_port()
            tc_proc = subprocess.Popen(
                [sys.executable, "-m", "torrentcore", "seed", paths["torrentcore"], "-d", os.path.dirname(root),
                 "--port", str(tc_port), "--listen-host", "127.0.0.1", "--quiet", "--no-dht",
                 *(["--log-level", "info", "--log-format", "json"] if args.seeder_log else []), *args.seeder_arg],
                stdout=subprocess.DEVNULL,
                stderr=open(args.seeder_log, "wb") if args.seeder_log else subprocess.DEVNULL,  # noqa: SIM115
            )
            if not rp.wait_port_open(tc_port, timeout=120):
                raise RuntimeError("torrentcore seed did not start listening")
            if args.profile:
                spy = subprocess.Popen(["py-spy", "record", "--pid", str(tc_proc.pid), "-o", args.profile,
                                        "--format", "raw", "--rate", "250", "--nonblocking"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with rp.LibtorrentPeer(name="lt-seed") as lt_seed:
                # A full check at start (as benchmarks/swarm.py's seeders), so that no round pays for libtorrent's
                # lazy hashing of seed_mode (which made its first uploads several times slower).
                lt_seed.add_torrent(torrents["libtorrent"], os.path.dirname(root))
                if not lt_seed.wait_finished(timeout=args.timeout) or not lt_seed.status()["is_seeding"]:
                    raise RuntimeError(f"libtorrent seeder did not become a seed: {lt_seed.describe()}")
                if "aria2c" in leechers and not lt_seed.wait_announced(timeout=30):
                    raise RuntimeError(f"libtorrent seeder did not announce: {lt_seed.describe()}")
                endpoints = {"libtorrent": lt_seed.endpoint, "torrentcore": ("127.0.0.1", tc_port)}
                rows = []
                for r in range(args.rounds):
                    for leecher in leechers:
                        row = {"round": r, "leecher": leecher}
                        for seeder in (["libtorrent", "torrentcore"] if r % 2 == 0 else ["torrentcore", "libtorrent"]):
                            out = os.path.join(work, f"out-{leecher}-{seeder}")
                            cpu0 = _cpu_seconds(tc_proc.pid)
                            if leecher == "libtorrent":
                                seconds = leech_from(torrents[seeder], endpoints[seeder], out, args.timeout)
                            else:
                                seconds = aria2_leech(paths[seeder], out, work, args.timeout)
                            if seeder == "torrentcore":
                                row["torrentcore_seeder_cpu_s_per_gib"] = round(
                                    (_cpu_seconds(tc_proc.pid) - cpu0) / (args.size / 2**30), 2)
                            rp.assert_same_tree(root, os.path.join(out, os.path.basename(root)), f"{leecher}<-{seeder}")
                            shutil.rmtree(out)
                            row[seeder] = round(seconds, 3)
                        row["ratio"] = round(row["libtorrent"] / row["torrentcore"], 3)
                        rows.append(row)
                        if not args.json:
                            mb = args.size / 1e6
                            print(f"round {r} {leecher:10s} leecher: ratio torrentcore/libtorrent {row['ratio']:.2f} "
                                  f"(libtorrent seeder {row['libtorrent']:.2f}s, {mb / row['libtorrent']:.0f} MB/s; "
                                  f"torrentcore seeder {row['torrentcore']:.2f}s, {mb / row['torrentcore']:.0f} MB/s, "
                                  f"{row['torrentcore_seeder_cpu_s_per_gib']:.2f} CPU s/GiB)", flush=True)
        medians = {who: statistics.median(r["ratio"] for r in rows if r["leecher"] == who) for who in leechers}
        cpu = statistics.median(r["torrentcore_seeder_cpu_s_per_gib"] for r in rows)
        load = os.getloadavg()
        if args.json:
            print(json.dumps({"size": args.size, "rounds": rows, "median_upload_speed_ratio_tc_over_lt": medians,
                              "median_torrentcore_seeder_cpu_s_per_gib": cpu, "load_average": load}, indent=2))
        else:
            for leecher, median in medians.items():
                print(f"{leecher} leecher: median upload speed ratio torrentcore/libtorrent seeder {median:.2f} "
                      "(1.0 = as fast as libtorrent)")
            print(f"torrentcore seeder CPU: {cpu:.2f} s per GiB uploaded (median); load average at the end "
                  f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
        if tc_proc is not None:
            tc_proc.kill()
            tc_proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
