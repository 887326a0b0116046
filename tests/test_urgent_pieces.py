"""Urgent pieces (readers' read-ahead windows) and changing the wanted pieces, in the piece manager.

The real piece manager with each built-in strategy and a third-party one that always wants the last piece:
urgent pieces are handed out first, in window order, whatever the strategy would pick (no network here; the
reader's end-to-end proof against libtorrent is tests/test_reader.py).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from test_strategies import PL, bits, meta

from torrentcore.bitfield import Bitfield
from torrentcore.hookspec import BLOCK_SIZE, PieceStrategy, SwarmView
from torrentcore.piecemanager import ENDGAME_BLOCKS_PER_CALL, URGENT_DUPLICATE_PIECES, PieceManager
from torrentcore_plugins.rarest_first import RandomOrder, RarestFirst, Sequential

BLOCKS = PL // BLOCK_SIZE


class LastPieceFirst:
    """A third-party strategy: the highest missing piece first, always (it knows nothing of urgency)."""

    def next_pieces(self, swarm: SwarmView, peer_has: Bitfield) -> Iterator[int]:
        for i in range(swarm.num_pieces - 1, -1, -1):
            if peer_has[i] and swarm.wanted(i):
                yield i


STRATEGIES = {
    "rarest-first": lambda n: RarestFirst(n, random.Random(1)),
    "sequential": lambda n: Sequential(window=3, rng=random.Random(2)),
    "random": lambda n: RandomOrder(n, random.Random(3)),
    "last-piece": lambda n: LastPieceFirst(),
}


def manager(n: int, strategy: str, have=(), selected: Bitfield | None = None) -> PieceManager:
    pm = PieceManager(meta(n), bits(n, have), STRATEGIES[strategy](n), selected)
    assert isinstance(pm.strategy, PieceStrategy)
    pm.add_peer_pieces(Bitfield.full(n))
    return pm


def pieces_of(blocks) -> list[int]:
    """Pieces in the order their first block was handed out."""
    return list(dict.fromkeys(b[0] for b in blocks))


def deliver(pm: PieceManager, peer, blocks) -> list[int]:
    """Receive ``blocks`` from ``peer``; complete pieces pass their check. The verified pieces."""
    done = []
    for index, begin, length in blocks:
        buf = pm.block_buffer(index, begin, length)
        if buf is None:
            continue
        buf[:] = bytes(length)
        _, piece = pm.block_received(peer, index, begin)
        if piece is not None:
            pm.piece_verified(piece.index)
            pm.recycle(piece)
            done.append(piece.index)
    return done


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_window_comes_first_in_order_under_every_strategy(strategy):
    n = 40
    pm = manager(n, strategy, have=range(6))  # past rarest-first's random start
    pm.set_urgent("reader", [20, 21, 22])
    blocks = pm.next_requests("a", Bitfield.full(n), 3 * BLOCKS + 2)
    assert blocks[: 3 * BLOCKS] == [(i, b * BLOCK_SIZE, BLOCK_SIZE) for i in (20, 21, 22) for b in range(BLOCKS)]
    assert pieces_of(blocks)[3] not in (20, 21, 22), "beyond the window the strategy picks again"
    # A second peer while the window is all requested from the first: the strategy's pieces, plus at most
    # a few duplicates of the window's first pieces.
    more = pm.next_requests("b", Bitfield.full(n), 20)
    dup = [b for b in more if b[0] in (20, 21, 22)]
    assert {b[0] for b in dup} <= {20, 21} and len(dup) == ENDGAME_BLOCKS_PER_CALL
    assert len(more) == 20


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_window_moves_and_is_dropped_when_the_reader_closes(strategy):
    n = 30
    pm = manager(n, strategy, have=range(6))
    pm.set_urgent("reader", [25, 26])
    first = pm.next_requests("a", Bitfield.full(n), 2 * BLOCKS)
    assert pieces_of(first) == [25, 26]
    assert deliver(pm, "a", first) == [25, 26]
    pm.set_urgent("reader", [10, 11])  # the reader seeked
    assert pieces_of(pm.next_requests("a", Bitfield.full(n), 2 * BLOCKS)) == [10, 11]
    pm.set_urgent("reader", [12])
    pm.clear_urgent("reader")
    assert pm.urgent == []
    picked = pieces_of(pm.next_requests("a", Bitfield.full(n), BLOCKS))
    expected = {"last-piece": [29], "sequential": [6]}
    if strategy in expected:
        assert picked == expected[strategy], "after close the strategy alone decides"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_several_windows_are_served_in_turn(strategy):
    n = 50
    pm = manager(n, strategy, have=range(6))
    pm.set_urgent("r1", [10, 11, 12])
    pm.set_urgent("r2", [40, 41])
    assert pm.urgent == [10, 40, 11, 41, 12]
    assert pieces_of(pm.next_requests("a", Bitfield.full(n), 5 * BLOCKS)) == [10, 40, 11, 41, 12]
    pm.set_urgent("r3", [11, 30])  # a piece shared by two windows is requested once
    assert pm.urgent == [10, 40, 11, 41, 30, 12]
    pm.clear_urgent("r1")
    assert pm.urgent == [40, 11, 41, 30]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_only_pieces_the_peer_has_and_verified_ones_are_skipped(strategy):
    n = 20
    pm = manager(n, strategy, have=[*range(6), 9])
    pm.set_urgent("reader", [8, 9, 10, 11])
    has = bits(n, [10, 11, 15])
    blocks = pm.next_requests("a", has, 3 * BLOCKS)
    assert pieces_of(blocks)[:2] == [10, 11] and {b[0] for b in blocks} <= {10, 11, 15}
    assert 8 not in pm.partial, "the peer lacks piece 8: not started for it"
    assert pieces_of(pm.next_requests("b", Bitfield.full(n), BLOCKS)) == [8]


def test_duplicates_only_for_the_head_of_a_window_once_it_is_all_requested():
    n = 20
    pm = manager(n, "last-piece")
    pm.add_peer_pieces(Bitfield.full(n))
    pm.set_urgent("reader", [3, 4, 5])
    a = pm.next_requests("a", Bitfield.full(n), 3 * BLOCKS)
    assert pieces_of(a) == [3, 4, 5]
    b = pm.next_requests("b", Bitfield.full(n), 2 * BLOCKS)
    dups = [blk for blk in b if blk[0] in (3, 4, 5)]
    assert dups == a[:ENDGAME_BLOCKS_PER_CALL], "the first blocks of the window's first pieces, again"
    assert pieces_of(b)[-1] == 19, "then the strategy's own choice"
    assert URGENT_DUPLICATE_PIECES == 2
    c = pm.next_requests("b", Bitfield.full(n), 3 * BLOCKS)
    dups_c = [blk for blk in c if blk[0] in (3, 4, 5)]
    assert {blk[0] for blk in dups_c} <= {3, 4} and not set(dups_c) & set(dups)
    # Each block is asked of at most two peers; a block received from one is cancelled at the other.
    for blk in pm.next_requests("c", Bitfield.full(n), 3 * BLOCKS):
        assert blk[0] not in (3, 4, 5) or blk not in a[: 2 * BLOCKS]
    pm.block_buffer(3, 0, BLOCK_SIZE)[:] = bytes(BLOCK_SIZE)
    others, _ = pm.block_received("b", 3, 0)
    assert others == ["a"], "the duplicate asked of peer a is cancelled"
    # No duplicates while the window still has a free block for this peer.
    pm2 = manager(n, "last-piece")
    pm2.add_peer_pieces(Bitfield.full(n))
    pm2.set_urgent("reader", [3, 4, 5])
    pm2.next_requests("a", Bitfield.full(n), BLOCKS)
    assert pieces_of(pm2.next_requests("b", Bitfield.full(n), BLOCKS)) == [4]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_unwanted_urgent_pieces_wait_for_the_selection(strategy):
    n = 20
    selected = bits(n, range(10))
    pm = manager(n, strategy, have=range(6), selected=selected)
    pm.set_urgent("reader", [15, 16])
    assert not {15, 16} & set(pieces_of(pm.next_requests("a", Bitfield.full(n), 2 * BLOCKS)))
    pm.set_wanted(bits(n, range(20)))
    assert pm.selected is not selected and not pm.complete
    assert pieces_of(pm.next_requests("b", Bitfield.full(n), 2 * BLOCKS)) == [15, 16]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_set_wanted_keeps_pieces_in_flight_and_strategies_see_new_pieces(strategy):
    n = 16
    pm = manager(n, strategy, have=range(6), selected=bits(n, range(8)))
    started = pm.next_requests("a", Bitfield.full(n), BLOCKS + 1)  # one piece whole, one begun
    in_flight = set(pieces_of(started))
    assert in_flight <= set(range(6, 8))
    pm.set_wanted(bits(n, range(12, 16)))  # the old selection is dropped: in-flight pieces stay wanted
    assert all(pm.selected[i] for i in in_flight)
    assert deliver(pm, "a", started) == [pieces_of(started)[0]]
    rest = pieces_of(pm.next_requests("a", Bitfield.full(n), 1000))
    assert set(rest) == (set(range(12, 16)) | in_flight) - set(pm.have.indices()), rest
    assert not pm.complete
    for index in list(pm.partial):
        deliver(pm, "a", [(index, b * BLOCK_SIZE, BLOCK_SIZE) for b in range(BLOCKS)])
    assert pm.complete, (pm.partial, list(pm.have.indices()))


def test_set_wanted_none_wants_everything_and_keeps_the_counts():
    n = 10
    pm = manager(n, "sequential", have=[0, 1], selected=bits(n, [0, 1, 2]))
    blocks = pm.next_requests("a", Bitfield.full(n), BLOCKS)
    assert pieces_of(blocks) == [2]
    deliver(pm, "a", blocks)
    assert pm.complete
    pm.set_wanted(None)
    assert pm.selected is None and not pm.complete
    order = pieces_of(pm.next_requests("a", Bitfield.full(n), 1000))
    assert order[:3] == [3, 4, 5] and sorted(order) == list(range(3, 10))
    with pytest.raises(ValueError):
        pm.set_wanted(Bitfield(n + 1))
