"""Start-up costs: ``torrentcore info`` on a huge torrent, and checking data already on disk.

    python benchmarks/startup.py                       # 100,000-piece info, 1 GiB check
    python benchmarks/startup.py --check-size 256M --runs 3 --json -
    python benchmarks/startup.py --skip info --skip check --runs 11 --baseline-python /work/venv-base/bin/python

1. ``info``: a single-file torrent of ``--pieces`` pieces (default 100,000 x 16 KiB; only the metainfo
   exists, the piece hashes are random) is read by ``torrentcore info`` and ``torrentcore info --json``
   (wall time of the whole process, median of ``--runs``), next to ``python -c pass`` (the interpreter's
   own start) and ``aria2c --show-files`` on the same file.
2. ``check``: ``--check-size`` bytes of data in place (256 KiB pieces, no resume record) and
   ``torrentcore run T -o DIR --no-seed``: the process hashes everything, finds it complete and exits,
   so its wall time is the time until "complete". Compared with the SHA-1 limit of this machine
   measured on the same file: reading and hashing the pieces on one thread, and on two threads (both
   cores), and with libtorrent checking the same data (a fresh session, no ``seed_mode``). The file is
   in the page cache (it was just written), so this measures CPU, not the disk.
3. ``run``: the fixed cost of one ``torrentcore run T -o DIR --no-seed`` (wall and CPU of the whole process):
   a one-piece torrent whose data is in place, so the process starts (imports, gevent's monkey-patching,
   plugins, the session), checks one piece and exits. Next to ``python -c pass`` and gevent's
   ``monkey.patch_all()`` alone, and with ``--baseline-python PYTHON`` an older torrentcore installed there
   (``PYTHON -I -m torrentcore``; this one then runs the same way). The commands take turns, every round.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir, "tests"))

import realpeers as rp  # noqa: E402
from common import write_json  # noqa: E402
from swarm import parse_size, run_child, torrentcore_cmd  # noqa: E402

from torrentcore import bencode  # noqa: E402


def timed(cmd: list[str], runs: int, log: str) -> dict:
    """Median wall seconds, CPU seconds and peak RSS of ``cmd`` over ``runs`` runs."""
    walls, cpus, rss = [], [], []
    for _ in range(runs):
        code, wall, usage, hwm = run_child(cmd, 120, log)
        if code != 0:
            with open(log, errors="replace") as f:
                raise RuntimeError(f"{cmd} exited with {code}: {f.read()[-2000:]}")
        walls.append(wall)
        cpus.append(usage.ru_utime + usage.ru_stime)
        rss.append(hwm / 1024)
    return {"wall_s": round(statistics.median(walls), 3), "cpu_s": round(statistics.median(cpus), 3),
            "peak_rss_mib": round(max(rss), 1), "runs": [round(w, 3) for w in walls]}


def info_bench(work: str, pieces: int, runs: int) -> dict:
    """``torrentcore info`` (text and JSON) on a ``pieces``-piece torrent, with references."""
    rng = random.Random(5)
    info = {b"name": b"huge.bin", b"piece length": 16384, b"length": pieces * 16384,
            b"pieces": rng.randbytes(20 * pieces)}
    path = os.path.join(work, "huge.torrent")
    with open(path, "wb") as f:
        f.write(bencode.encode({b"announce": b"http://127.0.0.1:6969/announce", b"info": info}))
    log = os.path.join(work, "info.log")
    out = {"pieces": pieces, "torrent_bytes": os.path.getsize(path)}
    out["python -c pass"] = timed([sys.executable, "-c", "pass"], runs, log)
    out["torrentcore info"] = timed([*torrentcore_cmd(), "info", path], runs, log)
    out["torrentcore info --json"] = timed([*torrentcore_cmd(), "info", "--json", path], runs, log)
    if shutil.which("aria2c"):
        out["aria2c --show-files"] = timed([shutil.which("aria2c"), "--show-files", path], runs, log)
    return out


def sha1_limit(path: str, piece_length: int, threads: int) -> float:
    """Seconds to read and SHA-1 every piece of ``path`` with ``threads`` threads (GIL released)."""
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        def one(offset: int) -> bytes:
            return hashlib.sha1(os.pread(fd, piece_length, offset)).digest()

        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(one, range(0, size, piece_length), chunksize=16):
                pass
        return time.perf_counter() - t0
    finally:
        os.close(fd)


def libtorrent_check(torrent: bytes, data_dir: str, timeout: float = 300) -> float:
    """Seconds for a fresh libtorrent session to check ``data_dir`` and become a seed."""
    with rp.LibtorrentPeer(name="checker", background_poll=None) as peer:
        t0 = time.monotonic()
        peer.add_torrent(torrent, data_dir, seed=False)
        if not rp.wait_until(lambda: peer.status()["is_seeding"], timeout, interval=0.01):
            raise RuntimeError(f"libtorrent did not finish checking: {peer.describe()}")
        return time.monotonic() - t0


def check_bench(work: str, size: int, piece_length: int, runs: int) -> dict:
    """Time ``torrentcore run --no-seed`` on complete data (it checks, then exits) against the limits."""
    data_dir = os.path.join(work, "data")
    root = rp.make_payload(data_dir, size, seed="startup", name="checked.bin")
    torrent_path = os.path.join(work, "checked.torrent")
    torrent, _ = rp.make_torrent(root, [], piece_length=piece_length, out=torrent_path)
    # The same command on a one-piece torrent: what start-up and exit cost without the check.
    tiny_dir = os.path.join(work, "tiny")
    tiny = rp.make_payload(tiny_dir, piece_length, seed="tiny", name="tiny.bin")
    tiny_path = os.path.join(work, "tiny.torrent")
    rp.make_torrent(tiny, [], piece_length=piece_length, out=tiny_path)
    log = os.path.join(work, "check.log")
    walls, cpus, bases = [], [], []
    for _ in range(runs):
        for target, folder, out in ((torrent_path, data_dir, walls), (tiny_path, tiny_dir, bases)):
            # No resume record (kept in the state folder, never beside the data): everything is hashed.
            state = os.path.join(work, "state")
            shutil.rmtree(state, ignore_errors=True)
            os.environ["TORRENTCORE_STATE_DIR"] = state
            cmd = [*torrentcore_cmd(), "run", target, "-o", folder, "--no-seed", "--quiet", "--no-dht",
                   "--port", str(rp.free_port()), "--listen-host", "127.0.0.1"]
            code, wall, usage, _ = run_child(cmd, 600, log)
            if code != 0:
                with open(log, errors="replace") as f:
                    raise RuntimeError(f"torrentcore exited with {code}: {f.read()[-2000:]}")
            out.append(wall)
            if target == torrent_path:
                cpus.append(usage.ru_utime + usage.ru_stime)
    one = statistics.median(sha1_limit(root, piece_length, 1) for _ in range(runs))
    two = statistics.median(sha1_limit(root, piece_length, 2) for _ in range(runs))
    lt_s = statistics.median(libtorrent_check(torrent, data_dir) for _ in range(runs))
    wall = statistics.median(walls)
    base = statistics.median(bases)
    alone = max(1e-3, wall - base)
    mb = size / 1e6
    return {
        "start_and_exit_s": round(base, 3), "check_alone_s": round(alone, 3),
        "check_alone_mb_s": round(mb / alone), "check_alone_vs_2_thread_limit": round(two / alone, 2),
        "size": size, "piece_length": piece_length,
        "torrentcore_check_s": round(wall, 3), "torrentcore_check_mb_s": round(mb / wall),
        "torrentcore_cpu_s": round(statistics.median(cpus), 3),
        "sha1_1_thread_s": round(one, 3), "sha1_1_thread_mb_s": round(mb / one),
        "sha1_2_threads_s": round(two, 3), "sha1_2_threads_mb_s": round(mb / two),
        "libtorrent_check_s": round(lt_s, 3), "libtorrent_check_mb_s": round(mb / lt_s),
        "torrentcore_vs_2_thread_limit": round(two / wall, 2),
        "runs": [round(w, 3) for w in walls],
    }


def run_bench(work: str, runs: int, baseline_python: str | None) -> dict:
    """Median wall, CPU and peak RSS of ``torrentcore run --no-seed`` on a one-piece complete torrent, with the
    references; the commands take turns in every round (this machine is shared)."""
    folder = os.path.join(work, "run-data")
    root = rp.make_payload(folder, 256 * 1024, seed="run", name="one.bin")
    torrent = os.path.join(work, "one.torrent")
    rp.make_torrent(root, [], piece_length=256 * 1024, out=torrent)
    run_args = ["run", torrent, "-o", folder, "--no-seed", "--quiet", "--no-dht", "--listen-host", "127.0.0.1"]
    mine = [sys.executable, "-I", "-m", "torrentcore"] if baseline_python else torrentcore_cmd()
    commands = {"python -c pass": [sys.executable, "-I", "-c", "pass"],
                "gevent monkey.patch_all()": [sys.executable, "-I", "-c",
                                              "from gevent import monkey; monkey.patch_all()"],
                "torrentcore run": [*mine, *run_args]}
    if baseline_python:
        commands["torrentcore-baseline run"] = [baseline_python, "-I", "-m", "torrentcore", *run_args]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE")}
    env.update(TORRENTCORE_STATE_DIR=os.path.join(work, "run-state"), XDG_CONFIG_HOME=os.path.join(work, "run-cfg"))
    log = os.path.join(work, "run.log")
    seen: dict[str, list] = {name: [] for name in commands}
    names = list(commands)
    for r in range(runs):
        for name in names[r % len(names):] + names[:r % len(names)]:
            cmd = [*commands[name], "--port", str(rp.free_port())] if "torrentcore" in name else commands[name]
            code, wall, usage, hwm = run_child(cmd, 120, log, cwd=work, env=env)
            if code != 0:
                with open(log, errors="replace") as f:
                    raise RuntimeError(f"{name} exited with {code}: {f.read()[-2000:]}")
            seen[name].append((wall, usage.ru_utime + usage.ru_stime, hwm / 1024))
    return {name: {"wall_s": round(statistics.median(w for w, _, _ in v), 3),
                   "cpu_s": round(statistics.median(c for _, c, _ in v), 3),
                   "peak_rss_mib": round(max(m for _, _, m in v), 1)} for name, v in seen.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pieces", type=int, default=100_000, help="pieces of the info torrent (default 100000)")
    ap.add_argument("--check-size", type=parse_size, default=parse_size("1G"), help="data to check (default 1G)")
    ap.add_argument("--piece-length", type=parse_size, default=parse_size("256k"))
    ap.add_argument("--runs", type=int, default=5, help="runs per measurement (median)")
    ap.add_argument("--skip", choices=["info", "check", "run"], action="append", default=[])
    ap.add_argument("--baseline-python", metavar="PYTHON", default=None,
                    help="run: also an older torrentcore installed for PYTHON (PYTHON -I -m torrentcore)")
    ap.add_argument("--workdir", default="/tmp/bench")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON ('-' for stdout)")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="startup-", dir=args.workdir)
    results: dict = {"cpus": os.cpu_count(), "load_at_start": os.getloadavg()}
    try:
        if "info" not in args.skip:
            r = results["info"] = info_bench(work, args.pieces, args.runs)
            print(f"\n### info: {r['pieces']} pieces ({r['torrent_bytes'] / 1e6:.1f} MB .torrent), "
                  f"median of {args.runs}")
            print("| command | wall s | CPU s | peak RSS MiB |")
            print("|---|---:|---:|---:|")
            for name, v in r.items():
                if isinstance(v, dict):
                    print(f"| {name} | {v['wall_s']:.3f} | {v['cpu_s']:.3f} | {v['peak_rss_mib']:.0f} |", flush=True)
        if "check" not in args.skip:
            c = results["check"] = check_bench(work, args.check_size, args.piece_length, args.runs)
            print(f"\n### check of {c['size'] / (1 << 20):.0f} MiB already on disk ({c['piece_length'] >> 10} KiB "
                  f"pieces, page cache), median of {args.runs}")
            print("| what | seconds | MB/s |")
            print("|---|---:|---:|")
            print(f"| torrentcore run --no-seed (start to exit; CPU {c['torrentcore_cpu_s']:.2f} s) "
                  f"| {c['torrentcore_check_s']:.2f} | {c['torrentcore_check_mb_s']} |")
            print(f"| torrentcore: the check alone (minus {c['start_and_exit_s']:.2f} s of start and exit, "
                  f"measured on a one-piece torrent) | {c['check_alone_s']:.2f} | {c['check_alone_mb_s']} |")
            print(f"| libtorrent check (fresh session to seeding) | {c['libtorrent_check_s']:.2f} "
                  f"| {c['libtorrent_check_mb_s']} |")
            print(f"| read + SHA-1, 1 thread | {c['sha1_1_thread_s']:.2f} | {c['sha1_1_thread_mb_s']} |")
            print(f"| read + SHA-1, 2 threads (the limit) | {c['sha1_2_threads_s']:.2f} | {c['sha1_2_threads_mb_s']} |")
            print(f"torrentcore reaches {c['torrentcore_vs_2_thread_limit']:.2f} of the two-thread limit start to "
                  f"exit, {c['check_alone_vs_2_thread_limit']:.2f} for the check alone", flush=True)
        if "run" not in args.skip:
            r = results["run"] = run_bench(work, args.runs, args.baseline_python)
            print(f"\n### run: the fixed cost of one 'torrentcore run --no-seed' (a one-piece torrent already on "
                  f"disk), median of {args.runs}, commands taking turns")
            print("| command | wall s | CPU s | peak RSS MiB |")
            print("|---|---:|---:|---:|")
            for name, v in r.items():
                print(f"| {name} | {v['wall_s']:.3f} | {v['cpu_s']:.3f} | {v['peak_rss_mib']:.0f} |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["load_at_end"] = os.getloadavg()
    if args.json:
        write_json(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
