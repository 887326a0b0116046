"""A v1 piece's SHA-1 is fed on the event loop as its blocks arrive in order (piecemanager.HASH_RUN); the
verdict (Metainfo.piece_ok with the fed SHA-1, in the verifier) is the same as hashing the whole piece: a
good piece passes, one wrong byte anywhere fails, out of order or in order."""

from __future__ import annotations

import hashlib
import random

import pytest

from torrentcore import bencode, metainfo
from torrentcore.bitfield import Bitfield
from torrentcore.create import create_torrent
from torrentcore.hookspec import BLOCK_SIZE
from torrentcore.piecemanager import HASH_RUN, PieceManager
from torrentcore_plugins.rarest_first import Sequential

PL = 16 * BLOCK_SIZE  # 256 KiB pieces: four runs of HASH_RUN


def _torrent(num_pieces: int, last: int = PL, seed: int = 1) -> tuple[metainfo.Metainfo, list[bytes]]:
    """A v1 torrent of random pieces (the last one ``last`` bytes), and the pieces."""
    rnd = random.Random(seed)
    pieces = [rnd.randbytes(PL) for _ in range(num_pieces - 1)] + [rnd.randbytes(last)]
    info = {b"name": b"t", b"piece length": PL, b"length": PL * (num_pieces - 1) + last,
            b"pieces": b"".join(hashlib.sha1(p).digest() for p in pieces)}
    return metainfo.parse(bencode.encode({b"info": info})), pieces


def _manager(meta: metainfo.Metainfo) -> PieceManager:
    pm = PieceManager(meta, Bitfield(meta.num_pieces), Sequential())
    pm.add_peer_pieces(Bitfield.full(meta.num_pieces))
    return pm


def _deliver(pm: PieceManager, pieces: list[bytes], order) -> dict[int, object]:
    """Request every block from peer "a", store them in ``order`` (a function of the block list); the
    completed pieces by index."""
    blocks = pm.next_requests("a", Bitfield.full(len(pieces)), 10_000)
    done = {}
    for index, begin, length in order(blocks):
        result = pm.store_block("a", index, begin, memoryview(pieces[index])[begin : begin + length])
        assert result is not None
        if result[1] is not None:
            done[index] = result[1]
    return done


def _verdict(meta: metainfo.Metainfo, piece) -> bool:
    return meta.piece_ok(piece.index, piece.buffer, sha1=piece.sha1, hashed=piece.hashed)


def test_blocks_in_order_are_hashed_on_arrival_in_runs_and_the_piece_passes():
    meta, pieces = _torrent(3, last=5 * BLOCK_SIZE + 7)  # the last piece: a short run and a short block
    pm = _manager(meta)
    blocks = pm.next_requests("a", Bitfield.full(3), 10_000)
    piece0 = pm.partial[0]
    fed = []
    for index, begin, length in blocks:
        result = pm.store_block("a", index, begin, pieces[index][begin : begin + length])
        if index == 0:
            fed.append(piece0.hashed)
        if result[1] is not None:
            assert result[1].hashed == result[1].size, "a piece whose blocks came in order is hashed whole on arrival"
            assert _verdict(meta, result[1])
    # piece 0's SHA-1 was fed every HASH_RUN bytes, not per block
    runs = HASH_RUN // BLOCK_SIZE
    assert fed == [((i + 1) // runs) * HASH_RUN for i in range(16)]


def test_blocks_out_of_order_leave_the_rest_to_the_verdict_and_the_piece_passes():
    meta, pieces = _torrent(2)
    pm = _manager(meta)

    def shuffled(blocks):
        rest = list(blocks[2:])
        random.Random(5).shuffle(rest)
        return [*blocks[:2], *rest]  # the first two in order, the rest shuffled

    done = _deliver(pm, pieces, shuffled)
    assert sorted(done) == [0, 1]
    for piece in done.values():
        assert piece.hashed < piece.size, "a gap stops the feed: the verdict hashes the rest"
        assert _verdict(meta, piece)
        assert bytes(piece.buffer) == pieces[piece.index]


@pytest.mark.parametrize("where", [0, BLOCK_SIZE + 3, HASH_RUN, PL - 1])
@pytest.mark.parametrize("in_order", [True, False])
def test_one_wrong_byte_fails_the_piece_wherever_it_is(where, in_order):
    """A lying peer's byte, in a part fed on arrival or in the rest: the piece fails its check."""
    meta, pieces = _torrent(1)
    bad = bytearray(pieces[0])
    bad[where] ^= 0x40
    pm = _manager(meta)
    order = (lambda b: b) if in_order else (lambda b: list(reversed(b)))
    done = _deliver(pm, [bytes(bad)], order)
    assert not _verdict(meta, done[0])


def test_a_duplicate_cannot_change_bytes_already_hashed():
    """An endgame duplicate of a block already received (and fed to the SHA-1) is refused: the buffer that is
    written is the one that was hashed."""
    meta, pieces = _torrent(1)
    pm = _manager(meta)
    blocks = pm.next_requests("a", Bitfield.full(1), 10_000)
    for index, begin, length in blocks[:5]:
        pm.store_block("a", index, begin, pieces[0][begin : begin + length])
    assert pm.partial[0].hashed == HASH_RUN
    assert pm.store_block("b", 0, 0, bytes(BLOCK_SIZE)) is None
    assert pm.block_buffer(0, 0, BLOCK_SIZE) is None
    done = None
    for index, begin, length in blocks[5:]:
        done = pm.store_block("a", index, begin, pieces[0][begin : begin + length])[1] or done
    assert done is not None and _verdict(meta, done) and bytes(done.buffer) == pieces[0]


@pytest.mark.parametrize("kind", ["hybrid", "v2"])
def test_hybrid_and_v2_pieces_are_hashed_whole(tmp_path, kind):
    """Only v1 torrents feed a SHA-1 on arrival (a v2 piece's hash is a Merkle root, a hybrid's piece must
    pass both); piece_ok refuses a fed SHA-1 for them. Their pieces still pass and fail as before."""
    data = random.Random(9).randbytes(3 * PL)
    (tmp_path / "f").write_bytes(data)
    _, meta = create_torrent(tmp_path / "f", [], piece_length=PL, kind=kind)
    pm = _manager(meta)
    blocks = pm.next_requests("a", Bitfield.full(meta.num_pieces), 10_000)
    assert all(piece.sha1 is None for piece in pm.partial.values())
    done = {}
    for index, begin, length in blocks:
        offset = index * PL + begin
        result = pm.store_block("a", index, begin, data[offset : offset + length])
        if result[1] is not None:
            done[index] = result[1]
    assert sorted(done) == [0, 1, 2] and all(_verdict(meta, piece) for piece in done.values())
    with pytest.raises(ValueError):
        meta.piece_ok(0, data[:PL], sha1=hashlib.sha1(), hashed=0)
