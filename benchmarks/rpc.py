"""How long ``torrent-get`` of every field for 100 torrents takes: torrentcore daemon vs transmission-daemon.

Both daemons run on 127.0.0.1 in this run with the same 100 small torrents added over the RPC (paused,
so no network traffic), then answer the same request (``torrent-get`` with every field torrentcore
answers, for all torrents) ``--rounds`` times; the script prints the median and best times and the
ratio torrentcore/Transmission. The request is timed from the client side, HTTP and JSON included.

    python benchmarks/rpc.py [--torrents 100] [--rounds 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import requests

sys.path.insert(0, os.path.dirname(__file__))
from common import private_state_dir, write_json  # noqa: E402

#: Seconds over which the idle CPU use is measured.
IDLE_SECONDS = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port}")


class Client:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/transmission/rpc"
        self.sid = ""
        self.http = requests.Session()

    def call(self, method: str, **arguments) -> dict:
        for _ in range(3):
            r = self.http.post(self.url, data=json.dumps({"method": method, "arguments": arguments}),
                               headers={"X-Transmission-Session-Id": self.sid}, timeout=60)
            if r.status_code == 409:
                self.sid = r.headers["X-Transmission-Session-Id"]
                continue
            answer = r.json()
            if answer["result"] != "success":
                raise SystemExit(f"{method}: {answer['result']}")
            return answer["arguments"]
        raise SystemExit("no session id")


def make_torrents(folder: str, count: int) -> list[bytes]:
    from torrentcore.create import create_torrent  # noqa: PLC0415

    out = []
    for i in range(count):
        path = os.path.join(folder, f"t{i:03d}")
        os.makedirs(path)
        for j in range(3):
            with open(os.path.join(path, f"f{j}.bin"), "wb") as f:
                f.write(os.urandom(40_000))
        out.append(create_torrent(path, trackers=["http://127.0.0.1:1/announce"], piece_length=16384)[0])
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_get(client: Client, fields: list[str], rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        got = client.call("torrent-get", fields=fields)
        times.append(time.perf_counter() - start)
        assert got["torrents"]
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--torrents", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--json", default=None, metavar="FILE")
    args = ap.parse_args()
    private_state_dir()
    from torrentcore.daemon.fields import FIELDS  # noqa: PLC0415

    fields = sorted(FIELDS)
    work = tempfile.mkdtemp(prefix="bench-rpc-")
    procs = []
    results = {"torrents": args.torrents, "rounds": args.rounds, "fields": len(fields)}
    try:
        torrents = make_torrents(os.path.join(work, "data"), args.torrents)
        port = free_port()
        env = {**os.environ, "TORRENTCORE_NO_DHT": "1"}
        procs.append(subprocess.Popen([sys.executable, "-m", "torrentcore", "daemon", "--config-dir",
                                       os.path.join(work, "tc"), "--download-dir", os.path.join(work, "data"),
                                       "--rpc-port", str(port), "--peer-port", "0"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(port)
        clients = {"torrentcore": Client(port)}
        pids = {"torrentcore": procs[0].pid}
        if shutil.which("transmission-daemon"):
            tport, conf = free_port(), os.path.join(work, "tr")
            os.makedirs(conf)
            settings = {"dht-enabled": False, "lpd-enabled": False, "pex-enabled": False, "utp-enabled": False,
                        "port-forwarding-enabled": False, "peer-port": free_port(), "bind-address-ipv4": "127.0.0.1",
                        "download-dir": os.path.join(work, "data"), "rpc-enabled": True,
                        "rpc-bind-address": "127.0.0.1", "rpc-port": tport, "rpc-authentication-required": False,
                        "rpc-whitelist": "127.0.0.1", "download-queue-enabled": False}
            with open(os.path.join(conf, "settings.json"), "w") as f:
                json.dump(settings, f)
            procs.append(subprocess.Popen(["transmission-daemon", "-f", "-g", conf], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
            wait_port(tport)
            clients["transmission"] = Client(tport)
            pids["transmission"] = procs[1].pid
        for name, client in clients.items():
            start = time.perf_counter()
            for data in torrents:
                client.call("torrent-add", metainfo=base64.b64encode(data).decode(), paused=True)
            added = time.perf_counter() - start
            listed = len(client.call("torrent-get", fields=["id"])["torrents"])
            time.sleep(2)  # both finish checking the (complete) data first
            times = time_get(client, fields, args.rounds)
            results[name] = {"add_all_s": round(added, 3), "listed": listed,
                             "torrent_get_median_ms": round(statistics.median(times) * 1000, 2),
                             "torrent_get_best_ms": round(min(times) * 1000, 2)}
            print(f"{name:12} add {args.torrents}: {added:.2f} s; torrent-get of {len(fields)} fields x {listed} "
                  f"torrents: median {statistics.median(times) * 1000:.1f} ms, best {min(times) * 1000:.1f} ms")
        # Idle cost: CPU used over IDLE_SECONDS with the 100 paused torrents and nobody asking.
        start = {name: cpu_seconds(pid) for name, pid in pids.items()}
        time.sleep(IDLE_SECONDS)
        for name, pid in pids.items():
            share = (cpu_seconds(pid) - start[name]) / IDLE_SECONDS
            results[name]["idle_cpu_percent"] = round(share * 100, 2)
            print(f"{name:12} idle CPU with {args.torrents} paused torrents: {share * 100:.1f} %")
        if "transmission" in results:
            ratio = results["torrentcore"]["torrent_get_median_ms"] / results["transmission"]["torrent_get_median_ms"]
            results["ratio_median"] = round(ratio, 2)
            print(f"torrentcore / transmission (median torrent-get): {ratio:.2f}")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        write_json(results, args.json)


if __name__ == "__main__":
    main()
