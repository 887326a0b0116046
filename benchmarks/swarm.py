"""Download speed against real clients: torrentcore vs aria2c vs libtorrent, same swarm, same run.

    python benchmarks/swarm.py --case 1g-256k --seeders 1,3 --rounds 3          # the headline numbers
    python benchmarks/swarm.py --quick                                          # about a minute
    python benchmarks/swarm.py --case tree --case 1g-1m --seeders 3 --json out.json
    python benchmarks/swarm.py --seeders 1 --baseline-python /work/venv-base/bin/python     # before/after
    python benchmarks/swarm.py --encryption --size 256M --seeders 1 --rounds 2     # the cost of MSE/PE RC4

For each case (payload + torrent) and each seeder count N, the script starts opentracker and N
libtorrent seeders on 127.0.0.1 (they check their data once at start, so no client pays for
libtorrent's lazy ``seed_mode`` hashing), then downloads the torrent with each client in turn, as a
user would run it, finding the seeders through the tracker:

* ``torrentcore run T -o OUT --no-seed --quiet`` (the installed CLI);
* ``aria2c --seed-time=0 ...`` (DHT, LPD, PEX off, ``--file-allocation=none``);
* ``benchmarks/lt_leecher.py`` (libtorrent's Python bindings in a process of their own);
* with ``--baseline-python PYTHON`` also ``torrentcore-baseline``: ``PYTHON -I -m torrentcore run ...``
  with the same options, an older torrentcore installed in another environment (``-I`` and a neutral
  working folder, so that neither a checkout in the current folder nor ``PYTHONPATH`` can stand in for
  it). The new one then runs the same way (``sys.executable -I -m torrentcore``, same folder and
  environment) instead of through its ``torrentcore`` script, so that only the code differs. Both
  installs are checked at start (version and path of each ``torrentcore``, refused if they are the same
  code) and recorded. ``--tc-arg`` goes to the new one only, ``--baseline-arg`` to the baseline.

With ``--encryption`` the seeders accept plaintext and MSE/PE connections, the latter RC4 only
(``in_enc_policy = pe_enabled``, ``allowed_enc_level = pe_rc4``), and the clients are torrentcore in
plaintext (``--encryption disable``), torrentcore with ``--encryption require`` (``torrentcore-rc4``),
libtorrent forced to RC4 (``libtorrent-rc4``, ``lt_leecher.py --rc4``) and aria2c with
``--bt-require-crypto=true --bt-min-crypto-level=arc4`` (``aria2c-rc4``); the ratios then start with
torrentcore-rc4/X (torrentcore-rc4/torrentcore: the cost of RC4). ``--encryption`` does not combine with
``--baseline-python`` (an older torrentcore may not have ``--encryption``): measure them in separate runs.
Without ``--encryption`` torrentcore runs with its default policy (``prefer``) and no ``--encryption`` option.

The order of the clients rotates every round: with as many rounds as clients (``--rounds 4`` for the four) each
client is in each position once. Every download is checked byte for byte and then deleted.

CPU is given as user + sys, and sys apart, because on this benchmark's VM the kernel time of writing into
the page cache depends on the hypervisor as much as on the client: writing 1 GiB into a new file cost
0.31-0.42 s of sys time right after another such write had been deleted, and 1.2-2.5 s after a pause of
5 s or more, and in some sequences of processes every other one (2026-12-01, the same loop of pwrite calls
in a small script). Any client can be the one that pays, in any round; per-round medians and the user
time (which does not move with it) are the figures to compare.
Per client and round it records the wall time from process start to exit (what a user waits for),
the time until the download was complete on disk (aria2: its ``--on-bt-download-complete`` hook;
torrentcore: its ``download complete`` log line; libtorrent: after ``flush_cache``), CPU seconds
(user+sys, ``os.wait4``) and peak RSS (``VmHWM``) of the process, and the CPU the seeders spent meanwhile.
The summary gives medians and the speed ratio of every client against every other (``A/B``: B's wall
time over A's, so above 1 means A is faster), each the median of the per-round ratios with its 95 % bootstrap
interval (how far a median of this many rounds moves: with ``--clients torrentcore,torrentcore-baseline`` and
20-odd rounds it resolves a change of a few per cent, with 3 rounds only ~10 %); with a baseline
also a before/after table: torrentcore-baseline/X next to torrentcore/X for X = aria2c and libtorrent
(the change must not make these worse). Machines here are shared: read the ratios.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir, "tests"))

import libtorrent as lt  # noqa: E402
import realpeers as rp  # noqa: E402
from common import aria2_done_hook, median_interval, private_state_dir, tree_spec, write_json  # noqa: E402
from opentracker_fixture import OpenTracker  # noqa: E402

CLIENTS = ("torrentcore", "torrentcore-baseline", "aria2c", "libtorrent")
#: Clients with ``--encryption``: ``-rc4`` is the same client forced to MSE/PE with RC4.
ENCRYPTED_CLIENTS = ("torrentcore", "torrentcore-rc4", "libtorrent-rc4", "aria2c-rc4")
#: The clients that are torrentcore (same options, same log lines).
TORRENTCORES = ("torrentcore", "torrentcore-baseline", "torrentcore-rc4")
#: The order of the speed ratios ``A/B`` (A before B): torrentcore-rc4 first, so that its ratios say what
#: RC4 costs (torrentcore-rc4/torrentcore), then as in CLIENTS.
RATIO_ORDER = ("torrentcore-rc4", *CLIENTS, "libtorrent-rc4", "aria2c-rc4")
MIB = 1 << 20
#: torrentcore's transports here: TCP, as every other client (the seeders and lt_leecher.py run with uTP off,
#: aria2c has none). With its default (uTP first, TCP after a 0.2 s head start: torrentcore/transport.py) a
#: seeder's silent UDP port cost torrentcore 0.2 s before its first connection, 10-20 % of a 512 MiB run.
TC_TRANSPORTS = ("--transports", "tcp")

#: name -> (payload size, piece length, number of files); ``--size`` scales the payload.
CASES = {
    "1g-256k": (1 << 30, 256 << 10, 1),
    "1g-1m": (1 << 30, 1 << 20, 1),
    "1g-64k": (1 << 30, 64 << 10, 1),
    "tree": (512 << 20, 256 << 10, 200),
}


def parse_size(text: str) -> int:
    """``256M`` -> bytes (k, M, G suffixes, powers of 1024)."""
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1].lower(), 1)
    return int(float(text.rstrip("kKmMgG")) * scale)


# --------------------------------------------------------------------------------------------------
# running a client as a child process
# --------------------------------------------------------------------------------------------------


class Result(dict):
    """One download: ``wall`` and ``done`` seconds, ``cpu`` seconds (``user`` + ``sys``), ``rss_mib``,
    ``seeders_cpu``; for torrentcore ``storage_stalled``, the seconds its peers waited for a free slot in the
    queue of pieces to hash and write (its "download complete" line; None for other clients)."""


def _vm_hwm_kib(pid: int) -> int:
    """The process's peak resident set (``VmHWM``, KiB), or 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def run_child(cmd: list[str], timeout: float, log_path: str,
              cwd: str | None = None, env: dict[str, str] | None = None) -> tuple[int, float, object, int]:
    """Run ``cmd`` (in ``cwd``, with ``env``); return ``(exit code, wall seconds, rusage, peak RSS KiB)``.

    CPU comes from ``os.wait4``. Peak RSS is the last ``VmHWM`` read while it ran (polled every 10 ms):
    ``ru_maxrss`` of a child on Linux also counts the parent's resident set at fork/exec time, and this
    parent holds the libtorrent seeders.
    """
    with open(log_path, "wb") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                env=env)
        deadline = t0 + timeout
        hwm = 0
        while True:
            hwm = max(hwm, _vm_hwm_kib(proc.pid))
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.send_signal(signal.SIGKILL)
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                raise RuntimeError(f"{cmd[0]} timed out after {timeout:g} s; log kept: {_keep(log_path)}")
            time.sleep(0.01)
        wall = time.monotonic() - t0
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    return code, wall, usage, hwm


def _keep(log_path: str) -> str:
    """Copy a failed client's log out of the work folder (which is deleted at the end)."""
    kept = os.path.join(os.path.dirname(os.path.dirname(log_path)), "failed-" + os.path.basename(log_path))
    shutil.copyfile(log_path, kept)
    return kept


def _tail(path: str, n: int = 3000) -> str:
    with open(path, "rb") as f:
        return f.read()[-n:].decode("utf-8", "replace")


def torrentcore_cmd() -> list[str]:
    """The installed ``torrentcore`` command (as a user runs it), else ``python -m torrentcore``.

    The script beside this interpreter is preferred to ``$PATH``'s, which may be a pyenv shell shim.
    """
    exe = os.path.join(os.path.dirname(sys.executable), "torrentcore")
    if not os.access(exe, os.X_OK):
        exe = shutil.which("torrentcore")
    return [exe] if exe else [sys.executable, "-m", "torrentcore"]


def baseline_cmd(python: str) -> list[str]:
    """The baseline torrentcore: ``python -I -m torrentcore`` (isolated: no current folder, no PYTHONPATH)."""
    return [python, "-I", "-m", "torrentcore"]


def neutral_env() -> dict[str, str]:
    """The environment for the baseline: without ``PYTHONPATH``/``PYTHONHOME`` (``-I`` ignores them anyway)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def describe_install(cmd_python: list[str], cwd: str) -> dict[str, str]:
    """``{"version", "path", "python"}`` of the torrentcore that ``cmd_python`` (a Python command) imports in
    ``cwd``; :class:`RuntimeError` with the reason if it imports none."""
    code = "import sys, torrentcore; print(torrentcore.__version__); print(torrentcore.__file__); print(sys.executable)"
    res = subprocess.run([*cmd_python, "-c", code], capture_output=True, text=True, cwd=cwd, env=neutral_env(),
                         timeout=60)
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["no output"])[-1][-300:]
        raise RuntimeError(f"{' '.join(cmd_python)} cannot import torrentcore ({last})")
    version, path, python = res.stdout.split("\n")[:3]
    folder = os.path.dirname(os.path.realpath(path))
    info = {"version": version, "path": folder, "python": python}
    git = subprocess.run(["git", "-C", folder, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         timeout=30)
    if git.returncode == 0 and git.stdout.strip():  # an editable install of a checkout: which commit
        dirty = subprocess.run(["git", "-C", folder, "status", "--porcelain", "--untracked-files=no", "."],
                               capture_output=True, text=True, timeout=30).stdout.strip()
        info["commit"] = git.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    return info


def check_installs(baseline_python: str, work: str) -> dict[str, dict[str, str]]:
    """The new torrentcore (this interpreter's) and the baseline's; refused if both are the same code."""
    installs = {"torrentcore": describe_install([sys.executable], work),
                "torrentcore-baseline": describe_install([baseline_python, "-I"], work)}
    installs["torrentcore"]["command"] = " ".join(baseline_cmd(sys.executable))
    installs["torrentcore-baseline"]["command"] = " ".join(baseline_cmd(baseline_python))
    if installs["torrentcore"]["path"] == installs["torrentcore-baseline"]["path"]:
        raise RuntimeError(f"--baseline-python imports the same torrentcore as this run "
                           f"({installs['torrentcore']['path']}): install the old version in another environment")
    return installs


def download(client: str, torrent_path: str, out: str, work: str, timeout: float, max_peers: int,
             extra: dict[str, list[str]]) -> Result:
    """Download ``torrent_path`` into ``out`` with ``client``; return its measurements."""
    os.makedirs(out, exist_ok=True)
    log_path = os.path.join(work, f"{client}.log")
    port = rp.free_port()
    started = time.time()
    done_at = None
    cwd = env = None
    name = client  # torrentcore-rc4 is torrentcore (its options, --tc-arg), aria2c-rc4 aria2c, ...
    client, rc4 = client.removesuffix("-rc4"), client.endswith("-rc4")
    if client == "torrentcore":
        # --encryption: plaintext or RC4 only; otherwise no option (its default), as for the baseline.
        crypto = ["--encryption", "require" if rc4 else "disable"] if extra.get("encryption") else []
    else:
        crypto = {"aria2c": ["--bt-require-crypto=true", "--bt-min-crypto-level=arc4"],
                  "libtorrent": ["--rc4"]}.get(client, []) if rc4 else []
    if client in TORRENTCORES:
        # DHT off as for aria2c and libtorrent here (the swarm is the tracker's).
        baseline_python = extra.get("baseline-python", [""])[0]
        if client == "torrentcore" and not baseline_python:
            base = [*extra.get("torrentcore-prefix", []), *torrentcore_cmd()]
        else:
            # Before/after: both started the same way (PYTHON -I -m torrentcore, in the work folder, so that a
            # checkout in the current folder is not imported), so only the code differs.
            python = sys.executable if client == "torrentcore" else baseline_python
            prefix = extra.get("torrentcore-prefix", []) if client == "torrentcore" else []
            base, cwd, env = [*prefix, *baseline_cmd(python)], work, neutral_env()
        cmd = [*base, "run", torrent_path, "-o", out,
               "--no-seed", "--quiet", "--no-dht", "--port", str(port), "--listen-host", "127.0.0.1",
               "--max-peers", str(max_peers), "--max-connections-per-ip", "1000", *TC_TRANSPORTS,  # all on 127.0.0.1
               "--log-format", "json", "--log-level", "info", *crypto, *extra.get(client, [])]
    elif client == "aria2c":
        hook, stamp = aria2_done_hook(work)
        cmd = [rp.ARIA2C, *rp.Aria2Peer.base_args(out, port, seed=False), f"--bt-max-peers={max_peers}",
               f"--on-bt-download-complete={hook}", *crypto, *extra.get(client, []), torrent_path]
    elif client == "libtorrent":
        cmd = [sys.executable, os.path.join(HERE, "lt_leecher.py"), torrent_path, out, "--port", str(port),
               "--timeout", str(timeout), *crypto, *extra.get(client, [])]
    else:
        raise ValueError(client)
    self_before = resource.getrusage(resource.RUSAGE_SELF)
    code, wall, usage, hwm = run_child(cmd, timeout, log_path, cwd=cwd, env=env)
    self_after = resource.getrusage(resource.RUSAGE_SELF)
    if code != 0:
        raise RuntimeError(f"{name} exited with {code} (log kept: {_keep(log_path)}): {_tail(log_path)}")
    text = _tail(log_path, 1 << 20)
    stalled = None
    if client in TORRENTCORES:
        for line in text.splitlines():
            if '"download complete"' in line:
                entry = json.loads(line)
                stamp_text = entry["timestamp"].replace("Z", "+00:00")
                done_at = datetime.datetime.fromisoformat(stamp_text).timestamp()
                stalled = entry.get("storage_stalled")  # (an older torrentcore does not log it)
    elif client == "aria2c":
        if os.path.exists(stamp):
            with open(stamp) as f:
                done_at = float(f.read().strip())
    else:
        for line in text.splitlines():
            if line.startswith("{") and "done_at" in line:
                done_at = json.loads(line)["done_at"]
    return Result(
        wall=round(wall, 3),
        done=round(done_at - started, 3) if done_at else None,
        cpu=round(usage.ru_utime + usage.ru_stime, 3),
        user=round(usage.ru_utime, 3),
        sys=round(usage.ru_stime, 3),
        rss_mib=round(hwm / 1024, 1),
        seeders_cpu=round(self_after.ru_utime + self_after.ru_stime - self_before.ru_utime - self_before.ru_stime,
                          3),
        storage_stalled=stalled,
    )


# --------------------------------------------------------------------------------------------------
# a swarm: tracker + seeders
# --------------------------------------------------------------------------------------------------

SEEDER_ALERTS = int(lt.alert.category_t.error_notification | lt.alert.category_t.status_notification
                    | lt.alert.category_t.storage_notification | lt.alert.category_t.tracker_notification)


def start_seeders(n: int, torrent: bytes, data_dir: str, timeout: float,
                  seed_mode: bool = False, rc4: bool = False, aio_threads: int = 2,
                  announce_timeout: float = 15) -> list[rp.LibtorrentPeer]:
    """``n`` libtorrent seeders that have checked ``data_dir`` and announced to the torrent's tracker.

    ``aio_threads``: each seeder's disk threads (1 for many seeders on two cores, benchmarks/many_peers.py).

    ``rc4``: MSE/PE connections accepted beside plaintext ones, RC4 only.
    ``seed_mode``: no check at start (libtorrent then hashes each piece on its first upload, during the
    rounds): for many seeders, where checking the data once per seeder would take minutes.
    """
    seeders = []
    try:
        for i in range(n):
            crypto = {"in_enc_policy": int(lt.enc_policy.pe_enabled),
                      "allowed_enc_level": int(lt.enc_level.rc4)} if rc4 else {}
            s = rp.LibtorrentPeer(name=f"seed{i}", background_poll=None, alert_mask=SEEDER_ALERTS,
                                  aio_threads=aio_threads, hashing_threads=1, **crypto)
            seeders.append(s)
            s.add_torrent(torrent, data_dir, seed=seed_mode)  # by default a full check now, not during the rounds
        for s in seeders:
            if not s.wait_finished(timeout=timeout) or not s.status()["is_seeding"]:
                raise RuntimeError(f"seeder did not become a seed: {s.describe()}")
            if not s.wait_announced(timeout=announce_timeout):
                raise RuntimeError(f"seeder did not announce: {s.describe()}")
    except BaseException:
        for s in seeders:
            s.close()
        raise
    return seeders


def run_swarm(case: str, size: int, piece_length: int, files: int, seeder_counts: list[int], rounds: int,
              clients: list[str], work: str, args: argparse.Namespace) -> list[dict]:
    """All rounds of one case for each seeder count; return one summary per seeder count."""
    payload_dir = os.path.join(work, f"seed-{case}")
    spec = size if files == 1 else tree_spec(size, files)
    t0 = time.monotonic()
    root = rp.make_payload(payload_dir, spec, seed=case, name=f"payload-{case}")
    torrent_path = os.path.join(work, f"{case}.torrent")
    # The info-hash does not depend on the tracker: make the torrent once without, then with the URL.
    _, info_hash = rp.make_torrent(root, [], piece_length=piece_length)
    summaries = []
    with OpenTracker(os.path.join(work, "tracker"), [info_hash]) as tracker:
        torrent, _ = rp.make_torrent(root, [tracker.http_url], piece_length=piece_length, out=torrent_path)
        num_pieces = lt.torrent_info(torrent_path).num_pieces()
        log(args, f"== {case}: {size / MIB:.0f} MiB, {files} file(s), {piece_length >> 10} KiB pieces "
                  f"({num_pieces} pieces); payload + torrent in {time.monotonic() - t0:.1f} s")
        for n in seeder_counts:
            seeders = start_seeders(n, torrent, payload_dir, args.timeout, args.seed_mode, args.encryption)
            try:
                rows = []
                for r in range(rounds):
                    order = clients[r % len(clients):] + clients[: r % len(clients)]
                    row = {"round": r, "load": round(os.getloadavg()[0], 2)}
                    for who in order:
                        out = os.path.join(work, f"out-{who}")
                        shutil.rmtree(out, ignore_errors=True)
                        res = download(who, torrent_path, out, work, args.timeout, args.max_peers, args.extra)
                        rp.assert_same_tree(root, os.path.join(out, os.path.basename(root)), who)
                        shutil.rmtree(out)
                        row[who] = res
                        if args.keep_logs:
                            os.makedirs(args.keep_logs, exist_ok=True)
                            shutil.copyfile(os.path.join(work, f"{who}.log"),
                                            os.path.join(args.keep_logs, f"{case}-s{n}-r{r}-{who}.log"))
                        done = f", done {res['done']:.2f}s" if res["done"] else ""
                        if res["storage_stalled"] is not None:
                            done += f", storage stalled {res['storage_stalled']:.2f}s"
                        log(args, f"  {case} seeders={n} round {r}: {who:20s} {res['wall']:6.2f}s "
                                  f"({size / 1e6 / res['wall']:5.0f} MB/s{done}) cpu {res['cpu']:5.2f}s "
                                  f"(sys {res['sys']:4.2f}) "
                                  f"rss {res['rss_mib']:5.0f} MiB  seeders cpu {res['seeders_cpu']:.2f}s")
                    rows.append(row)
            finally:
                for s in seeders:
                    s.close()
            summary = summarize(case, size, piece_length, files, num_pieces, n, clients, rows)
            summaries.append(summary)
            print_summary(summary, args)
    shutil.rmtree(payload_dir, ignore_errors=True)
    return summaries


def summarize(case, size, piece_length, files, num_pieces, seeders, clients, rows) -> dict:
    """Medians per client, the speed ratio of every client against every other, and before/after (baseline)."""
    per_client = {}
    for who in clients:
        res = [row[who] for row in rows]
        dones = [x["done"] for x in res if x["done"]]
        per_client[who] = {
            "median_wall_s": statistics.median(x["wall"] for x in res),
            "median_mb_s": round(size / 1e6 / statistics.median(x["wall"] for x in res), 1),
            "median_done_mb_s": round(size / 1e6 / statistics.median(dones), 1) if dones else None,
            "median_cpu_s": statistics.median(x["cpu"] for x in res),
            "cpu_s_per_gib": round(statistics.median(x["cpu"] for x in res) / (size / (1 << 30)), 2),
            "user_s_per_gib": round(statistics.median(x["user"] for x in res) / (size / (1 << 30)), 2),
            "sys_s_per_gib": round(statistics.median(x["sys"] for x in res) / (size / (1 << 30)), 2),
            "peak_rss_mib": max(x["rss_mib"] for x in res),
            "median_seeders_cpu_s": statistics.median(x["seeders_cpu"] for x in res),
        }
        stalls = [x["storage_stalled"] for x in res if x.get("storage_stalled") is not None]
        if stalls:
            per_client[who]["median_storage_stalled_s"] = statistics.median(stalls)
    ordered = [c for c in RATIO_ORDER if c in clients]
    ratios, cpu, intervals = {}, {}, {}
    for i, first in enumerate(ordered):
        for other in ordered[i + 1:]:
            ratios.update(speed_ratios(rows, first, other, intervals))
            cpu_ratios = [row[first]["cpu"] / row[other]["cpu"] for row in rows]
            cpu[f"{first}/{other}"] = round(statistics.median(cpu_ratios), 3)
            intervals[f"cpu {first}/{other}"] = [round(x, 3) for x in median_interval(cpu_ratios)]
    before_after = {}
    if "torrentcore" in clients and "torrentcore-baseline" in clients:
        for ref in (c for c in ordered if c not in TORRENTCORES):
            for kind in ("", " (done)"):
                old, new = ratios.get(f"torrentcore-baseline/{ref}{kind}"), ratios.get(f"torrentcore/{ref}{kind}")
                if old is not None and new is not None:
                    before_after[f"vs {ref}{kind}"] = {"before": old, "after": new, "after/before": round(new / old, 3)}
    return {"case": case, "size": size, "piece_length": piece_length, "files": files, "pieces": num_pieces,
            "seeders": seeders, "rounds": rows, "clients": per_client, "speed_ratios": ratios,
            "cpu_ratios": cpu, "ratio_intervals": intervals, "before_after": before_after}


def speed_ratios(rows: list[dict], first: str, other: str,
                 intervals: dict[str, list[float]] | None = None) -> dict[str, float]:
    """``first/other`` (``other``'s wall time over ``first``'s: above 1, ``first`` is faster) and the same
    for the time to complete, each the median of the per-round ratios; with ``intervals``, each median's 95 %
    bootstrap interval is added there under the same key (:func:`common.median_interval`)."""
    walls = [row[other]["wall"] / row[first]["wall"] for row in rows]
    out = {f"{first}/{other}": round(statistics.median(walls), 3)}
    dones = [row[other]["done"] / row[first]["done"] for row in rows if row[other]["done"] and row[first]["done"]]
    if dones:
        out[f"{first}/{other} (done)"] = round(statistics.median(dones), 3)
    if intervals is not None:
        intervals[f"{first}/{other}"] = [round(x, 3) for x in median_interval(walls)]
        if dones:
            intervals[f"{first}/{other} (done)"] = [round(x, 3) for x in median_interval(dones)]
    return out


def _with_interval(key: str, value: float, intervals: dict[str, list[float]]) -> str:
    """``key = 1.04 (0.99-1.06)``: a ratio and its 95 % bootstrap interval, when known."""
    low_high = intervals.get(key)
    return f"{key} = {value:.2f}" + (f" ({low_high[0]:.2f}-{low_high[1]:.2f})" if low_high else "")


def print_summary(s: dict, args: argparse.Namespace) -> None:
    """A Markdown table of one summary."""
    print(f"\n### {s['case']}: {s['size'] / MIB:.0f} MiB, {s['files']} file(s), {s['piece_length'] >> 10} KiB pieces "
          f"({s['pieces']}), {s['seeders']} seeder(s), {len(s['rounds'])} rounds")
    print("| client | median MB/s (wall) | MB/s to complete | CPU s | CPU s/GiB (user + sys) | peak RSS MiB "
          "| seeders CPU s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for who, c in s["clients"].items():
        done = f"{c['median_done_mb_s']:.0f}" if c["median_done_mb_s"] else "-"
        print(f"| {who} | {c['median_mb_s']:.0f} | {done} | {c['median_cpu_s']:.2f} | {c['cpu_s_per_gib']:.2f} "
              f"({c['user_s_per_gib']:.2f} + {c['sys_s_per_gib']:.2f}) | {c['peak_rss_mib']:.0f} "
              f"| {c['median_seeders_cpu_s']:.2f} |")
    iv = s.get("ratio_intervals", {})
    print("speed ratios (median of per-round ratios, its 95 % bootstrap interval; A/B > 1: A is faster): "
          + ", ".join(_with_interval(k, v, iv) for k, v in s["speed_ratios"].items()), flush=True)
    cpu_iv = {k.removeprefix("cpu "): v for k, v in iv.items() if k.startswith("cpu ")}
    print("CPU ratios (median of per-round ratios, its 95 % bootstrap interval; A/B > 1: A used more CPU): "
          + ", ".join(_with_interval(k, v, cpu_iv) for k, v in s["cpu_ratios"].items()), flush=True)
    if s["before_after"]:
        print("\nbefore/after (speed ratio of torrentcore-baseline and of torrentcore against each client; "
              "after/before >= 1: no worse)")
        print("| against | before (baseline) | after (torrentcore) | after/before |")
        print("|---|---:|---:|---:|")
        for against, v in s["before_after"].items():
            print(f"| {against.removeprefix('vs ')} | {v['before']:.2f} | {v['after']:.2f} | {v['after/before']:.2f} |")
        print(flush=True)


def log(args: argparse.Namespace, text: str) -> None:
    """Progress lines (stderr, so ``--json -`` stays clean)."""
    if not args.quiet:
        print(text, file=sys.stderr, flush=True)


def main() -> int:
    private_state_dir()  # resume records and DHT state never go to the user's state folder
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", action="append", choices=sorted(CASES), help="payload case (repeatable; "
                    "default 1g-256k): 1g-256k, 1g-1m, 1g-64k (16384 pieces), tree (512 MiB in 200 files)")
    ap.add_argument("--size", type=parse_size, default=None, help="override every case's payload size (e.g. 64M)")
    ap.add_argument("--seeders", default="1,3", help="comma-separated seeder counts (default 1,3)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", default=None, help="comma-separated subset of " + ", ".join(CLIENTS)
                    + " (default: all; torrentcore-baseline only with --baseline-python); with --encryption "
                    "of " + ", ".join(ENCRYPTED_CLIENTS))
    ap.add_argument("--encryption", action="store_true", help="the cost of MSE/PE: seeders accept RC4, clients "
                    "are torrentcore plaintext and RC4, libtorrent and aria2c RC4 (not with --baseline-python)")
    ap.add_argument("--baseline-python", metavar="PYTHON", default=None,
                    help="the Python of another environment holding an older torrentcore: adds the client "
                         "torrentcore-baseline (PYTHON -I -m torrentcore run ...) to the rotation, for before/after "
                         "ratios measured in the same run")
    ap.add_argument("--baseline-arg", action="append", default=[],
                    help="extra argument for torrentcore-baseline (repeatable)")
    ap.add_argument("--seed-mode", action="store_true", help="seeders skip their start-up check (many seeders)")
    ap.add_argument("--max-peers", type=int, default=55, help="torrentcore --max-peers and aria2c --bt-max-peers")
    ap.add_argument("--tc-arg", action="append", default=[], help="extra argument for torrentcore (repeatable)")
    ap.add_argument("--tc-prefix", default="", help="run torrentcore under this command, e.g. "
                    "'py-spy record -o /tmp/tc.svg --' (profiling; its CPU then counts too)")
    ap.add_argument("--quick", action="store_true", help="64 MiB, 1 and 3 seeders, 2 rounds (about a minute)")
    ap.add_argument("--workdir", default="/tmp/bench", help="payloads and downloads go here (deleted after)")
    ap.add_argument("--timeout", type=float, default=300.0, help="per download (seconds)")
    ap.add_argument("--json", metavar="FILE", help="also write all results as JSON ('-' for stdout)")
    ap.add_argument("--quiet", action="store_true", help="no per-round lines")
    ap.add_argument("--keep-logs", metavar="DIR", help="copy every client's output here")
    args = ap.parse_args()
    if args.quick:
        args.size = args.size or parse_size("64M")
        args.rounds = min(args.rounds, 2)
    args.extra = {"torrentcore": args.tc_arg, "torrentcore-prefix": args.tc_prefix.split(),
                  "torrentcore-baseline": args.baseline_arg, "baseline-python": [args.baseline_python or ""],
                  "encryption": ["on"] if args.encryption else []}
    cases = args.case or ["1g-256k"]
    seeder_counts = [int(x) for x in args.seeders.split(",")]
    if args.encryption and (args.baseline_python or args.baseline_arg):
        ap.error("--encryption does not combine with --baseline-python/--baseline-arg (an older torrentcore may "
                 "have no --encryption): measure encryption and before/after in separate runs")
    if args.encryption:
        known = default = ENCRYPTED_CLIENTS
    else:
        known = CLIENTS
        default = CLIENTS if args.baseline_python else tuple(c for c in CLIENTS if c != "torrentcore-baseline")
    clients = [c for c in (args.clients or ",".join(default)).split(",") if c]
    if unknown := set(clients) - set(known):
        ap.error(f"unknown client(s){' with --encryption' if args.encryption else ''}: {', '.join(sorted(unknown))} "
                 f"(known: {', '.join(known)})")
    if len(set(clients)) != len(clients):
        ap.error("--clients: each client once")
    if "torrentcore-baseline" in clients and not args.baseline_python:
        ap.error("the client torrentcore-baseline needs --baseline-python PYTHON (an older torrentcore's Python)")
    if args.baseline_python and not (os.path.isfile(args.baseline_python) and os.access(args.baseline_python, os.X_OK)):
        ap.error(f"--baseline-python {args.baseline_python}: no such executable")
    os.makedirs(args.workdir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="swarm-", dir=args.workdir)
    results = {"machine": {"cpus": os.cpu_count(), "load_at_start": os.getloadavg(),
                           "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
               "summaries": []}
    if "torrentcore-baseline" in clients:
        try:
            results["installs"] = check_installs(args.baseline_python, work)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            shutil.rmtree(work, ignore_errors=True)
            ap.error(str(exc))
        for who, install in results["installs"].items():
            commit = f", commit {install['commit']}" if "commit" in install else ""
            log(args, f"{who}: torrentcore {install['version']} from {install['path']}{commit} ({install['command']})")
    try:
        for case in cases:
            size, piece_length, files = CASES[case]
            if args.size:
                size = args.size
            results["summaries"] += run_swarm(case, size, piece_length, files, seeder_counts, args.rounds,
                                              clients, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["machine"]["load_at_end"] = os.getloadavg()
    if args.json:
        write_json(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
