"""Piece picker cost: the rarest-first strategy plus the piece manager's request path, at 1k to 100k pieces.

    python benchmarks/picker.py                      # 1k, 10k, 100k pieces, both scenarios
    python benchmarks/picker.py --pieces 1000,16384 --json -

No network and no disk: a real :class:`~torrentcore.metainfo.Metainfo` (parsed from bencoded bytes
with all-zero piece hashes), the real :class:`~torrentcore.piecemanager.PieceManager` and the
installed ``rarest-first`` strategy. Simulated peers ask for blocks the way
``Peer.fill_requests`` does (``next_requests`` with room for 64 blocks), every block "arrives" at once
(``block_buffer`` + ``block_received``) and every complete piece is marked verified. Two scenarios:

* ``seeders``: 8 peers that have every piece;
* ``swarm``: 4 seeders plus 16 leechers holding a random half of the pieces, and for every piece we
  complete one leecher announces a new piece (a HAVE), as in a live swarm.

A third, ``--scenario churn`` (see :func:`churn`), times seeds joining and leaving and single HAVEs as
stalls of the event loop: ``python benchmarks/picker.py --scenario churn --pieces 100000,2000000``.

After 16 pieces of warm-up (the random first pieces), each run times ``--measure`` pieces (default
2,000; fewer if the torrent is smaller; ``--measure 0`` for the whole download), so the
figure to compare across sizes is microseconds per completed piece: it should stay flat as the
piece count grows (a cost that grows with the square of the piece count shows up here as a
per-piece cost growing linearly with it). Set-up (building the manager and the strategy, adding
the peers' bitfields) is reported separately, per piece.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from common import write_json

from torrentcore import bencode, piecemanager
from torrentcore.bitfield import Bitfield
from torrentcore.hookspec import BLOCK_SIZE
from torrentcore.metainfo import parse
from torrentcore.piecemanager import PieceManager
from torrentcore_plugins.rarest_first import RarestFirst

PIPELINE = 64
#: Pieces completed before the clock starts (rarest-first fetches its first few pieces at random).
WARMUP = 16


def make_meta(num_pieces: int, piece_length: int):
    """A parsed single-file torrent of ``num_pieces`` pieces (hashes all zero; nothing is hashed here)."""
    info = {b"name": b"picker.bin", b"piece length": piece_length, b"length": num_pieces * piece_length,
            b"pieces": bytes(20 * num_pieces)}
    return parse(bencode.encode({b"announce": b"http://127.0.0.1:1/announce", b"info": info}))


def full_bitfield(n: int) -> Bitfield:
    """Every piece set (built from bytes: ``Bitfield.full`` sets bit by bit)."""
    data = bytearray(b"\xff" * ((n + 7) // 8))
    if n % 8:
        data[-1] = (0xFF << (8 - n % 8)) & 0xFF
    return Bitfield(n, bytes(data))


def run(num_pieces: int, scenario: str, measure: int, piece_length: int, seed: int = 1) -> dict:
    """One simulated download; return timings."""
    rng = random.Random(seed)
    t0 = time.perf_counter()
    meta = make_meta(num_pieces, piece_length)
    have = Bitfield(num_pieces)
    manager = PieceManager(meta, have, RarestFirst(num_pieces, rng))
    peers: dict[str, Bitfield] = {}
    for k in range(8 if scenario == "seeders" else 4):
        peers[f"seed{k}"] = full_bitfield(num_pieces)
    leechers = []
    if scenario == "swarm":
        for k in range(16):
            bf = Bitfield(num_pieces)
            for i in rng.sample(range(num_pieces), num_pieces // 2):
                bf.set(i)
            peers[f"leech{k}"] = bf
            leechers.append(f"leech{k}")
    for bf in peers.values():
        manager.add_peer_pieces(bf)
    setup = time.perf_counter() - t0

    names = list(peers)
    state = {"turn": 0, "done": 0, "blocks": 0}

    def step() -> None:
        """One peer asks for a pipeline of blocks; they all arrive; complete pieces are verified."""
        name = names[state["turn"] % len(names)]
        state["turn"] += 1
        for index, begin, length in manager.next_requests(name, peers[name], PIPELINE):
            state["blocks"] += 1
            if manager.block_buffer(index, begin, length) is None:
                continue
            _others, piece = manager.block_received(name, index, begin)
            if piece is None:
                continue
            manager.piece_verified(index)
            manager.recycle(piece)
            state["done"] += 1
            if leechers:  # a leecher got a new piece somewhere in the swarm and tells us
                lbf = peers[leechers[state["done"] % len(leechers)]]
                for _ in range(8):
                    i = rng.randrange(num_pieces)
                    if lbf.set(i):
                        manager.add_peer_piece(i)
                        break

    # Warm-up, untimed: the random first pieces, then a few calls so the rarest-first order is built.
    calls = 0
    while state["done"] < min(WARMUP, num_pieces // 4) or calls < len(names):
        step()
        calls += 1
    first_done, first_blocks = state["done"], state["blocks"]
    target = min(first_done + measure, num_pieces) if measure else num_pieces
    calls = 0
    t1 = time.perf_counter()
    while state["done"] < target:
        step()
        calls += 1
        if calls > 50 * num_pieces + 1000:
            raise RuntimeError(f"no progress: {state['done']} pieces after {calls} calls")
    elapsed = time.perf_counter() - t1
    done, blocks = state["done"] - first_done, state["blocks"] - first_blocks
    return {
        "pieces": num_pieces, "scenario": scenario, "measured_pieces": done, "blocks": blocks,
        "request_calls": calls,
        "us_per_piece": round(elapsed / done * 1e6, 1),
        "us_per_call": round(elapsed / calls * 1e6, 1),
        "setup_us_per_piece": round(setup / num_pieces * 1e6, 2),
        "seconds": round(elapsed, 3),
    }


def _fetch(manager: PieceManager, name: str, has: Bitfield, count: int) -> None:
    """One request of ``count`` blocks; they all arrive and complete pieces are verified (as in ``run``)."""
    for index, begin, length in manager.next_requests(name, has, count):
        if manager.block_buffer(index, begin, length) is None:
            continue
        _others, piece = manager.block_received(name, index, begin)
        if piece is not None:
            manager.piece_verified(index)
            manager.recycle(piece)


def churn(num_pieces: int, events: int, seeds: int = 20, haves: int | None = None, seed: int = 1) -> dict:
    """Seeds joining and leaving a torrent of ``num_pieces`` pieces, and leechers' HAVEs, as stalls.

    ``seeds`` seeds and 4 leechers (a random half each) are connected, past the random first pieces. Then
    ``events`` times: a seed leaves (``remove_peer_pieces``), another seed asks for blocks, a new seed joins
    (``Bitfield.full`` + ``add_peer_pieces``) and asks: each event and the request after it is one stall,
    reported as its mean and maximum in ms (the event loop does nothing else meanwhile). Then ``haves``
    HAVEs from the leechers (``add_peer_piece``, a request after every 100; by default
    ``num_pieces // 8 + 100``, enough for the piece manager's ``version`` to move once): microseconds per
    HAVE, and the longest stall of one HAVE (with its request, if any).
    ``full_ms``: one ``Bitfield.full(num_pieces)``; ``first_ms``: the first request (builds the order).
    """
    rng = random.Random(seed)
    meta = make_meta(num_pieces, 4 * BLOCK_SIZE)
    have = Bitfield(num_pieces)
    for i in range(WARMUP):
        have.set(i)
    manager = PieceManager(meta, have, RarestFirst(num_pieces, rng))
    peers = {f"seed{k}": full_bitfield(num_pieces) for k in range(seeds)}
    leechers = []
    for k in range(4):
        bf = Bitfield(num_pieces)
        for i in rng.sample(range(num_pieces), num_pieces // 2):
            bf.set(i)
        peers[f"leech{k}"] = bf
        leechers.append(bf)
    for bf in peers.values():
        manager.add_peer_pieces(bf)
    t0 = time.perf_counter()
    _fetch(manager, "seed0", peers["seed0"], PIPELINE)  # the first order is built outside the stalls
    first_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    Bitfield.full(num_pieces)
    full_ms = (time.perf_counter() - t0) * 1e3
    stalls = []
    for k in range(events):
        name = f"seed{k % seeds}"
        t0 = time.perf_counter()
        manager.remove_peer_pieces(peers.pop(name))
        other = f"seed{(k + 1) % seeds}"
        _fetch(manager, other, peers[other], PIPELINE)
        t1 = time.perf_counter()
        peers[name] = Bitfield.full(num_pieces)
        manager.add_peer_pieces(peers[name])
        _fetch(manager, name, peers[name], PIPELINE)
        t2 = time.perf_counter()
        stalls += [t1 - t0, t2 - t1]
    spent = worst = 0.0
    haves = num_pieces // 8 + 100 if haves is None else haves
    for k in range(haves):
        bf = leechers[k % len(leechers)]
        for _ in range(8):
            i = rng.randrange(num_pieces)
            if bf.set(i):
                t0 = time.perf_counter()
                manager.add_peer_piece(i)
                if k % 100 == 99:
                    _fetch(manager, "seed0", peers["seed0"], PIPELINE)
                took = time.perf_counter() - t0
                spent += took
                worst = max(worst, took)
                break
    per_have = spent / max(1, haves)
    return {"pieces": num_pieces, "scenario": "churn", "events": len(stalls),
            "stall_mean_ms": round(sum(stalls) / len(stalls) * 1e3, 2), "stall_max_ms": round(max(stalls) * 1e3, 2),
            "us_per_have": round(per_have * 1e6, 1), "have_stall_max_ms": round(worst * 1e3, 2),
            "full_ms": round(full_ms, 2), "first_ms": round(first_ms, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pieces", default="1000,10000,100000", help="comma-separated piece counts")
    ap.add_argument("--scenario", action="append", choices=["seeders", "swarm", "churn"],
                    help="default: seeders and swarm; churn: seeds joining and leaving (see churn())")
    ap.add_argument("--events", type=int, default=10, help="churn: seeds leaving and joining again")
    ap.add_argument("--measure", type=int, default=2000, help="completed pieces timed per run")
    ap.add_argument("--piece-length", type=int, default=4 * BLOCK_SIZE, help="bytes (default 64 KiB)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON ('-' for stdout)")
    ap.add_argument("--haves-per-version", type=int, default=None,
                    help="override piecemanager.HAVES_PER_VERSION (a huge value = one rebuild per HAVE, the old "
                         "behaviour, for before/after comparisons)")
    args = ap.parse_args()
    if args.haves_per_version:
        piecemanager.HAVES_PER_VERSION = args.haves_per_version
    rows = []
    print("| scenario | pieces | measured | us/piece | us/request call | set-up us/piece |")
    print("|---|---:|---:|---:|---:|---:|")
    for scenario in args.scenario or ["seeders", "swarm"]:
        for n in (int(x) for x in args.pieces.split(",")):
            if scenario == "churn":
                r = churn(n, args.events)
                rows.append(r)
                print(f"| churn | {n} | {r['events']} seed joins/leaves | stall mean {r['stall_mean_ms']:.1f} ms, "
                      f"max {r['stall_max_ms']:.1f} ms | {r['us_per_have']:.1f} us per HAVE, longest "
                      f"{r['have_stall_max_ms']:.1f} ms | "
                      f"Bitfield.full {r['full_ms']:.1f} ms | first request {r['first_ms']:.0f} ms |", flush=True)
                continue
            r = run(n, scenario, args.measure, args.piece_length)
            rows.append(r)
            print(f"| {scenario} | {n} | {r['measured_pieces']} | {r['us_per_piece']:.0f} | {r['us_per_call']:.0f} "
                  f"| {r['setup_us_per_piece']:.1f} |", flush=True)
    if args.json:
        write_json(rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
