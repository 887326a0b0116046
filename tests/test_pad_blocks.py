"""Blocks wholly inside pad files (BEP 47) are never requested: their bytes are zeros, known without asking.

A hybrid made by libtorrent pads every file to the next piece boundary; torrentcore downloads it from a
libtorrent seeder, byte-exact, and the seeder's own count of the blocks it uploaded (``block_uploaded_alert``)
shows that no block made only of padding was asked for. Blocks partly padded are requested whole, as
libtorrent does (see :mod:`torrentcore.pad_blocks`). Payload: under 1 MiB.
"""

from __future__ import annotations

import os

from realpeers import LibtorrentPeer, assert_same_tree, make_payload
from test_v2_interop import lt_torrent
from torrentcore_cli import torrentcore_factory  # noqa: F401  (fixture "torrentcore")

from torrentcore.bitfield import Bitfield
from torrentcore.create import create_torrent
from torrentcore.pad_blocks import pad_blocks
from torrentcore.piecemanager import PieceManager

KiB = 1024
BLOCK = 16 * KiB
#: Pad files of 1, 2 and 3 whole blocks (and a partly padded block before each) at 64 KiB pieces.
TREE = {"a.bin": 100_000, "b.bin": 70_000, "c.bin": 150_000, "d.bin": 30_000}


def _pad_ranges(meta) -> list[tuple[int, int]]:
    return [(f.offset, f.offset + f.length) for f in meta.files if f.pad and f.length]


def _is_pad(meta, lo: int, hi: int) -> bool:
    """Whether torrent bytes [lo, hi) are all inside pad files (an independent byte-range check)."""
    covered = 0
    for a, b in _pad_ranges(meta):
        covered += max(0, min(b, hi) - max(a, lo))
    return covered == hi - lo


def _every_block(meta):
    for index in range(meta.num_pieces):
        size = meta.piece_size(index)
        for begin in range(0, size, BLOCK):
            yield index, begin, min(BLOCK, size - begin)


class _InOrder:
    def next_pieces(self, swarm, peer_has):
        return iter(range(swarm.num_pieces))


def test_pad_blocks_are_received_as_zeros_and_never_handed_out(tmp_path):
    root = make_payload(tmp_path / "seed", TREE, seed=21)
    _, meta = create_torrent(str(root), [], piece_length=64 * KiB, kind="hybrid")
    plen = meta.piece_length
    expected = {}
    for index, begin, length in _every_block(meta):
        lo = index * plen + begin
        if _is_pad(meta, lo, lo + length):
            expected.setdefault(index, []).append(begin // BLOCK)
    assert sum(map(len, expected.values())) >= 6, expected  # the layout has whole pad blocks to skip
    assert pad_blocks(meta) == {i: tuple(b) for i, b in expected.items()}

    have = Bitfield(meta.num_pieces)
    manager = PieceManager(meta, have, _InOrder())
    manager._spare = [bytearray(b"\xff" * plen) for _ in range(meta.num_pieces)]  # dirty reused buffers
    seed = Bitfield(meta.num_pieces)
    for i in range(meta.num_pieces):
        seed.set(i)
    asked = manager.next_requests("peer", seed, 10_000)
    for index, begin, length in asked:
        lo = index * plen + begin
        assert not _is_pad(meta, lo, lo + length), (index, begin, length)
        assert length == min(BLOCK, meta.piece_size(index) - begin)  # partly padded blocks: asked whole
    assert len(asked) == sum(1 for _ in _every_block(meta)) - sum(map(len, expected.values()))
    stream = b"".join(
        bytes(f.length) if f.pad else (tmp_path / "seed" / os.path.join(*f.path)).read_bytes() for f in meta.files)
    done = []
    for index, begin, length in asked:
        start = index * plen + begin
        manager.block_buffer(index, begin, length)[:] = stream[start : start + length]
        _, piece = manager.block_received("peer", index, begin)
        if piece is not None:
            assert meta.piece_ok(index, piece.buffer), index  # both hashes pass: the pad zeros are there
            done.append(index)
    assert sorted(done) == list(range(meta.num_pieces))


def test_hybrid_from_libtorrent_skips_pad_blocks(tmp_path, torrentcore):
    root = make_payload(tmp_path / "seed", TREE, seed=22)
    torrent = tmp_path / "x.torrent"
    meta = lt_torrent(root, torrent, "hybrid", piece_length=64 * KiB)
    plen = meta.piece_length
    pad_bytes = sum(length for index, begin, length in _every_block(meta)
                    if _is_pad(meta, index * plen + begin, index * plen + begin + length))
    assert pad_bytes >= 4 * BLOCK
    with LibtorrentPeer(name="lt-seeder") as seeder:
        seeder.add_torrent(torrent, tmp_path / "seed", seed=True)
        proc = torrentcore.run(torrent, tmp_path / "dl", peers=[seeder.endpoint])
        assert proc.wait(60) == 0, proc.describe()
        uploaded = sum(t["uploaded"] for t in seeder.transfers())
    assert_same_tree(root, tmp_path / "dl" / os.path.basename(root))
    # The pad files are not on disk either (the storage skips them).
    assert not any(".pad" in dirs for _, dirs, _ in os.walk(tmp_path / "dl"))
    # One peer: no endgame duplicates, so every block asked for was uploaded once; none was padding only.
    assert meta.data_length <= uploaded <= meta.total_length - pad_bytes, (uploaded, meta.total_length, pad_bytes)
