"""The upload queue's batches: several PIECE messages read with one storage read and sent with one send.

A peer's queued requests (:attr:`torrentcore.peer.peer.Peer.uploads`, in arrival order) come mostly in
runs of consecutive blocks of one piece (aria2c, libtorrent and torrentcore all request a piece's blocks in
order). :func:`take_run` pops the longest such run from the head of the queue, within a byte budget;
the writer then reads the run's bytes with one storage read (one ``preadv`` on the filesystem) and
:func:`piece_messages` frames them as one buffer of PIECE messages, sent with one ``sendall`` (RC4: one
cipher call; uTP: one write into its send buffer).

Why (issue 17, ``benchmarks/seed.py``, py-spy): one 16 KiB block per read and per send cost a storage
read, two copies, a ``sendall`` and a turn of the writer loop per block; and an aria2c leecher grows its
request pipeline only when a quarter of it arrives in one of its reads (aria2's
``DefaultBtInteractive::receiveMessages`` doubles ``maxOutstandingRequest_`` then), which block-by-block
sends on loopback rarely allow: aria2c got 0.65x of what a libtorrent seeder (which writes whole send
buffers) gives it.
"""

from __future__ import annotations

import struct
from collections import OrderedDict

from .messages import PIECE

#: Most payload bytes one batch (one read per run, one send) carries: 16 blocks of 16 KiB. Below the
#: writer's fairness budget (WRITE_YIELD_BYTES, 1 MiB), so it still yields to the other greenlets.
UPLOAD_BATCH_BYTES = 256 * 1024

_HDR = struct.Struct(">IBII")  # length, id, index, begin


Block = tuple[int, int, int]


def take_run(uploads: OrderedDict[Block, None], budget: int) -> tuple[int, int, list[int]]:
    """Pop the first queued request and the requests that continue it (same piece, next offset) while
    their lengths fit in ``budget`` bytes (the first is always taken). Returns ``(index, begin, lengths)``.

    ``uploads`` must not be empty. Bounded: at most ``budget // 1 + 1`` pops, each O(1).
    """
    (index, begin, length), _ = uploads.popitem(last=False)
    lengths = [length]
    total = length
    end = begin + length
    while uploads:
        nxt = next(iter(uploads))
        if nxt[0] != index or nxt[1] != end or total + nxt[2] > budget:
            break
        del uploads[nxt]
        lengths.append(nxt[2])
        total += nxt[2]
        end += nxt[2]
    return index, begin, lengths


def piece_messages(index: int, begin: int, lengths: list[int], data: bytes) -> bytes:
    """The PIECE messages of consecutive blocks of piece ``index`` from ``begin`` whose bytes are ``data``
    (``sum(lengths)`` bytes), as one buffer."""
    if len(lengths) == 1:
        return _HDR.pack(9 + lengths[0], PIECE, index, begin) + data
    view = memoryview(data)
    parts: list[bytes | memoryview] = []
    at = 0
    pack = _HDR.pack
    for n in lengths:
        parts.append(pack(9 + n, PIECE, index, begin + at))
        parts.append(view[at : at + n])
        at += n
    return b"".join(parts)


__all__ = ["UPLOAD_BATCH_BYTES", "piece_messages", "take_run"]
