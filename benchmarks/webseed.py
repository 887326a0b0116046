"""Web-seed download speed: torrentcore against aria2c, from the same nginx, in the same run, as a ratio.

    python benchmarks/webseed.py --size 256M --rounds 3 [--files 1] [--piece-length 256k]

nginx (Debian's, run by tests/webseed_servers.Nginx on 127.0.0.1) serves the data; the torrent has
that URL as its only source (BEP 19 ``url-list``, no peers, no tracker). Each round downloads it once with
``aria2c`` and once with ``torrentcore run`` (subprocesses, as users run them), in alternating order,
and checks the result byte for byte. Machines here are shared and noisy: read the ratio of seconds
torrentcore/aria2c of each round and their median (below 1: torrentcore is faster), and the ratio of the
CPU seconds each process used (user + system, which a loaded machine disturbs less). Python's start-up
(imports: seconds when the disk is busy) is in torrentcore's wall time; its *download phase* (torrent start
to "download complete", from its log) against aria2c's wall time leaves it out.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir, "tests"))

import realpeers as rp  # noqa: E402
from common import private_state_dir, write_json  # noqa: E402
from webseed_servers import Nginx  # noqa: E402

from torrentcore.create import create_torrent  # noqa: E402


def parse_size(text: str) -> int:
    """``256M`` -> bytes."""
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1].lower(), 1)
    return int(float(text.rstrip("kKmMgG")) * scale)


def same_tree(a: str, b: str) -> bool:
    if os.path.isfile(a):
        return os.path.isfile(b) and filecmp.cmp(a, b, shallow=False)
    return not rp.tree_differences(a, b)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_aria2(torrent: str, out: str, timeout: float) -> float:
    args = ["aria2c", "--dir", out, "--seed-time=0", "--enable-dht=false", "--enable-dht6=false",
            "--bt-enable-lpd=false", "--enable-peer-exchange=false", f"--listen-port={rp.free_port()}",
            "--file-allocation=none", "--console-log-level=warn", "--summary-interval=0", "--quiet=true", torrent]
    t0 = time.monotonic()
    res = subprocess.run(args, timeout=timeout, capture_output=True)
    if res.returncode != 0:
        raise RuntimeError(f"aria2c failed ({res.returncode}): {res.stderr.decode(errors='replace')[-2000:]}")
    return time.monotonic() - t0


#: Seconds from the torrent's start (after Python's start-up and imports) to "download complete", of the
#: last torrentcore run (its JSON log line).
last_download_phase: list[float] = []


def run_torrentcore(torrent: str, out: str, timeout: float) -> float:
    args = [sys.executable, "-m", "torrentcore", "--log-format", "json", "--log-level", "info", "run", torrent,
            "-o", out, "--no-seed", "--no-dht", "--port", str(rp.free_port()), "--listen-host", "127.0.0.1",
            "--quiet"]
    t0 = time.monotonic()
    res = subprocess.run(args, timeout=timeout, capture_output=True)
    if res.returncode != 0:
        raise RuntimeError(f"torrentcore failed ({res.returncode}): {res.stderr.decode(errors='replace')[-2000:]}")
    for line in res.stderr.decode(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "download complete":
            last_download_phase[:] = [float(event["seconds"])]
    return time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256M", help="payload size (default 256M)")
    parser.add_argument("--files", type=int, default=1, help="files in the payload (1: a single-file torrent)")
    parser.add_argument("--piece-length", default=None, help="piece length, e.g. 256k (default: automatic)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", default="-", help="where to write the results (default: stdout)")
    args = parser.parse_args(argv)
    private_state_dir()
    size = parse_size(args.size)
    work = tempfile.mkdtemp(prefix="tc-bench-webseed-")
    try:
        www = os.path.join(work, "www")
        if args.files <= 1:
            root = rp.make_payload(www, size, seed=1, name="payload.bin")
        else:
            spec = {f"d{i % 3}/f{i}.bin": size // args.files for i in range(args.files)}
            root = rp.make_payload(www, spec, seed=1, name="payload")
        with Nginx(www, os.path.join(work, "nginx")) as nginx:
            url = nginx.url + ("payload.bin" if args.files <= 1 else "")
            data, meta = create_torrent(root, web_seeds=[url],
                                        piece_length=parse_size(args.piece_length) if args.piece_length else None)
            torrent = os.path.join(work, "bench.torrent")
            with open(torrent, "wb") as f:
                f.write(data)
            rounds = []
            for n in range(args.rounds):
                times: dict[str, float] = {}
                cpu: dict[str, float] = {}
                order = ("aria2c", "torrentcore") if n % 2 == 0 else ("torrentcore", "aria2c")
                for who in order:
                    out = os.path.join(work, f"out-{who}-{n}")
                    run = run_aria2 if who == "aria2c" else run_torrentcore
                    cpu0 = _children_cpu()
                    times[who] = run(torrent, out, args.timeout)
                    cpu[who] = _children_cpu() - cpu0
                    got = os.path.join(out, os.path.basename(root))
                    if not same_tree(root, got):
                        raise RuntimeError(f"{who}: the download differs from the data")
                    shutil.rmtree(out)
                phase = last_download_phase[0] if last_download_phase else float("nan")
                rounds.append({"seconds": times, "ratio": times["torrentcore"] / times["aria2c"],
                               "torrentcore_download_phase": phase,
                               "phase_ratio": phase / times["aria2c"],
                               "cpu_seconds": cpu, "cpu_ratio": cpu["torrentcore"] / max(1e-9, cpu["aria2c"]),
                               "MB/s": {k: size / v / 1e6 for k, v in times.items()}})
                print(f"round {n}: torrentcore {times['torrentcore']:.2f} s ({cpu['torrentcore']:.2f} s CPU), "
                      f"aria2c {times['aria2c']:.2f} s ({cpu['aria2c']:.2f} s CPU), ratio {rounds[-1]['ratio']:.2f}"
                      f" (CPU {rounds[-1]['cpu_ratio']:.2f}; torrentcore's download phase {phase:.2f} s,"
                      f" ratio {rounds[-1]['phase_ratio']:.2f})", file=sys.stderr)
        results = {"size": size, "files": max(1, args.files), "piece_length": meta.piece_length,
                   "rounds": rounds, "median_ratio": statistics.median(r["ratio"] for r in rounds),
                   "median_cpu_ratio": statistics.median(r["cpu_ratio"] for r in rounds),
                   "median_phase_ratio": statistics.median(r["phase_ratio"] for r in rounds)}
        write_json(results, args.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
