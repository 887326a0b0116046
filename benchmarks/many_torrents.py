"""Many torrents in one process: torrentcore's Session against a libtorrent session seeding the same torrents.

    python benchmarks/many_torrents.py                              # 500 torrents of 4 MiB, 60 s idle, fetch 20
    python benchmarks/many_torrents.py --torrents 100 --idle 10     # a quicker look

The benchmark makes ``--torrents`` torrents of ``--size`` bytes each (sparse files of zeros, one file per
torrent, distinct names so distinct info-hashes; 256 KiB pieces), then for each client runs one seeding
process of its own (this script with ``--child``), which adds every torrent with its data trusted:

* torrentcore: a :class:`torrentcore.Session` (DHT and PEX off, listening on 127.0.0.1); a first process
  checks the data once and writes the resume records (not measured), the measured one trusts them; started
  as `torrentcore run` starts (its CLI module patches for gevent and sets up structlog, warnings only);
* libtorrent: one ``lt.session`` (the settings of ``tests/realpeers.py``), torrents added in ``seed_mode``.

For each it measures the start-up time until every torrent is seeding (from process start, imports
included) and the CPU (user+sys, all threads) the process used until then (steadier than the time on a
loaded machine), the CPU over ``--idle`` seconds with no peer, then the time a libtorrent leecher (in
this process) takes to fetch ``--fetch`` of the torrents from it, all at once over one connection per
torrent, and the process's peak RSS (``VmHWM``). Ratios torrentcore/libtorrent come first in the summary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PIECE = 256 << 10
#: Lines of the seeding process meant for the parent start with this (anything else it prints is skipped).
MARK = "@many_torrents "


# --------------------------------------------------------------------------------------------------
# the seeding process (``--child``)
# --------------------------------------------------------------------------------------------------


def _say(**fields) -> None:
    print(MARK + json.dumps(fields), flush=True)


def _cpu() -> float:
    """CPU seconds (user+sys, all threads) this process has used so far, imports included."""
    t = os.times()
    return t.user + t.system


def _idle_cpu(seconds: float) -> float:
    """CPU seconds (user+sys) this process spends while it sleeps ``seconds`` (its loops keep running)."""
    t0 = os.times()
    _sleep(seconds)
    t1 = os.times()
    return t1.user + t1.system - t0.user - t0.system


_sleep = time.sleep  # the torrentcore child replaces it with gevent's


def child_torrentcore(args) -> None:
    # Started as `torrentcore run` starts: the collector off (torrentcore.__main__.entry), the CLI module
    # patches for gevent and imports structlog first; once the torrents are added, gc.freeze and gc.enable.
    import gc

    gc.disable()
    from torrentcore.cli import configure_logging  # isort: skip

    import gevent

    from torrentcore import Session, SessionConfig, TorrentConfig

    # Warnings only, as `torrentcore run` does by default: an unconfigured structlog prints every info
    # line (one per torrent at start-up, 18 % of a 500-torrent start-up under py-spy).
    configure_logging("warning", "console")
    global _sleep
    _sleep = gevent.sleep
    session = Session(SessionConfig(listen_port=args.port, listen_hosts=("127.0.0.1",), dht=False, pex=False,
                                    encryption="disable"))
    config = TorrentConfig.seeding_forever()
    handles = [session.add_torrent(path, args.data, config) for path in sorted(os.listdir(args.torrents))
               for path in [os.path.join(args.torrents, path)]]
    gc.freeze()
    gc.enable()
    deadline = time.monotonic() + args.timeout
    while any(h.status().state != "seeding" for h in handles):
        if time.monotonic() > deadline:
            raise SystemExit(f"not all seeding after {args.timeout} s")
        gevent.sleep(0.05)
    _say(seeding_after=time.time() - args.started, cpu=_cpu())
    if args.prime:
        session.close()  # the resume records are written now
        return
    _say(idle_cpu=_idle_cpu(args.idle))
    gevent.get_hub().threadpool.spawn(sys.stdin.readline).get()  # the parent's leecher is done
    _say(done=True)
    session.close()


def child_libtorrent(args) -> None:
    import libtorrent as lt

    sys.path.insert(0, os.path.join(HERE, os.pardir, "tests"))
    from realpeers import libtorrent_settings

    settings = libtorrent_settings(args.port)
    settings["active_seeds"] = settings["active_limit"] = -1  # every torrent active (not auto-managed anyway)
    ses = lt.session(settings)
    handles = []
    for name in sorted(os.listdir(args.torrents)):
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(os.path.join(args.torrents, name))
        params.save_path = args.data
        params.flags = (params.flags | lt.torrent_flags.seed_mode) & ~lt.torrent_flags.paused \
            & ~lt.torrent_flags.auto_managed
        handles.append(ses.add_torrent(params))
    deadline = time.monotonic() + args.timeout
    while any(h.status().state != lt.torrent_status.seeding for h in handles):
        if time.monotonic() > deadline:
            raise SystemExit(f"not all seeding after {args.timeout} s")
        ses.pop_alerts()
        time.sleep(0.05)
    _say(seeding_after=time.time() - args.started, cpu=_cpu())
    _say(idle_cpu=_idle_cpu(args.idle))
    sys.stdin.readline()
    _say(done=True)


# --------------------------------------------------------------------------------------------------
# the parent
# --------------------------------------------------------------------------------------------------


def make_torrents(work: str, count: int, size: int) -> tuple[str, str]:
    """``count`` sparse files of zeros and their .torrent files; returns (data folder, torrents folder)."""
    sys.path.insert(0, os.path.join(HERE, os.pardir))
    from torrentcore import bencode

    data, torrents = os.path.join(work, "data"), os.path.join(work, "torrents")
    os.makedirs(data)
    os.makedirs(torrents)
    pieces = b"".join(hashlib.sha1(bytes(min(PIECE, size - off))).digest() for off in range(0, size, PIECE))
    for i in range(count):
        name = f"t{i:04d}.bin"
        with open(os.path.join(data, name), "wb") as f:
            f.truncate(size)
        info = {b"name": name.encode(), b"piece length": PIECE, b"pieces": pieces, b"length": size}
        with open(os.path.join(torrents, f"t{i:04d}.torrent"), "wb") as f:
            f.write(bencode.encode({b"info": info}))
    return data, torrents


def _vm_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _read_json_line(proc: subprocess.Popen, timeout: float) -> dict:
    import select

    deadline = time.monotonic() + timeout
    while True:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"the seeding process said nothing (exit {proc.poll()})")
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])


def run_client(client: str, data: str, torrents: str, args, work: str) -> dict:
    sys.path.insert(0, os.path.join(HERE, os.pardir, "tests"))
    import realpeers as rp

    def start(prime: bool) -> tuple[subprocess.Popen, int]:
        port = rp.free_port()
        cmd = [sys.executable, os.path.abspath(__file__), "--child", client, "--port", str(port), "--data", data,
               "--torrents-dir", torrents, "--idle", str(args.idle), "--started", repr(time.time()),
               "--timeout", str(args.timeout), *(["--prime"] if prime else [])]
        log = open(os.path.join(work, f"{client}{'-prime' if prime else ''}.log"), "wb")  # noqa: SIM115
        return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True), port

    if client == "torrentcore":  # check once, write the resume records; the measured run trusts them
        proc, _ = start(prime=True)
        _read_json_line(proc, args.timeout)
        if proc.wait(timeout=120) != 0:
            raise RuntimeError("the priming torrentcore process failed")
    proc, port = start(prime=False)
    try:
        seeding = _read_json_line(proc, args.timeout)
        startup, startup_cpu = seeding["seeding_after"], seeding["cpu"]
        idle_cpu = _read_json_line(proc, args.idle + 120)["idle_cpu"]
        names = sorted(os.listdir(torrents))[: args.fetch]
        out = os.path.join(work, f"fetch-{client}")
        t0 = time.monotonic()
        with rp.LibtorrentPeer(name="fetch") as leecher:
            handles = []
            for name in names:
                handles.append(leecher.add_torrent(os.path.join(torrents, name), out))
                leecher.connect_peer("127.0.0.1", port, handle=handles[-1])
            for h in handles:
                if not leecher.wait_finished(timeout=args.timeout, handle=h):
                    raise RuntimeError(f"the leecher did not finish: {leecher.describe()}")
            fetch = time.monotonic() - t0
        for name in names:
            stem = name.removesuffix(".torrent")
            if os.path.getsize(os.path.join(out, f"{stem}.bin")) != args.size:
                raise RuntimeError(f"{client}: {stem} has the wrong size")
        shutil.rmtree(out)
        rss = _vm_hwm_kib(proc.pid)
        proc.stdin.write("\n")
        proc.stdin.flush()
        _read_json_line(proc, 60)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return {"startup_s": round(startup, 2), "startup_cpu_s": round(startup_cpu, 2),
            "idle_cpu_percent": round(100 * idle_cpu / args.idle, 2),
            "fetch_s": round(fetch, 2), "peak_rss_mib": round(rss / 1024, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--torrents", type=int, default=500)
    ap.add_argument("--size", type=int, default=4 << 20, help="bytes per torrent (default 4 MiB)")
    ap.add_argument("--idle", type=float, default=60.0, help="seconds of idle CPU measurement (default 60)")
    ap.add_argument("--fetch", type=int, default=20, help="torrents the libtorrent leecher fetches (default 20)")
    ap.add_argument("--clients", default="torrentcore,libtorrent")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON ('-' for stdout)")
    # the seeding process
    ap.add_argument("--child", choices=("torrentcore", "libtorrent"), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--torrents-dir", dest="torrents_dir_arg", help=argparse.SUPPRESS)
    ap.add_argument("--started", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--prime", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.torrents = args.torrents_dir_arg
        (child_torrentcore if args.child == "torrentcore" else child_libtorrent)(args)
        return 0

    sys.path.insert(0, HERE)
    from common import private_state_dir, write_json

    private_state_dir()  # resume records go to a folder of the benchmark's own
    work = tempfile.mkdtemp(prefix="tc-bench-many-")
    try:
        data, torrents = make_torrents(work, args.torrents, args.size)
        results = {}
        for client in args.clients.split(","):
            results[client] = run_client(client, data, torrents, args, work)
            print(f"{client:12s} {json.dumps(results[client])}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n### {args.torrents} torrents of {args.size >> 20} MiB, {args.idle:g} s idle, {args.fetch} fetched")
    keys = ("startup_s", "startup_cpu_s", "idle_cpu_percent", "fetch_s", "peak_rss_mib")
    if "torrentcore" in results and "libtorrent" in results:
        tc, lt = results["torrentcore"], results["libtorrent"]
        ratios = {k: round(tc[k] / lt[k], 2) if lt[k] else None for k in keys}
        print("torrentcore/libtorrent: " + ", ".join(f"{k} {v}x" for k, v in ratios.items()))
        results["ratios_tc_over_lt"] = ratios
    print(f"| client | start-up s | start-up CPU s | idle CPU % of a core | fetch of {args.fetch} s | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for client in args.clients.split(","):
        r = results[client]
        print(f"| {client} | {r['startup_s']} | {r['startup_cpu_s']} | {r['idle_cpu_percent']} | {r['fetch_s']} "
              f"| {r['peak_rss_mib']} |")
    if args.json:
        write_json({"torrents": args.torrents, "size": args.size, "idle_s": args.idle, "fetch": args.fetch,
                    "results": results}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
