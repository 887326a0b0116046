"""The download read path alone: one :class:`~torrentcore.peer.peer.Peer` (its real Connection, PieceManager,
rarest-first strategy and Verifier hand-over) fed by a plain seeder in another process, over 127.0.0.1.

    python benchmarks/readpath.py --size 256M --rounds 3
    python benchmarks/readpath.py --size 256M --rounds 1 --profile /tmp/readpath.txt   # py-spy, raw format

The seeder (a child process, no torrentcore code) sends a BEP 10 handshake (``reqq`` 2000, libtorrent's), a
full BITFIELD and UNCHOKE, then answers every
REQUEST with its PIECE at once (one ``sendall`` per batch of requests it read). The receiving side is this
process: the event loop's thread runs the peer greenlet exactly as in a download; downloaded pieces go through
:class:`~torrentcore.verifier.Verifier` (SHA-1 in the worker threads) to a storage that discards the bytes, so
neither the disk nor the page cache is measured. Per round it prints MB/s and the CPU seconds per GiB of the
event loop's thread (``time.thread_time``) and of the whole process, the minor page faults per GiB of both
(``getrusage``: fresh piece buffers fault in their pages) and the peak RSS: the event loop's share is what limits a
download (``benchmarks/swarm.py`` measures the whole client against libtorrent and aria2c).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import hashlib  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import gevent.threadpool  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir))

from torrentcore import bencode  # noqa: E402
from torrentcore.bitfield import Bitfield  # noqa: E402
from torrentcore.metainfo import parse  # noqa: E402
from torrentcore.peer import messages as msg  # noqa: E402
from torrentcore.peer.connection import Connection  # noqa: E402
from torrentcore.peer.peer import Peer  # noqa: E402
from torrentcore.piecemanager import PieceManager  # noqa: E402
from torrentcore.ratelimit import RateLimits, TokenBucket  # noqa: E402
from torrentcore.stats import TransferStats  # noqa: E402
from torrentcore.verifier import Verifier  # noqa: E402
from torrentcore_plugins.rarest_first import RarestFirst  # noqa: E402

PIECE = 256 * 1024
RESERVED = msg.reserved_bytes(msg.RESERVED_EXTENSIONS)  # the seeder speaks BEP 10 (it sends 'reqq')

# The seeder: plain sockets and struct, in its own process (its CPU is not the receiver's).
SEEDER = r"""
import random, socket, struct, sys
size, piece, port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
block = random.Random(7).randbytes(4 << 20)
data = block * (size // len(block) + 1)
view = memoryview(data)
n = (size + piece - 1) // piece
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
bits = bytearray(b"\xff" * ((n + 7) // 8))
if n % 8:
    bits[-1] = (0xFF << (8 - n % 8)) & 0xFF
ext = b"d4:reqqi2000ee"  # BEP 10 handshake: libtorrent's request queue (max_allowed_in_request_queue)
s.sendall(struct.pack(">IBB", 2 + len(ext), 20, 0) + ext + struct.pack(">IB", 1 + len(bits), 5) + bytes(bits)
          + struct.pack(">IB", 1, 1))
buf = b""
while True:
    chunk = s.recv(1 << 16)
    if not chunk:
        break
    buf += chunk
    out, pos = [], 0
    while len(buf) - pos >= 4:
        (length,) = struct.unpack_from(">I", buf, pos)
        if len(buf) - pos < 4 + length:
            break
        if length == 13 and buf[pos + 4] == 6:
            index, begin, ln = struct.unpack_from(">III", buf, pos + 5)
            off = index * piece + begin
            out.append(struct.pack(">IBII", 9 + ln, 7, index, begin))
            out.append(view[off:off + ln])
        pos += 4 + length
    buf = buf[pos:]
    if out:
        s.sendall(b"".join(out))
"""


class _NullStorage:
    """Thread-safe writes that keep nothing (the disk is not what is measured here)."""

    thread_safe_writes = True

    def write(self, index: int, begin: int, data) -> None:
        pass

    def mark_complete(self, index: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Port:
    """The TorrentPort of one download: the real piece manager and verifier, no storage, no swarm."""

    def __init__(self, meta, pool) -> None:
        self.meta = meta
        self.have = Bitfield(meta.num_pieces)
        self.manager = PieceManager(meta, self.have, RarestFirst(meta.num_pieces, random.Random(1)))
        self.peers: dict = {}
        # As a torrent's port: its own limit chained with the session's (none set), and its stats counters.
        self.download_limit = RateLimits(TokenBucket(0), TokenBucket(0))
        self.upload_limit = RateLimits(TokenBucket(0), TokenBucket(0))
        stats = TransferStats()
        self.block_arrived, self.block_uploaded, self.stats_wasted = (
            stats.block_arrived, stats.block_uploaded, stats.stats_wasted)
        self.listen_port, self.dht_port, self.version, self.encryption, self.layers = 0, None, "bench", "disable", None
        self.verifier = Verifier(meta, _NullStorage(), self.have, pool, lambda: False, lambda i: None)
        self.done = gevent.event.Event()
        self.failed = 0

    def verify_piece(self, piece) -> None:
        self.verifier.acquire_slot()
        self.verifier.submit(piece, self._on_verdict)

    def _on_verdict(self, piece, verdict) -> None:
        if verdict is True:
            self.manager.piece_verified(piece.index)
        else:
            self.failed += 1
            self.manager.piece_failed(piece.index)
        self.manager.recycle(piece)
        if self.manager.complete:
            self.done.set()

    def read_block(self, index, begin, length):
        return None

    def wake_requesters(self) -> None:
        pass

    def interest_changed(self, peer) -> None:
        pass

    def layers_complete(self) -> None:
        pass


def _metainfo(size: int):
    block = random.Random(7).randbytes(4 << 20)  # the seeder's payload: this block repeated
    data = block * (size // len(block) + 1)
    pieces = b"".join(hashlib.sha1(data[i:i + PIECE]).digest() for i in range(0, size, PIECE))
    info = {b"name": b"readpath.bin", b"piece length": PIECE, b"length": size, b"pieces": pieces}
    return parse(bencode.encode({b"info": info}))


def _faults(who: int) -> int:
    """Minor page faults so far of the calling thread (RUSAGE_THREAD) or of the process (RUSAGE_SELF)."""
    return resource.getrusage(who).ru_minflt


def one_round(meta, size: int, pool) -> tuple[float, float, float, int, int]:
    """(wall s, event-loop thread CPU s, process CPU s, event-loop thread minor page faults, process minor
    page faults) to download ``size`` bytes from a fresh seeder."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    seeder = subprocess.Popen([sys.executable, "-c", SEEDER, str(size), str(PIECE), str(server.getsockname()[1])])
    try:
        with gevent.Timeout(30):
            sock, address = server.accept()
        port = _Port(meta, pool)
        peer = Peer(port, Connection(sock, address), b"-XX0000-" + b"0" * 12, RESERVED, incoming=True)
        port.peers[peer.key] = peer
        t0, c0, p0 = time.perf_counter(), time.thread_time(), time.process_time()
        f0, g0 = _faults(resource.RUSAGE_THREAD), _faults(resource.RUSAGE_SELF)
        runner = gevent.spawn(peer.run)
        if not port.done.wait(300):
            raise SystemExit("download did not finish in 300 s")
        wall, cpu, pcpu = time.perf_counter() - t0, time.thread_time() - c0, time.process_time() - p0
        faults, pfaults = _faults(resource.RUSAGE_THREAD) - f0, _faults(resource.RUSAGE_SELF) - g0
        peer.close("done")
        runner.join(5)
        if port.failed:
            raise SystemExit(f"{port.failed} pieces failed their hash check")
        return wall, cpu, pcpu, faults, pfaults
    finally:
        seeder.kill()
        seeder.wait()
        server.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="256M", help="bytes per round (k, M, G suffixes)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", metavar="FILE", help="record the rounds with py-spy (raw format) into FILE")
    ap.add_argument("--switch-interval", type=float, metavar="SECONDS",
                    help="sys.setswitchinterval() for the run (the GIL hand-over period; Python's default 0.005)")
    args = ap.parse_args()
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    if args.profile:
        cmd = ["py-spy", "record", "--format", "raw", "-o", args.profile, "--rate", "250", "--",
               sys.executable, os.path.abspath(__file__), "--size", args.size, "--rounds", str(args.rounds)]
        return subprocess.call(cmd)
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(args.size[-1].lower(), 1)
    size = int(float(args.size.rstrip("kKmMgG")) * scale) // PIECE * PIECE
    meta = _metainfo(size)
    pool = gevent.threadpool.ThreadPool(2)
    gib = size / (1 << 30)
    results = []
    for r in range(args.rounds):
        wall, cpu, pcpu, faults, pfaults = one_round(meta, size, pool)
        results.append((wall, cpu, pcpu, faults, pfaults))
        print(f"round {r}: {size / 1e6 / wall:6.0f} MB/s  event loop {cpu / gib:5.2f} CPU s/GiB  "
              f"process {pcpu / gib:5.2f} CPU s/GiB  minor faults per GiB: event loop {faults / gib:,.0f}, "
              f"process {pfaults / gib:,.0f}; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10} MiB",
              flush=True)
    mid = sorted(results, key=lambda x: x[1])[len(results) // 2]
    print(f"median (by event-loop CPU): {size / 1e6 / mid[0]:.0f} MB/s, event loop {mid[1] / gib:.2f} CPU s/GiB, "
          f"process {mid[2] / gib:.2f} CPU s/GiB, minor faults per GiB {mid[3] / gib:,.0f} (event loop), "
          f"{mid[4] / gib:,.0f} (process); load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
