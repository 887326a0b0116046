"""Large torrents: is torrentcore's cost per piece flat as the piece count grows?

    python benchmarks/large_torrent.py                     # 1 GiB in 4,096 / 16,384 / 65,536 pieces
    python benchmarks/large_torrent.py --case 1g-256k --case 1600m-16k      # ... and 102,400 pieces
    python benchmarks/large_torrent.py --case 256m-64k --case 256m-16k      # quick: 256 MiB
    python benchmarks/large_torrent.py --rounds 3 --json out.json
    python benchmarks/large_torrent.py --baseline-src /tmp/old      # before/after: an older tree, same rounds

For each case (a payload size and a piece length, so a piece count) the script writes a sparse payload
of zeros (cheap to create, still hashed and sent in full), makes a v1 torrent, starts opentracker and one
libtorrent seeder on 127.0.0.1, and then, per round, measures the ``torrentcore`` process (CPU from
``os.wait4``, user+sys) for:

* ``info``: ``torrentcore info T`` (load and print the metainfo);
* ``check``: ``torrentcore run T -o DIR --no-seed`` where DIR already holds the whole payload (with a fresh
  state folder, so no resume record: the start-up check hashes every piece and the run exits, nothing to
  download);
* ``download``: ``torrentcore run T -o OUT --no-seed`` from the seeder (found through the tracker).

With ``--baseline-src DIR`` (a source tree, e.g. ``git archive`` of an older commit, with a
``torrentcore_plugins -> plugins`` link in it) every round also runs that tree's torrentcore
(``PYTHONPATH=DIR torrentcore ...``), the order alternating, and the summary adds after/before ratios.
It prints CPU seconds per GiB of each and, for ``download`` and ``check``, the ratio to the first case
(the smallest piece count): 1.0 means a flat cost per byte. Medians over the rounds. The first check of a
round reads the sparse file cold (page cache), later ones warm: compare medians of several rounds.
``--profile DIR`` runs each download under ``py-spy record`` (raw collapsed stacks): its CPU figure is then
py-spy's process, not torrentcore's. benchmarks/picker_in_flight.py isolates the picker's share. All on loopback; the
machine is shared, so read the ratios.
"""

from __future__ import annotations

import argparse
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
from opentracker_fixture import OpenTracker  # noqa: E402

MIB = 1 << 20
GIB = 1 << 30
#: name -> (payload size, piece length)
CASES = {
    "1g-256k": (GIB, 256 << 10),           # 4,096 pieces
    "1g-64k": (GIB, 64 << 10),             # 16,384 pieces
    "1g-16k": (GIB, 16 << 10),             # 65,536 pieces
    "256m-64k": (256 * MIB, 64 << 10),     # 4,096 pieces (quick)
    "256m-16k": (256 * MIB, 16 << 10),     # 16,384 pieces (quick)
    "1600m-16k": (1600 * MIB, 16 << 10),   # 102,400 pieces
}


def sparse_payload(directory: str, size: int, name: str) -> str:
    """A file of ``size`` zero bytes (sparse: no blocks written) at ``directory/name``."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def timed(cmd: list[str], work: str, label: str, timeout: float, env: dict[str, str] | None = None) -> float:
    """Run ``cmd`` (with ``env``); return its CPU seconds (user+sys); raise with its log if it fails."""
    log_path = os.path.join(work, f"{label}.log")
    code, _wall, usage, _hwm = swarm.run_child(cmd, timeout, log_path, env=env)
    if code != 0:
        raise RuntimeError(f"{label} exited with {code}: {swarm._tail(log_path)}")
    return usage.ru_utime + usage.ru_stime


def tc_cmd(who: str, args: argparse.Namespace) -> list[str]:
    """The torrentcore command of ``who``: the installed one, or the baseline source tree (``--baseline-src``)."""
    return [*baseline_prefix(who, args), *swarm.torrentcore_cmd()]


def baseline_prefix(who: str, args: argparse.Namespace) -> list[str]:
    """``env PYTHONPATH=DIR`` for the baseline (the installed script then imports DIR's torrentcore)."""
    return ["env", f"PYTHONPATH={args.baseline_src}"] if who == "baseline" else []


def one_round(who: str, r: int, case: str, size: int, name: str, torrent_path: str, seed_dir: str, work: str,
              args: argparse.Namespace) -> dict:
    """info, check and download of one round with ``who`` (torrentcore or baseline)."""
    tc = tc_cmd(who, args)
    row: dict = {"load": round(os.getloadavg()[0], 2)}
    row["info"] = timed([*tc, "info", torrent_path], work, "info", args.timeout)
    # the check: the seeder's own folder holds the complete payload (read only here); a state folder of its
    # own, so that no resume record of an earlier round is trusted instead
    state = tempfile.mkdtemp(prefix="state-", dir=work)
    row["check"] = timed([*tc, "run", torrent_path, "-o", seed_dir, "--no-seed", "--quiet",
                          "--no-dht", "--port", str(rp.free_port()), "--listen-host", "127.0.0.1",
                          "--max-peers", "1"], work, "check", args.timeout,
                         env={**os.environ, "TORRENTCORE_STATE_DIR": state})
    shutil.rmtree(state, ignore_errors=True)
    out = os.path.join(work, f"out-{case}")
    shutil.rmtree(out, ignore_errors=True)
    extra = dict(args.extra)
    extra["torrentcore-prefix"] = baseline_prefix(who, args)
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
        spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
        extra["torrentcore-prefix"] = [spy, "record", "-r", "200", "-f", "raw", "-o",
                                       os.path.join(args.profile, f"{case}-{who}-r{r}.txt"), "--",
                                       *extra["torrentcore-prefix"]]
    res = swarm.download("torrentcore", torrent_path, out, work, args.timeout, 50, extra)
    got = os.path.join(out, name)
    if os.path.getsize(got) != size:
        raise RuntimeError(f"{case}: downloaded {os.path.getsize(got)} bytes, expected {size}")
    shutil.rmtree(out)
    row["download"] = res["cpu"]
    row["wall"] = res["wall"]
    row["seeder_cpu"] = res["seeders_cpu"]  # is the libtorrent seeder the bottleneck?
    print(f"  round {r} {who:11s} (load {row['load']:.1f}): info {row['info']:.2f}s check {row['check']:.2f}s "
          f"download cpu {row['download']:.2f}s wall {row['wall']:.2f}s seeder cpu {row['seeder_cpu']:.2f}s",
          flush=True)
    return row


def run_case(case: str, rounds: int, work: str, args: argparse.Namespace) -> dict:
    size, piece_length = CASES[case]
    seed_dir = os.path.join(work, f"seed-{case}")
    name = f"zeros-{case}"
    root = sparse_payload(seed_dir, size, name)
    torrent_path = os.path.join(work, f"{case}.torrent")
    _, info_hash = rp.make_torrent(root, [], piece_length=piece_length)
    rows: dict[str, list[dict]] = {}
    with OpenTracker(os.path.join(work, f"tracker-{case}"), [info_hash]) as tracker:
        torrent, _ = rp.make_torrent(root, [tracker.http_url], piece_length=piece_length, out=torrent_path)
        num_pieces = lt.torrent_info(torrent_path).num_pieces()
        print(f"== {case}: {size / MIB:.0f} MiB in {piece_length >> 10} KiB pieces = {num_pieces} pieces",
              flush=True)
        seeders = swarm.start_seeders(1, torrent, seed_dir, args.timeout)
        try:
            for r in range(rounds):
                variants = ["torrentcore", "baseline"] if args.baseline_src else ["torrentcore"]
                for who in variants[r % len(variants):] + variants[: r % len(variants)]:
                    rows.setdefault(who, []).append(one_round(who, r, case, size, name, torrent_path, seed_dir,
                                                              work, args))
        finally:
            for s in seeders:
                s.close()
    shutil.rmtree(seed_dir, ignore_errors=True)
    gib = size / GIB
    out = {"case": case, "size": size, "piece_length": piece_length, "pieces": num_pieces, "rounds": rows}
    for who, runs in rows.items():
        med = {k: statistics.median(row[k] for row in runs) for k in runs[0]}
        out[who] = {"info_cpu_s": round(med["info"], 3),
                    "check_cpu_s_per_gib": round(med["check"] / gib, 3),
                    "download_cpu_s_per_gib": round(med["download"] / gib, 3),
                    "download_mb_s": round(size / 1e6 / med["wall"], 1)}
    if "baseline" in rows:  # after/before of the same rounds (median of per-round ratios)
        out["after/before"] = {k: round(statistics.median(a[k] / b[k] for a, b in zip(rows["torrentcore"],
                                                                                        rows["baseline"])), 3)
                               for k in ("check", "download", "wall")}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", action="append", choices=sorted(CASES), help="cases (default 1g-256k, 1g-64k, 1g-16k)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--tc-arg", action="append", default=[], help="extra option for torrentcore run")
    ap.add_argument("--profile", metavar="DIR",
                    help="run each download under py-spy record, writing DIR/CASE-rN.txt (collapsed stacks)")
    ap.add_argument("--baseline-src", metavar="DIR",
                    help="also run the torrentcore of this source tree (PYTHONPATH=DIR torrentcore ...; DIR "
                         "needs torrentcore_plugins -> plugins), alternating with the installed one every round")
    ap.add_argument("--json", help="write the results to this file (- for stdout)")
    args = ap.parse_args()
    args.extra = {"torrentcore": args.tc_arg}
    cases = args.case or ["1g-256k", "1g-64k", "1g-16k"]
    private_state_dir()
    work = tempfile.mkdtemp(prefix="tc-large-")
    t0 = time.monotonic()
    try:
        results = [run_case(c, args.rounds, work, args) for c in cases]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = results[0]
    print(f"\n{'case':12s} {'who':11s} {'pieces':>7s} {'info s':>7s} {'check s/GiB':>12s} {'x':>5s} "
          f"{'dl cpu s/GiB':>13s} {'x':>5s} {'MB/s':>6s}")
    for r in results:
        for who in ("torrentcore", "baseline"):
            if who not in r:
                continue
            w, b = r[who], base[who]
            w["check_ratio"] = round(w["check_cpu_s_per_gib"] / b["check_cpu_s_per_gib"], 2)
            w["download_ratio"] = round(w["download_cpu_s_per_gib"] / b["download_cpu_s_per_gib"], 2)
            print(f"{r['case']:12s} {who:11s} {r['pieces']:7d} {w['info_cpu_s']:7.2f} "
                  f"{w['check_cpu_s_per_gib']:12.2f} {w['check_ratio']:5.2f} {w['download_cpu_s_per_gib']:13.2f} "
                  f"{w['download_ratio']:5.2f} {w['download_mb_s']:6.0f}")
        if "after/before" in r:
            print(f"{r['case']:12s} after/before CPU (median of per-round ratios): check "
                  f"{r['after/before']['check']:.2f}, download {r['after/before']['download']:.2f}, "
                  f"wall {r['after/before']['wall']:.2f}")
    print(f"(all in {time.monotonic() - t0:.0f} s)")
    if args.json:
        write_json(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
