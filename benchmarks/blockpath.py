"""The per-block receive path alone, in one thread and without a network: CPU microseconds (and, with
``--count``, Python bytecodes and calls) per 16 KiB block of a download.

    python benchmarks/blockpath.py --size 256M --rounds 5
    python benchmarks/blockpath.py --size 32M --count                   # bytecodes and calls per block
    python benchmarks/blockpath.py --tree /other/checkout --rounds 5    # the same against another tree

A real :class:`~torrentcore.peer.peer.Peer` (its Connection, RequestPipeline, PieceManager, rarest-first
strategy, rate limits and stats) downloads from a fake socket in the same process: every REQUEST the writer
greenlet sends is answered at once with its PIECE message, and ``recv_into`` returns what is queued, at most
``--read`` bytes (a loopback socket returns what it holds, up to the space offered). A complete piece is taken
as verified at once (no worker threads, no storage), so what is measured is the event loop's work per block:
framing, bookkeeping, the copy into the piece, the requests, and the SHA-1 the loop feeds with the blocks that
arrived in order (``piecemanager.HASH_RUN``: about 9 us of the ~16 per block; 6.2 us before it).
``benchmarks/readpath.py`` measures the same path over a real socket with the hash-and-write hand-over,
``benchmarks/swarm.py`` the whole client.

``--tree`` imports torrentcore from another checkout (e.g. the code before a change) for an A/B in one run:
run both, alternating, and compare medians.
"""

from __future__ import annotations

import argparse
import collections
import os
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="256M", help="bytes per round (k, M, G suffixes)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--read", default="1M", help="most bytes one recv_into returns (default 1M)")
    ap.add_argument("--count", action="store_true", help="count bytecodes and calls per block (sys.settrace)")
    ap.add_argument("--tree", default=os.path.join(HERE, os.pardir), help="the checkout to import torrentcore from")
    return ap.parse_args()


def _bytes(text: str) -> int:
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1].lower(), 1)
    return int(float(text.rstrip("kKmMgG")) * scale)


ARGS = _args() if __name__ == "__main__" else None
if ARGS is not None:
    sys.path.insert(0, os.path.abspath(ARGS.tree))

import gevent  # noqa: E402
import gevent.event  # noqa: E402

from torrentcore import bencode  # noqa: E402
from torrentcore.bitfield import Bitfield  # noqa: E402
from torrentcore.metainfo import parse  # noqa: E402
from torrentcore.peer import messages as msg  # noqa: E402
from torrentcore.peer.connection import Connection  # noqa: E402
from torrentcore.peer.peer import Peer  # noqa: E402
from torrentcore.piecemanager import PieceManager  # noqa: E402
from torrentcore.ratelimit import RateLimits, TokenBucket  # noqa: E402
from torrentcore.stats import TransferStats  # noqa: E402
from torrentcore_plugins.rarest_first import RarestFirst  # noqa: E402

PIECE = 256 * 1024
RESERVED = msg.reserved_bytes(msg.RESERVED_EXTENSIONS)
_REQ = struct.Struct(">IBIII")
_HDR = struct.Struct(">IBII")


class FakeSocket:
    """A seeder behind a socket: answers each REQUEST sent to it with its PIECE (a payload of zeros)."""

    def __init__(self, num_pieces: int, read_max: int) -> None:
        self.read_max = read_max
        self.reads = 0
        self.fake_cpu = 0.0  # thread CPU s spent answering requests (the seeder's work, not ours)
        self.closed = False
        self._payload = bytes(16 * 1024)
        bits = bytearray(b"\xff" * ((num_pieces + 7) // 8))
        if num_pieces % 8:
            bits[-1] = (0xFF << (8 - num_pieces % 8)) & 0xFF
        ext = b"d4:reqqi2000ee"
        first = (struct.pack(">IBB", 2 + len(ext), 20, 0) + ext
                 + struct.pack(">IB", 1 + len(bits), 5) + bytes(bits) + struct.pack(">IB", 1, 1))
        self._chunks: collections.deque[memoryview] = collections.deque([memoryview(first)])
        self._ready = gevent.event.Event()
        self._ready.set()

    def settimeout(self, _t) -> None:
        pass

    def setsockopt(self, *_a) -> None:
        pass

    def sendall(self, data) -> None:
        c0 = time.thread_time()
        self._answer(bytes(data))
        self.fake_cpu += time.thread_time() - c0

    def _answer(self, data: bytes) -> None:
        pos, out, payload = 0, [], self._payload
        while pos + 4 <= len(data):
            (length,) = struct.unpack_from(">I", data, pos)
            if length == 13 and data[pos + 4] == msg.REQUEST:
                _l, _id, index, begin, n = _REQ.unpack_from(data, pos)
                out.append(_HDR.pack(9 + n, msg.PIECE, index, begin))
                out.append(payload if n == len(payload) else payload[:n])
            pos += 4 + length
        if out:
            self._chunks.append(memoryview(b"".join(out)))
            self._ready.set()

    def recv_into(self, view) -> int:
        chunks = self._chunks
        while not chunks:
            if self.closed:
                return 0
            self._ready.clear()
            self._ready.wait()
        room = min(len(view), self.read_max)
        n = 0
        while chunks and n < room:
            chunk = chunks[0]
            k = min(len(chunk), room - n)
            view[n : n + k] = chunk[:k]
            n += k
            if k == len(chunk):
                chunks.popleft()
            else:
                chunks[0] = chunk[k:]
        self.reads += 1
        return n

    def shutdown(self, _how) -> None:
        self.closed = True
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()


class _Port:
    """A torrent port whose complete pieces count as verified at once (no hashing, no storage)."""

    def __init__(self, meta) -> None:
        self.meta = meta
        self.have = Bitfield(meta.num_pieces)
        self.manager = PieceManager(meta, self.have, RarestFirst(meta.num_pieces, __import__("random").Random(1)))
        self.peers: dict = {}
        self.download_limit = RateLimits(TokenBucket(0), TokenBucket(0))
        self.upload_limit = RateLimits(TokenBucket(0), TokenBucket(0))
        stats = TransferStats()
        self.block_arrived, self.block_uploaded, self.stats_wasted = (
            stats.block_arrived, stats.block_uploaded, stats.stats_wasted)
        self.listen_port, self.dht_port, self.version, self.encryption, self.layers = 0, None, "bench", "disable", None
        self.done = gevent.event.Event()

    def verify_piece(self, piece) -> None:
        self.manager.piece_verified(piece.index)
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
    info = {b"name": b"blockpath.bin", b"piece length": PIECE, b"length": size,
            b"pieces": b"\0" * (20 * ((size + PIECE - 1) // PIECE))}
    return parse(bencode.encode({b"info": info}))


class _Counter:
    """sys.settrace counting opcodes and calls per code object, on this thread."""

    def __init__(self) -> None:
        self.ops: dict[str, int] = {}
        self.calls: dict[str, int] = {}

    def trace(self, frame, event, _arg):
        if event == "call":
            frame.f_trace_opcodes = True
            frame.f_trace_lines = False
            name = f"{frame.f_code.co_name} ({os.path.basename(frame.f_code.co_filename)})"
            self.calls[name] = self.calls.get(name, 0) + 1
            return self.trace
        if event == "opcode":
            name = f"{frame.f_code.co_name} ({os.path.basename(frame.f_code.co_filename)})"
            self.ops[name] = self.ops.get(name, 0) + 1
        return self.trace


def one_round(size: int, read_max: int, counter: _Counter | None = None) -> tuple[float, float, int, int]:
    """(event-loop CPU s without the fake seeder's, wall s, blocks, recv_into calls) to download ``size`` bytes
    from a fake seeder."""
    meta = _metainfo(size)
    port = _Port(meta)
    sock = FakeSocket(meta.num_pieces, read_max)
    peer = Peer(port, Connection(sock, ("127.0.0.1", 1)), b"-XX0000-" + b"0" * 12, RESERVED, incoming=True)
    port.peers[peer.key] = peer
    c0, t0 = time.thread_time(), time.perf_counter()
    if counter is not None:
        sys.settrace(counter.trace)
        gevent.settrace = None
        import greenlet
        greenlet.settrace(lambda *_a: sys.settrace(counter.trace))
    runner = gevent.spawn(peer.run)
    ok = port.done.wait(600)
    if counter is not None:
        sys.settrace(None)
        import greenlet
        greenlet.settrace(None)
    cpu, wall = time.thread_time() - c0, time.perf_counter() - t0
    peer.close("done")
    runner.join(5)
    if not ok:
        raise SystemExit("download did not finish in 600 s")
    return cpu - sock.fake_cpu, wall, size // (16 * 1024), sock.reads


def main() -> int:
    args = ARGS
    size = _bytes(args.size) // PIECE * PIECE
    read_max = _bytes(args.read)
    import torrentcore
    print(f"torrentcore from {os.path.dirname(torrentcore.__file__)}", flush=True)
    if args.count:
        counter = _Counter()
        _cpu, _wall, blocks, reads = one_round(size, read_max, counter)
        ops, calls = sum(counter.ops.values()), sum(counter.calls.values())
        print(f"{blocks} blocks, {reads} reads ({blocks / reads:.1f} blocks per read): "
              f"{ops / blocks:.1f} bytecodes and {calls / blocks:.2f} Python calls per block")
        for name, n in sorted(counter.ops.items(), key=lambda kv: -kv[1])[:25]:
            print(f"  {n / blocks:7.2f} bytecodes {counter.calls.get(name, 0) / blocks:6.3f} calls  {name}")
        return 0
    per_block = []
    for r in range(args.rounds):
        cpu, wall, blocks, reads = one_round(size, read_max)
        per_block.append(cpu / blocks * 1e6)
        print(f"round {r}: {per_block[-1]:.2f} CPU us per block ({cpu / (size / (1 << 30)):.2f} s/GiB), "
              f"{blocks / reads:.1f} blocks per read", flush=True)
    print(f"median {sorted(per_block)[len(per_block) // 2]:.2f} CPU us per block, min {min(per_block):.2f}; "
          f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
