"""Piece picker cost with many pieces in flight, as in a real download of a large torrent.

    python benchmarks/picker_in_flight.py            # 4,096 / 16,384 / 65,536 / 102,400 pieces (1 GiB or more)

benchmarks/picker.py delivers every block at once, so few pieces are ever in flight. A real download keeps
:data:`~torrentcore.piecemanager.MAX_OUTSTANDING_BYTES` requested (2,048 one-block pieces with 16 KiB
pieces) and a queue of pieces waiting for their hash check. Here one seed is asked for up to 64 blocks at a
time (as ``Peer.fill_requests`` does) while 32 blocks arrive per round in request order, and a complete
piece is marked verified only after 64 more have completed (the verifier's queue). No network, no disk:
the real PieceManager and the installed rarest-first strategy. Prints microseconds per completed piece
after a warm-up of 200 pieces (a scan of the pieces in flight per request batch shows up as a per-piece
cost growing as the pieces get smaller).
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import time

from torrentcore import bencode
from torrentcore.bitfield import Bitfield
from torrentcore.metainfo import parse
from torrentcore.piecemanager import PieceManager
from torrentcore_plugins.rarest_first import RarestFirst

#: (pieces, piece length)
CASES = ((4096, 256 << 10), (16384, 64 << 10), (65536, 16 << 10), (102400, 16 << 10))
WARMUP = 200
VERIFY_QUEUE = 64
ARRIVALS_PER_ROUND = 32


def run(n: int, piece_length: int, measure: int) -> float:
    """Microseconds per completed piece over ``measure`` pieces after the warm-up."""
    info = {b"name": b"t", b"piece length": piece_length, b"pieces": b"\0" * 20 * n, b"length": piece_length * n}
    pm = PieceManager(parse(bencode.encode({b"info": info})), Bitfield(n), RarestFirst(n, random.Random(1)))
    seed = Bitfield.full(n)
    pm.add_peer_pieces(seed)
    requested: collections.deque = collections.deque()
    verifying: collections.deque = collections.deque()
    done, t0 = 0, 0.0
    for _ in range(100 * n):  # bounded: each round delivers up to 32 blocks
        requested.extend(pm.next_requests("seed", seed, 64))
        for _ in range(ARRIVALS_PER_ROUND):
            if not requested:
                break
            index, begin, length = requested.popleft()
            pm.block_buffer(index, begin, length)
            _others, piece = pm.block_received("seed", index, begin)
            if piece is not None:
                verifying.append(index)
        while len(verifying) > VERIFY_QUEUE or (verifying and not requested):
            pm.piece_verified(verifying.popleft())
            done += 1
            if done == WARMUP:
                t0 = time.perf_counter()
            elif done == WARMUP + measure:
                return (time.perf_counter() - t0) / measure * 1e6
    raise RuntimeError("the download did not finish")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--measure", type=int, default=20000, help="pieces timed per case (fewer if smaller)")
    args = ap.parse_args()
    print("| pieces | piece KiB | us/piece | us/block |")
    print("|---:|---:|---:|---:|")
    for n, pl in CASES:
        us = run(n, pl, min(args.measure, n - 2 * WARMUP))
        print(f"| {n} | {pl >> 10} | {us:.1f} | {us / (pl // 16384):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
