"""The picker's pieces in flight: ``PieceManager.partial_open`` and rarest-first's parked pieces.

Correctness only (benchmarks/large_torrent.py measures the cost): started pieces with a free block are
exactly ``partial_open``; pieces in flight leave rarest-first's scan and come back when they fail; the
order stays rarest first through random requests, releases, deliveries, failures and HAVEs.
"""

from __future__ import annotations

import random

from torrentcore import bencode, metainfo
from torrentcore.bitfield import Bitfield
from torrentcore.piecemanager import PieceManager
from torrentcore_plugins.rarest_first import RarestFirst

BLOCK = 16384


def meta(num_pieces: int, piece_length: int):
    info = {b"name": b"t", b"piece length": piece_length, b"pieces": b"\x00" * 20 * num_pieces,
            b"length": piece_length * num_pieces}
    return metainfo.parse(bencode.encode({b"info": info}))


def bits(n, idx):
    bf = Bitfield(n)
    for i in idx:
        bf.set(i)
    return bf


def check_open(pm: PieceManager) -> None:
    assert set(pm.partial_open) == {i for i, p in pm.partial.items() if p.free}
    assert all(pm.partial_open[i] is pm.partial[i] for i in pm.partial_open)


def check_order(strategy: RarestFirst, pm: PieceManager) -> None:
    order, pos, bound, level = strategy._order, strategy._pos, strategy._bound, strategy._level
    assert sorted(order) == list(range(pm.num_pieces))
    assert all(pos[i] == p for p, i in enumerate(order))
    assert level == pm.availability.counts  # kept for gone pieces too (a parked one may come back)
    for b in range(len(bound) - 1):
        assert all(level[order[p]] == b for p in range(bound[b], bound[b + 1]))
    assert bound[-1] == len(order)


def receive(pm: PieceManager, peer, block) -> object:
    index, begin, length = block
    view = pm.block_buffer(index, begin, length)
    assert view is not None
    _others, piece = pm.block_received(peer, index, begin)
    return piece


def test_partial_open_follows_requests_releases_and_deliveries():
    pm = PieceManager(meta(8, 4 * BLOCK), bits(8, range(4)), RarestFirst(8, random.Random(3)))
    pm.add_peer_pieces(Bitfield.full(8))
    first = pm.next_requests("a", Bitfield.full(8), 2)  # half of one piece
    (piece,) = {b[0] for b in first}
    assert list(pm.partial_open) == [piece]
    rest = pm.next_requests("b", Bitfield.full(8), 2)  # the other half: fully requested
    assert {b[0] for b in rest} == {piece} and not pm.partial_open
    pm.release("b", rest[:1])
    assert list(pm.partial_open) == [piece]
    check_open(pm)
    again = pm.next_requests("c", Bitfield.full(8), 1)
    assert again == rest[:1] and not pm.partial_open
    for peer, blocks in (("a", first), ("b", rest[1:]), ("c", again)):
        for block in blocks:
            done = receive(pm, peer, block)
    assert done is not None and piece in pm.verifying and not pm.partial_open


def test_a_failed_one_block_piece_that_left_the_scan_is_requested_again():
    n = 64
    strategy = RarestFirst(n, random.Random(5))
    pm = PieceManager(meta(n, BLOCK), bits(n, range(4)), strategy)
    pm.add_peer_pieces(Bitfield.full(n))
    everything = pm.next_requests("a", Bitfield.full(n), 1000)
    assert sorted(b[0] for b in everything) == list(range(4, n))
    assert pm.next_requests("a", Bitfield.full(n), 100) == []  # all in flight (each left the scan once met)
    victim = everything[0]
    assert receive(pm, "a", victim) is not None
    pm.piece_failed(victim[0])
    assert pm.next_requests("a", Bitfield.full(n), 100) == [victim]  # (another peer: endgame duplicates too)
    check_order(strategy, pm)


def test_random_operations_keep_the_order_rarest_first():
    rng = random.Random(11)
    n = 300
    strategy = RarestFirst(n, random.Random(7))
    pm = PieceManager(meta(n, 2 * BLOCK), bits(n, range(6)), strategy)
    peers = {f"p{k}": bits(n, (i for i in range(n) if rng.random() < 0.5)) for k in range(6)}
    for has in peers.values():
        pm.add_peer_pieces(has)
    asked: dict[str, list] = {p: [] for p in peers}
    for step in range(3000):
        peer = rng.choice(list(peers))
        op = rng.random()
        if op < 0.4:
            got = pm.next_requests(peer, peers[peer], rng.randint(32, 64))
            unstarted = [b[0] for b in got if b[0] not in {x[0] for x in sum(asked.values(), [])}]
            if unstarted:  # the first new piece is as rare as any wanted unstarted piece the peer has
                first = unstarted[0]
                rarest = min(pm.availability[i] for i in range(n)
                             if peers[peer][i] and pm.wanted(i) and (i not in pm.partial or i == first))
                assert pm.availability[first] == rarest
            asked[peer].extend(got)
        elif op < 0.5 and asked[peer]:
            k = rng.randint(1, len(asked[peer]))
            pm.release(peer, asked[peer][:k])
            del asked[peer][:k]
        elif op < 0.9 and asked[peer]:
            block = asked[peer].pop(rng.randrange(len(asked[peer])))
            if pm.block_buffer(*block) is not None:
                _others, piece = pm.block_received(peer, block[0], block[1])
                if piece is not None:
                    for other in asked.values():  # the engine cancels duplicates (endgame)
                        other[:] = [b for b in other if b[0] != piece.index]
                    if rng.random() < 0.15:
                        pm.piece_failed(piece.index)
                    else:
                        pm.piece_verified(piece.index)
        else:  # a HAVE
            missing = [i for i in range(n) if not peers[peer][i]]
            if missing:
                i = rng.choice(missing)
                peers[peer].set(i)
                pm.add_peer_piece(i)
        check_open(pm)
        if step % 100 == 0 and strategy._built_for is not None:
            check_order(strategy, pm)
        if pm.complete:
            break
    # finish: every piece is reachable (nothing parked for good while wanted)
    for peer in peers:
        pm.release(peer, asked[peer])
    seed = Bitfield.full(n)
    pm.add_peer_pieces(seed)
    for _ in range(10 * n):
        if pm.complete:
            break
        for block in pm.next_requests("seed", seed, 64):
            piece = receive(pm, "seed", block)
            if piece is not None:
                pm.piece_verified(piece.index)
    assert pm.complete and pm.have.count == n
    check_order(strategy, pm)
