"""Blocks made only of pad-file bytes (BEP 47): zeros known without asking, so never requested.

A hybrid or BEP 47 torrent pads each file up to the next piece boundary with a pad file (``attr`` ``p``,
or libtorrent's ``.pad/N``; v2 layouts imply them). Its bytes are zeros by definition: no peer needs to
send them and no storage writes them (the filesystem plugin skips pad files on write and reads them as
zeros). :func:`pad_blocks` lists, per piece, the 16 KiB blocks that lie wholly inside pad files (several
consecutive pad files count together); the piece manager marks those received, with zeros, when it starts
the piece, so they are never asked of a peer or a web seed.

A block only partly padded is requested whole, as libtorrent does (its ``mark_as_pad`` marks only blocks
a pad file covers completely; the rest of such a block is requested at its full length): peers serve the
pad part as zeros, and a request for a shorter range than the block is one more thing a peer may refuse.

A piece whose every block is padding (not a valid layout: a pad file pads to the *next* boundary only) is
left alone: its blocks are requested as any others, so the piece still completes and is checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .merkle import BLOCK as BLOCK_SIZE  # 16 KiB, the block of the wire (hookspec.BLOCK_SIZE) too

if TYPE_CHECKING:  # pragma: no cover
    from .metainfo import Metainfo


def pad_blocks(meta: Metainfo) -> dict[int, tuple[int, ...]]:
    """Piece index -> the numbers of its blocks that are all pad bytes (pieces with none are left out)."""
    plen = meta.piece_length
    # Merge consecutive pad files into ranges of torrent offsets [lo, hi).
    ranges: list[list[int]] = []
    for f in meta.files:
        if not f.pad or not f.length:
            continue
        if ranges and ranges[-1][1] == f.offset:
            ranges[-1][1] = f.offset + f.length
        else:
            ranges.append([f.offset, f.offset + f.length])
    out: dict[int, list[int]] = {}
    for lo, hi in ranges:
        for index in range(lo // plen, (hi - 1) // plen + 1):
            start = index * plen
            size = meta.piece_size(index)
            first = max(0, -(-(lo - start) // BLOCK_SIZE))  # the first block that begins inside the range
            for b in range(first, -(-size // BLOCK_SIZE)):
                b_lo = start + b * BLOCK_SIZE
                b_hi = b_lo + min(BLOCK_SIZE, size - b * BLOCK_SIZE)
                if b_lo >= hi:
                    break
                if b_hi <= hi:
                    out.setdefault(index, []).append(b)
    nblocks = {i: -(-meta.piece_size(i) // BLOCK_SIZE) for i in out}
    return {i: tuple(bs) for i, bs in out.items() if len(bs) < nblocks[i]}


__all__ = ["pad_blocks"]
