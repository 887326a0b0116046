"""Piece manager (blocks, endgame, release) and the rarest-first strategy."""

from __future__ import annotations

import random

from torrentcore import bencode, metainfo
from torrentcore.bitfield import Bitfield
from torrentcore.piecemanager import PieceManager
from torrentcore_plugins.rarest_first import RarestFirst, Sequential

PL = 4 * 16384  # four blocks per piece


def meta(num_pieces=8, last=PL):
    total = PL * (num_pieces - 1) + last
    info = {b"name": b"t", b"piece length": PL, b"pieces": b"\x00" * 20 * num_pieces, b"length": total}
    return metainfo.parse(bencode.encode({b"info": info}))


def full(n):
    return Bitfield.full(n)


def bits(n, idx):
    bf = Bitfield(n)
    for i in idx:
        bf.set(i)
    return bf


def test_rarest_first_orders_by_availability_after_the_random_start():
    m = meta(6)
    have = bits(6, [0, 1, 2, 3])  # past the random phase
    pm = PieceManager(m, have, RarestFirst(6, random.Random(1)))
    pm.add_peer_pieces(full(6))
    pm.add_peer_pieces(bits(6, [5]))  # piece 5 is common, piece 4 rare
    blocks = pm.next_requests("a", full(6), 4)
    assert {b[0] for b in blocks} == {4}


def test_partial_pieces_are_finished_first():
    m = meta(8)
    have = bits(8, [0, 1, 2, 3])
    pm = PieceManager(m, have, RarestFirst(8, random.Random(2)))
    pm.add_peer_pieces(full(8))
    first = pm.next_requests("a", full(8), 2)  # starts one piece, half of it
    piece = first[0][0]
    pm.release("a", first)  # those blocks are free again; the piece stays started
    assert piece in pm.partial
    again = pm.next_requests("b", full(8), 4)
    assert {b[0] for b in again} == {piece}


def test_ties_are_broken_at_random():
    m = meta(40)
    have = bits(40, range(4))
    picks = set()
    for seed in range(10):
        pm = PieceManager(m, bits(40, range(4)), RarestFirst(40, random.Random(seed)))
        pm.add_peer_pieces(full(40))
        picks.add(pm.next_requests("a", full(40), 1)[0][0])
    assert len(picks) > 3
    assert have.count == 4


def test_blocks_cover_the_piece_and_short_last_piece():
    m = meta(3, last=20000)
    pm = PieceManager(m, Bitfield(3), Sequential())
    pm.add_peer_pieces(full(3))
    blocks = pm.next_requests("a", full(3), 100)
    assert blocks[:4] == [(0, 0, 16384), (0, 16384, 16384), (0, 32768, 16384), (0, 49152, 16384)]
    assert blocks[-2:] == [(2, 0, 16384), (2, 16384, 20000 - 16384)]
    assert len(blocks) == 10


def test_only_pieces_the_peer_has():
    m = meta(4)
    pm = PieceManager(m, Bitfield(4), RarestFirst(4, random.Random(0)))
    pm.add_peer_pieces(bits(4, [2]))
    assert {b[0] for b in pm.next_requests("a", bits(4, [2]), 100)} == {2}


def test_endgame_duplicates_and_cancels():
    m = meta(1)
    pm = PieceManager(m, Bitfield(1), Sequential())
    pm.add_peer_pieces(full(1))
    pm.add_peer_pieces(full(1))
    a = pm.next_requests("a", full(1), 100)
    assert len(a) == 4 and pm.endgame  # every block is requested: endgame from now on
    b = pm.next_requests("b", full(1), 100)
    assert pm.endgame and sorted(b) == sorted(a), "endgame: the last blocks are asked of another peer too"
    index, begin, length = a[0]
    buf = pm.block_buffer(index, begin, length)
    buf[:] = b"x" * length
    others, piece = pm.block_received("a", index, begin)
    assert others == ["b"] and piece is None
    assert pm.block_buffer(index, begin, length) is None, "a block already received is not needed again"
    for blk in a[1:]:
        pm.block_buffer(*blk)[:] = b"y" * blk[2]
        others, piece = pm.block_received("b", blk[0], blk[1])
    assert piece is not None and piece.index == 0 and 0 in pm.verifying


def test_a_piece_asked_of_two_peers_everywhere_is_skipped_until_a_release():
    """Endgame: once every requested block of a piece is asked of ENDGAME_DUPLICATES peers, the piece is marked
    saturated and a third peer gets nothing from it; a release (a peer choked us, left) frees it again."""
    m = meta(1)
    pm = PieceManager(m, Bitfield(1), Sequential())
    for _ in range(3):
        pm.add_peer_pieces(full(1))
    a = pm.next_requests("a", full(1), 100)
    b = pm.next_requests("b", full(1), 100)
    assert pm.endgame and sorted(b) == sorted(a)
    assert pm.next_requests("c", full(1), 100) == [], "every block is asked of two peers already"
    assert pm.partial[0].saturated == pm._endgame_epoch
    pm.release("a", a)
    assert sorted(pm.next_requests("c", full(1), 100)) == sorted(a), "a's blocks, released, go to c"


def test_failed_piece_is_wanted_again():
    m = meta(1)
    pm = PieceManager(m, Bitfield(1), Sequential())
    pm.add_peer_pieces(full(1))
    for blk in pm.next_requests("a", full(1), 100):
        pm.block_buffer(*blk)[:] = bytes(blk[2])
        _, piece = pm.block_received("a", blk[0], blk[1])
    assert piece is not None and not pm.wanted(0)
    pm.piece_failed(0)
    assert pm.wanted(0) and len(pm.next_requests("a", full(1), 100)) == 4
    assert pm.endgame, "every block of the last piece is requested again: endgame"


def test_unrequested_or_misaligned_blocks_are_not_accepted():
    m = meta(2)
    pm = PieceManager(m, Bitfield(2), Sequential())
    assert pm.block_buffer(0, 0, 16384) is None  # piece not started
    pm.add_peer_pieces(full(2))
    pm.next_requests("a", full(2), 1)
    assert pm.block_buffer(0, 100, 16384) is None
    assert pm.block_buffer(0, 0, 999) is None
    assert pm.block_buffer(0, 0, 16384) is not None



def test_store_block_copies_records_and_refuses_what_is_not_needed():
    """store_block (the peer wire's per-block path): one copy into the piece, recorded at once; endgame peers
    to cancel are named; duplicates, unknown pieces, odd offsets and wrong lengths store nothing."""
    m = meta(2, last=PL // 2 + 5)  # the last piece ends with a short block
    pm = PieceManager(m, Bitfield(2), Sequential())
    pm.add_peer_pieces(full(2))
    a = pm.next_requests("a", full(2), 100)
    assert len(a) == 7 and pm.endgame
    b = pm.next_requests("b", full(2), 100)
    assert b, "endgame duplicates for b"
    payload = {blk: random.Random(blk[0] * 100 + blk[1]).randbytes(blk[2]) for blk in a}
    first = b[0]
    view = memoryview(bytearray(b"#" + payload[first] + b"#"))[1:-1]  # a slice of a larger buffer, as take() gives
    others, piece = pm.store_block("a", first[0], first[1], view)
    assert list(others) == ["b"] and piece is None
    assert pm.store_block("b", first[0], first[1], payload[first]) is None, "a received block is not needed again"
    assert pm.store_block("a", 9, 0, bytes(16384)) is None, "no such piece"
    assert pm.store_block("a", 0, 100, bytes(16384)) is None, "not a block's offset"
    assert pm.store_block("a", 1, 32768, bytes(16384)) is None, "the short last block must have its own length"
    done = []
    for blk in a:
        if blk == first:
            continue
        result = pm.store_block("a", blk[0], blk[1], payload[blk])
        assert result is not None
        if result[1] is not None:
            done.append(result[1])
    assert sorted(p.index for p in done) == [0, 1] and pm.verifying == {0, 1}
    for piece in done:
        expected = b"".join(payload[blk] for blk in sorted(a) if blk[0] == piece.index)
        assert bytes(piece.buffer) == expected
    assert pm.requested_blocks == 0, "every request (the endgame duplicates too) is accounted for"


def test_store_block_refuses_every_wrong_length_and_records_only_whole_blocks():
    """The length checks of store_block's inline path: nothing longer than BLOCK_SIZE (not even up to the end
    of the piece), nothing empty, a full block only where one fits, the short last block only with its own
    length; a refused block leaves the piece as it was (still requested, nothing received)."""
    m = meta(2, last=PL // 2 + 5)  # piece 1: blocks of 16384, 16384 and 5 bytes
    pm = PieceManager(m, Bitfield(2), Sequential())
    pm.add_peer_pieces(full(2))
    asked = pm.next_requests("a", full(2), 100)
    assert (1, 32768, 5) in asked and (0, 32768, 16384) in asked
    before = pm.requested_blocks
    wrong = [
        (0, 32768, 2 * 16384),  # two blocks' worth, exactly to the end of piece 0
        (1, 16384, 16384 + 5),  # a block and the last one's 5 bytes, to the end of piece 1
        (1, 32768, 16384),  # a full block where only 5 bytes are left
        (1, 32768, 4),
        (1, 32768, 0),
        (0, 0, 0),
        (0, 0, 16383),
        (1, 49152, 16384),  # past the end of the piece
    ]
    for index, begin, n in wrong:
        assert pm.store_block("a", index, begin, bytes(n)) is None, (index, begin, n)
    assert pm.requested_blocks == before
    assert all(p.received == 0 for p in pm.partial.values())
    assert pm.store_block("a", 1, 32768, b"12345") == ((), None)
    assert pm.store_block("a", 0, 32768, bytes(16384)) == ((), None)
    assert pm.requested_blocks == before - 2


def test_recycled_buffers_go_to_new_pieces_bounded_and_fully_overwritten():
    """A stored piece's buffer is kept for a later piece (no fresh, zeroed memory per piece), at most
    ``_spare_max`` are kept, and a reused buffer is complete only once every block of the new piece overwrote it."""
    m = meta(40)
    pm = PieceManager(m, Bitfield(40), Sequential())
    pm.add_peer_pieces(full(40))
    stored = []
    for index in range(3):  # pieces 0-2, each received in full and stored
        for i, begin, n in pm.next_requests("a", full(40), 4):
            assert i == index
            result = pm.store_block("a", i, begin, bytes([0xA0 + index]) * n)
        stored.append(result[1])
    buffers = {id(piece.buffer) for piece in stored}
    for piece in stored:
        pm.piece_verified(piece.index)
        pm.recycle(piece)
        assert piece.buffer == bytearray() and piece.view is None
    blocks = pm.next_requests("a", full(40), 8)  # pieces 3 and 4 start, each with a stored piece's buffer
    assert [i for i, _b, _n in blocks] == [3] * 4 + [4] * 4
    assert {id(pm.partial[3].buffer), id(pm.partial[4].buffer)} < buffers
    old = bytes(pm.partial[3].buffer)
    assert old in {bytes([0xA0 + k]) * PL for k in range(3)}, "(still an old piece's bytes)"
    new = random.Random(5).randbytes(PL)
    for k, (i, begin, n) in enumerate(blocks[:4]):
        result = pm.store_block("a", i, begin, new[begin:begin + n])
        assert (result[1] is not None) == (k == 3), "complete (to be hashed) only with its last block"
    assert bytes(result[1].buffer) == new, "every byte of the reused buffer overwritten"
    # Bounded: many pieces stored at once keep at most _spare_max buffers.
    pm._spare_max = 4
    started = [pm._start(index) for index in range(5, 15)]
    for piece in started:
        pm.recycle(piece)
    assert len(pm._spare) == 4
