"""Fairness on the wire: the rate an honest libtorrent seeder keeps while one peer floods torrentcore.

    python benchmarks/flood_wire.py --size 64M --rounds 3
    python benchmarks/flood_wire.py --size 64M --rounds 3 --direction seed   # torrentcore seeds libtorrent
    python benchmarks/flood_wire.py --size 64M --rounds 1 --code /work/main   # another checkout (before)

Each round downloads the torrent twice with ``torrentcore run`` (a subprocess) from the same libtorrent
seeder on 127.0.0.1, in alternating order: once clean, once while a flooder (tests/floodpeer.py) connects to
torrentcore's listening port again and again and floods it with one kind of control message per connection
(keep-alives, redundant HAVEs, CANCELs, interest toggles, ut_metadata, ut_pex, extension handshakes, a 58 KiB
5,000-entry extension handshake, unknown ids), each connection until torrentcore closes it or
``--flood-bytes`` have gone. Meanwhile a probe opens a fresh connection every 0.2 s and counts the handshakes
answered. The figure to read is ``ratio`` (clean time / flood time: the honest rate kept under the flood,
goal >= 0.8) per round and its median; the machine is shared and noisy, so seconds alone mean little.
With ``--direction seed``, ``torrentcore seed`` serves a fresh libtorrent leecher instead (the audit's case:
an honest leecher went from 8.4 to 0.05 MB/s), and the flood also fills torrentcore's upload queue with 500
requests and CANCELs them (``request-cancel``). There ``seconds`` run from adding the torrent to the leecher,
so they include libtorrent's own start-up (0.6 to 1.8 s here, whatever the flood); ``transfer`` runs from the
leecher's first payload byte to its last (polled every 20 ms), and ``rate_ratio`` (clean transfer / flood
transfer) is the honest rate kept once the transfer is under way.
``--rate`` caps the seeder's upload (bytes/s; 0: none, the download is then bound by torrentcore's CPU).
``--no-budgets`` switches torrentcore's control-message budgets off (``tc_no_budgets.py``): only the read
loop's yield then stands between the flood and the honest peer. ``--once`` floods each kind on one
connection only (no reconnecting), as the audit did; ``--flood-rate 8M`` sends at the audit's 8 MB/s (else as
fast as torrentcore reads: the flooder, in this process, then takes a good part of the same two cores).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir, "tests"))

import realpeers as rp  # noqa: E402
from common import private_state_dir, write_json  # noqa: E402
from floodpeer import KINDS, SEED_KINDS, Flooder, fresh_handshake  # noqa: E402
from torrentcore_cli import TorrentcoreProcess  # noqa: E402


def parse_size(text: str) -> int:
    """``64M`` -> bytes."""
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1].lower(), 1)
    return int(float(text.rstrip("kKmMgG")) * scale)


def download(torrent: Path, seeder, out: Path, work: Path, name: str, flood: bool, args) -> dict:
    """One ``torrentcore run`` (or with ``--direction seed`` one libtorrent leecher of ``torrentcore seed``);
    with ``flood``, the flooder and the handshake probe run meanwhile."""
    port = rp.free_port()
    if args.direction == "seed":
        cmd = ["seed", str(torrent), "-d", str(args.root.parent), "--port", str(port), "--listen-host",
               rp.LOCALHOST]
        if args.rate:
            cmd += ["--max-upload-rate", str(args.rate)]
    else:
        cmd = ["run", str(torrent), "-o", str(out), "--no-seed", "--port", str(port), "--listen-host",
               rp.LOCALHOST, "--peer", f"{seeder.endpoint[0]}:{seeder.endpoint[1]}"]
    if args.no_budgets:
        cmd += ["--plugin", "tc_no_budgets"]
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [args.code, HERE, saved]))
    try:
        run = TorrentcoreProcess(cmd, work, name, log_level="info")
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    t0 = time.monotonic()
    flooder = None
    leecher = None
    probes: list[tuple[bool, float]] = []
    try:
        if flood or args.direction == "seed":
            if not rp.wait_port_open(port, timeout=30):
                raise RuntimeError(f"torrentcore is not listening: {run.describe()}")
        if args.direction == "seed":
            # An incoming peer waits for the start-up check of the data.
            leecher = rp.LibtorrentPeer(name=f"leecher-{name}")
            t0 = time.monotonic()
            leecher.add_torrent(torrent, out)
            leecher.connect_peer(rp.LOCALHOST, port)
            finished = gevent.spawn(leecher.wait_finished, args.timeout)
            first_byte = gevent.spawn(_first_byte, leecher, finished, args.timeout)
        if flood:
            kinds = tuple(args.kinds or KINDS) + (SEED_KINDS if args.direction == "seed" and not args.kinds else ())
            flooder = Flooder((rp.LOCALHOST, port), rp.info_hash_of(torrent), kinds=kinds,
                              rounds=1 if args.once else 10**6, max_bytes=args.flood_bytes,
                              request_blocks=args.blocks, rate=args.flood_rate).start()
            for _ in range(int(args.timeout / 0.2)):  # bounded: the run's own timeout
                if run.returncode is not None or (leecher is not None and finished.dead):
                    break
                start = time.monotonic()
                ok, _during = fresh_handshake((rp.LOCALHOST, port), rp.info_hash_of(torrent), flooder,
                                              timeout=args.timeout)
                if not ok and run.events("download complete"):
                    break  # the download is over: torrentcore stops listening
                probes.append((ok, time.monotonic() - start))
                gevent.sleep(0.2)
        if leecher is not None:
            ok = finished.get(timeout=args.timeout + 10)
            elapsed = seconds = time.monotonic() - t0
            started = first_byte.get(timeout=5)
            rc = 0 if ok else f"the leecher did not finish: {leecher.describe()}"
        else:
            rc = run.wait(args.timeout)
            elapsed = time.monotonic() - t0
    finally:
        if flooder is not None:
            flooder.stop()
        if leecher is not None:
            leecher.close()
        run.kill()
    if rc != 0:
        raise RuntimeError(f"torrentcore failed ({rc}): {run.describe()}")
    if rp.tree_differences(args.root, out / args.root.name):
        raise RuntimeError("downloaded data differs")
    if leecher is None:
        done = run.events("download complete")
        seconds = float(done[0]["seconds"]) if done and "seconds" in done[0] else elapsed
    result = {"seconds": round(seconds, 3), "wall": round(elapsed, 3)}
    if leecher is not None and started is not None:
        result["transfer"] = round(t0 + seconds - started, 3)
    if flooder is not None:
        conns = flooder.connections
        result.update({
            "flood_connections": len(conns),
            "handshakes_answered": sum(c.handshake_answered for c in conns),
            "dropped_by_torrentcore": sum(c.closed_by_them for c in conns),
            "flood_bytes_sent": flooder.sent,
            "probes": len(probes),
            "probes_answered": sum(ok for ok, _ in probes),
            "probe_median_ms": round(1000 * statistics.median([s for _, s in probes]), 2) if probes else None,
            "probe_max_ms": round(1000 * max(s for _, s in probes), 2) if probes else None,
        })
    return result


def _first_byte(leecher, finished, timeout: float) -> float | None:
    """When the leecher had its first payload byte (monotonic), polled every 20 ms until it finished."""
    for _ in range(int(timeout / 0.02)):
        if leecher.status()["total_payload_download"] > 0:
            return time.monotonic()
        if finished.dead:
            return None
        gevent.sleep(0.02)
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="64M")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=int, default=0, help="seeder upload cap, bytes/s (0: none)")
    ap.add_argument("--direction", choices=("download", "seed"), default="download",
                    help="torrentcore downloads from libtorrent (run), or seeds a libtorrent leecher (seed)")
    ap.add_argument("--kinds", type=lambda s: s.split(","), default=None,
                    help=f"comma-separated flood kinds (default: all of {','.join(KINDS)}, and with --direction "
                         f"seed {','.join(SEED_KINDS)})")
    ap.add_argument("--flood-bytes", type=parse_size, default=parse_size("16M"),
                    help="most bytes the flooder sends on one connection")
    ap.add_argument("--no-budgets", action="store_true", help="torrentcore's control-message budgets off")
    ap.add_argument("--once", action="store_true", help="one connection per flood kind (no reconnecting)")
    ap.add_argument("--flood-rate", type=parse_size, default=0,
                    help="the flooder's send rate, bytes/s (0: as fast as torrentcore reads; the audit used 8M)")
    ap.add_argument("--code", help="run torrentcore from this checkout (PYTHONPATH), e.g. /work/main")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--json", default="-", help="where to write the results (default: stdout)")
    args = ap.parse_args()
    private_state_dir()
    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="flood-wire-"))
    root = Path(rp.make_payload(work / "seed", size, seed=17, name="flood.bin"))
    args.root = root
    torrent = work / "flood.torrent"
    piece_length = 256 * 1024
    rp.make_torrent(root, [], piece_length=piece_length, out=torrent)
    args.blocks = tuple((i, b, 16384) for i in range(size // piece_length) for b in range(0, piece_length, 16384))
    rounds = []
    with rp.RealPeers(work / "peers") as pool:
        seeder = None
        if args.direction == "download":
            overrides = {"upload_rate_limit": args.rate, "ignore_limits_on_local_network": False} if args.rate else {}
            seeder = pool.libtorrent("seeder", **overrides)
            seeder.add_torrent(torrent, work / "seed", seed=True)
        for i in range(args.rounds):
            order = ("clean", "flood") if i % 2 == 0 else ("flood", "clean")
            entry = {}
            for kind in order:
                out = work / f"out-{i}-{kind}"
                entry[kind] = download(torrent, seeder, out, work, f"tc-{i}-{kind}", kind == "flood", args)
                print(f"round {i} {kind}: {entry[kind]}", file=sys.stderr)
            entry["ratio"] = round(entry["clean"]["seconds"] / entry["flood"]["seconds"], 3)
            if "transfer" in entry["clean"] and "transfer" in entry["flood"]:
                entry["rate_ratio"] = round(entry["clean"]["transfer"] / entry["flood"]["transfer"], 3)
            rounds.append(entry)
    ratios = [r["ratio"] for r in rounds]
    rate_ratios = [r["rate_ratio"] for r in rounds if "rate_ratio" in r]
    write_json({"size": size, "rate": args.rate, "direction": args.direction, "kinds": args.kinds,
                "code": args.code or "this checkout",
                "budgets": not args.no_budgets, "reconnecting": not args.once, "flood_rate": args.flood_rate,
                "rounds": rounds, "median_ratio": statistics.median(ratios),
                "median_rate_ratio": statistics.median(rate_ratios) if rate_ratios else None}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
