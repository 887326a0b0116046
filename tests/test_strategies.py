"""The built-in strategies: ``sequential`` (an in-order read-ahead window, rarest first beyond it) and ``random``.

Unit tests drive the real piece manager with each strategy (no network); an end-to-end test downloads the same
torrent from a rate-limited libtorrent seeder with ``sequential``, ``rarest-first`` and ``random`` and compares
the order in which pieces were verified (recorded by a reporter plugin given with ``--plugin``).
"""

from __future__ import annotations

import random
import textwrap

import pytest
from realpeers import (
    assert_same_tree,
    make_payload,
    make_torrent,
    peers_fixture,  # noqa: F401  (fixture "peers")
)

from torrentcore import bencode, metainfo
from torrentcore.bitfield import Bitfield
from torrentcore.config import TorrentConfig
from torrentcore.errors import BadInputError
from torrentcore.piecemanager import PieceManager
from torrentcore_plugins import rarest_first as strategies
from torrentcore_plugins.rarest_first import RandomOrder, RarestFirst, Sequential, window_pieces

PL = 4 * 16384  # four blocks per piece


def meta(num_pieces: int) -> metainfo.Metainfo:
    info = {b"name": b"t", b"piece length": PL, b"pieces": b"\x00" * 20 * num_pieces, b"length": PL * num_pieces}
    return metainfo.parse(bencode.encode({b"info": info}))


def bits(n: int, idx) -> Bitfield:
    bf = Bitfield(n)
    for i in idx:
        bf.set(i)
    return bf


def piece_order(blocks) -> list[int]:
    """Pieces in the order their first block was requested."""
    seen: list[int] = []
    for index, _, _ in blocks:
        if index not in seen:
            seen.append(index)
    return seen


def drain(pm: PieceManager, peer="a", has: Bitfield | None = None) -> list[int]:
    """Request everything the strategy offers to one peer; the pieces in request order."""
    has = has or Bitfield.full(pm.num_pieces)
    return piece_order(pm.next_requests(peer, has, 100_000))


# --------------------------------------------------------------------------------------------------
# sequential
# --------------------------------------------------------------------------------------------------


def test_sequential_window_in_order_then_rarest_first():
    n = 40
    pm = PieceManager(meta(n), bits(n, [0, 1, 2, 3, 10]), Sequential(window=4, rng=random.Random(1)))
    pm.add_peer_pieces(Bitfield.full(n))
    pm.add_peer_pieces(bits(n, [i for i in range(n) if i != 30]))  # piece 30 is the rarest
    order = drain(pm)
    assert order[:4] == [4, 5, 6, 7], order  # the window: from the first missing piece, strictly in order
    assert order[4] == 30, order  # beyond the window: rarest first
    assert sorted(order) == sorted(set(range(n)) - {0, 1, 2, 3, 10})
    assert order[5:] != sorted(order[5:]), "beyond the window the order is rarity, then random ties"


def test_sequential_window_starts_at_the_first_missing_piece_and_moves():
    n = 30
    have = Bitfield(n)
    pm = PieceManager(meta(n), have, Sequential(window=3, rng=random.Random(2)))
    pm.add_peer_pieces(Bitfield.full(n))
    first = pm.next_requests("a", Bitfield.full(n), 3 * 4)  # exactly the window's blocks
    assert piece_order(first) == [0, 1, 2]
    # Piece 0 arrives and verifies: the window becomes 1..3, and piece 3 is next for a second peer.
    for blk in [b for b in first if b[0] == 0]:
        pm.block_buffer(*blk)[:] = bytes(blk[2])
        pm.block_received("a", blk[0], blk[1])
    pm.piece_verified(0)
    assert piece_order(pm.next_requests("b", Bitfield.full(n), 4)) == [3]


def test_sequential_window_counts_only_selected_pieces_and_refetches_a_failed_piece():
    n = 20
    selected = bits(n, [i for i in range(n) if i not in (5, 6)])
    pm = PieceManager(meta(n), bits(n, [0, 1, 2, 3]), Sequential(window=4, rng=random.Random(3)), selected)
    pm.add_peer_pieces(Bitfield.full(n))
    order = drain(pm)
    assert order[:4] == [4, 7, 8, 9], order
    assert 5 not in order and 6 not in order
    # Piece 4 completes but fails its hash: it is the first missing piece again and comes first.
    pm2 = PieceManager(meta(n), bits(n, [0, 1, 2, 3]), Sequential(window=4, rng=random.Random(3)), selected)
    pm2.add_peer_pieces(Bitfield.full(n))
    blocks = pm2.next_requests("a", Bitfield.full(n), 4)
    assert piece_order(blocks) == [4]
    for blk in blocks:
        pm2.block_buffer(*blk)[:] = bytes(blk[2])
        _, piece = pm2.block_received("a", blk[0], blk[1])
    assert piece is not None
    pm2.piece_failed(4)
    pm2.partial.clear()
    assert drain(pm2, "b")[:4] == [4, 7, 8, 9]


def test_window_size_from_the_setting():
    assert window_pieces(8 * 1024 * 1024, 64 * 1024) == 128
    assert window_pieces(100, 64 * 1024) == 1 and window_pieces(0, 16384) == 1
    torrent = meta(10)
    default = strategies._sequential(torrent, TorrentConfig())
    assert default.window == window_pieces(strategies.SEQUENTIAL_WINDOW, PL)
    opts = TorrentConfig(plugin_settings={"sequential": {"window": "256k"}})
    assert strategies._sequential(torrent, opts).window == 4
    with pytest.raises(BadInputError, match="sequential.window"):
        strategies._sequential(torrent, TorrentConfig(plugin_settings={"sequential": {"window": "big"}}))


# --------------------------------------------------------------------------------------------------
# random, and the selection for every strategy
# --------------------------------------------------------------------------------------------------


def test_random_is_random_among_the_peers_pieces_and_finishes_started_ones_first():
    n = 50
    orders = set()
    for seed in range(5):
        pm = PieceManager(meta(n), Bitfield(n), RandomOrder(n, random.Random(seed)))
        pm.add_peer_pieces(Bitfield.full(n))
        orders.add(tuple(drain(pm)))
    assert len(orders) == 5 and all(sorted(o) == list(range(n)) for o in orders)
    pm = PieceManager(meta(n), Bitfield(n), RandomOrder(n, random.Random(9)))
    has = bits(n, range(0, n, 2))
    pm.add_peer_pieces(has)
    first = pm.next_requests("a", has, 2)  # starts one piece, half of it
    started = first[0][0]
    pm.release("a", first)
    order = drain(pm, "b", has)
    assert order[0] == started and set(order) == set(range(0, n, 2)), order


def test_rarest_first_breaks_ties_extent_by_extent():
    """Equally rare pieces come in 4 MiB extents (shuffled, each in order), so a download from seeds finishes
    files as it goes (plugins/_sync_ahead.py syncs each once it is finished) instead of all at the end."""
    n = 42  # the last extent is shorter
    orders = set()
    for seed in range(4):
        pm = PieceManager(meta(n), Bitfield(n), RarestFirst(n, random.Random(seed), extent=4))
        pm.add_peer_pieces(Bitfield.full(n))
        order = drain(pm)
        assert sorted(order) == list(range(n))
        # (the last extent, 40-41, is 2 pieces: the runs after it are shifted by 2)
        cut = order.index(40)
        assert order[cut : cut + 2] == [40, 41]
        rest = order[:cut] + order[cut + 2 :]
        runs = [rest[k : k + 4] for k in range(0, len(rest), 4)]
        assert all(r == list(range(r[0], r[0] + 4)) and r[0] % 4 == 0 for r in runs), order
        orders.add(tuple(order))
    assert len(orders) == 4  # the extents are shuffled per torrent
    # The plugin's factory: 4 MiB extents of the torrent's pieces, at least 16 extents, at least one piece.
    assert strategies.extent_pieces(256 << 10, 4096) == 16 and strategies.extent_pieces(16 << 20, 64) == 1
    assert strategies.extent_pieces(256 << 10, 64) == 4 and strategies.extent_pieces(256 << 10, 8) == 1
    factory = strategies.torrentcore_piece_strategies()["rarest-first"]
    made = drain_new(factory(meta(n), TorrentConfig()), n)  # 42 pieces of 64 KiB: extents of 2
    assert sorted(made) == list(range(n)) and made != list(range(n))
    assert all(made[k + 1] == made[k] + 1 for k in range(0, n, 2)), made


def drain_new(strategy, n: int) -> list[int]:
    pm = PieceManager(meta(n), Bitfield(n), strategy)
    pm.add_peer_pieces(Bitfield.full(n))
    return drain(pm)


@pytest.mark.parametrize("make", [lambda n: RarestFirst(n, random.Random(0)), lambda n: Sequential(3),
                                  lambda n: RandomOrder(n, random.Random(0))],
                         ids=["rarest-first", "sequential", "random"])
def test_no_strategy_requests_an_unselected_piece(make):
    n = 64
    selected = bits(n, list(range(10, 20)) + [40, 63])
    pm = PieceManager(meta(n), Bitfield(n), make(n), selected)
    pm.add_peer_pieces(Bitfield.full(n))
    assert set(drain(pm)) == set(selected.indices())
    assert pm.endgame and not pm.complete


# --------------------------------------------------------------------------------------------------
# End to end: the order pieces are verified in, against a rate-limited libtorrent seeder
# --------------------------------------------------------------------------------------------------

ORDER_PLUGIN = textwrap.dedent(
    '''
    import os
    from torrentcore.hookspec import hookimpl

    @hookimpl
    def torrentcore_on_piece_verified(torrent, index):
        with open(os.environ["ORDER_FILE"], "a") as fh:
            fh.write(f"{index}\\n")
    '''
)


def spearman(order: list[int]) -> float:
    """Rank correlation between when a piece was verified and its index (1.0: perfectly in order)."""
    n = len(order)
    d2 = sum((pos - index) ** 2 for pos, index in enumerate(order))
    return 1 - 6 * d2 / (n * (n * n - 1))


def test_sequential_verifies_low_pieces_first_unlike_rarest_first_and_random(tmp_path, peers, monkeypatch):
    from torrentcore_cli import run_cli

    (tmp_path / "order_plugin.py").write_text(ORDER_PLUGIN)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    root = make_payload(tmp_path / "seed", 12 * 1024 * 1024, seed=12)
    torrent = tmp_path / "t.torrent"
    make_torrent(root, [], piece_length=64 * 1024, out=torrent)  # 192 pieces
    n = 192
    seeder = peers.libtorrent("seeder", ignore_limits_on_local_network=False, upload_rate_limit=4_000_000)
    seeder.add_torrent(torrent, tmp_path / "seed", seed=True)
    def verification_order(strategy: str, attempt: int = 0) -> list[int]:
        order_file = tmp_path / f"{strategy}-{attempt}.order"
        monkeypatch.setenv("ORDER_FILE", str(order_file))
        out = tmp_path / f"{strategy}-{attempt}"
        done = run_cli(["run", str(torrent), "-o", str(out), "--no-seed", "--quiet", "--port", "0",
                        "--peer", f"127.0.0.1:{seeder.port}", "--plugin", "order_plugin", "--strategy", strategy,
                        "--plugin-opt", "sequential.window=2M"], timeout=60)
        assert done.returncode == 0, done.stderr
        assert_same_tree(root, out / "payload", strategy)
        order = [int(x) for x in order_file.read_text().split()]
        assert sorted(order) == list(range(n)), strategy
        return order

    seq = verification_order("sequential")
    # The first requests fill the 32-piece window from piece 0 in order (the pipeline starts at 16 pieces).
    assert max(seq[:16]) < 32, seq

    def looks_sequential(order: list[int]) -> bool:
        """Most of the first 32 pieces verified are the 32 lowest ones."""
        return sum(1 for index in order[:32] if index < 32) > 24

    assert looks_sequential(seq), seq
    for other in ("rarest-first", "random"):
        order = verification_order(other)
        # rarest-first shuffles 16 extents of 12 pieces here (plugins/rarest_first.py, EXTENT_BYTES/MIN_EXTENTS),
        # each in index order: such a shuffle looks sequential by chance in 0.17 % of runs (simulated, 200,000
        # shuffles), twice in a row in about 3 of a million. random shuffles all 192 pieces: practically never.
        if looks_sequential(order):
            order = verification_order(other, attempt=1)
        print(other, "rank correlation of verification order with piece index:", spearman(order),
              "sequential:", spearman(seq))
        assert not looks_sequential(order), (other, order, seq)
