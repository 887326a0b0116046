"""The upload queue: a peer's requests to us, checked, queued and served in batches.

:class:`UploadQueue` takes a peer's REQUESTs and CANCELs (the bounds against invalid, choked and flooding
requests are its), and produces what the connection's writer sends: PIECE messages, BEP 6 REJECTs.

Batches: several PIECE messages read with one storage read and sent with one send.
A peer's queued requests (:attr:`UploadQueue.uploads`, in arrival order) come mostly in
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
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol

from ..errors import ProtocolError
from . import budget as bud
from . import messages as msg
from .messages import PIECE

if TYPE_CHECKING:  # pragma: no cover
    from ..ratemeter import RateMeter
    from .ports import TorrentPort

#: Most payload bytes one batch (one read per run, one send) carries: 16 blocks of 16 KiB. Below the
#: writer's fairness budget (WRITE_YIELD_BYTES, 1 MiB), so it still yields to the other greenlets.
UPLOAD_BATCH_BYTES = 256 * 1024

#: Our advertised request queue, and the most requests we queue from one peer.
OUR_REQQ = 500
#: A peer whose requests keep being invalid is dropped after this many.
MAX_BAD_REQUESTS = 20
#: Requests while we choke it (outside its allowed-fast set) after which a peer is dropped, as libtorrent
#: does with ``max_rejects`` (50): an honest peer stops requesting when choked, a greedy one never does...
MAX_CHOKED_REQUESTS = 50
#: ...counting only those arriving this many seconds after our CHOKE (the ones already on the way then are
#: honest; 2 s is several round trips on any real link).
CHOKE_GRACE = 2.0
#: CANCELs beyond the REQUESTs a peer sent (plus this slack) are a flood, not late cancels.
CANCEL_SLACK = 64

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


class Sender(Protocol):
    """The connection as the queue uses it."""

    closed: bool

    def send(self, data: bytes) -> None: ...

    def wake(self) -> None: ...


class ServedPeer(Protocol):
    """What the upload queue reads of its peer (a :class:`~torrentcore.peer.peer.Peer`)."""

    #: BEP 6 on for this connection (REJECTs are sent).
    fast: bool
    am_choking: bool
    #: Pieces it may request while we choke it (BEP 6 allowed fast).
    allowed_fast_out: frozenset[int]
    conn: Sender
    up: RateMeter
    budget: bud.MessageBudget


class UploadQueue:
    """A peer's requests to us (see the module docstring)."""

    def __init__(self, peer: ServedPeer, torrent: TorrentPort) -> None:
        self._peer = peer
        self._torrent = torrent
        #: Requests of the peer we will serve, in order (an OrderedDict: a CANCEL removes one in O(1)).
        self.uploads: OrderedDict[Block, None] = OrderedDict()
        self.requests_in = 0  # REQUESTs received (CANCELs beyond these plus CANCEL_SLACK are a flood)
        self.cancels_in = 0
        self.bad_requests = 0
        #: Requests received while choked past CHOKE_GRACE (the choker never unchokes such a peer), and when
        #: we last choked it (0: never unchoked, so no request can be on its way honestly).
        self.choked_requests = 0
        self.choked_at = 0.0

    def on_cancel(self, block: Block) -> None:
        """CANCEL: drop a queued request (O(1)); more cancels than requests (plus a slack) are a flood."""
        self.cancels_in += 1
        if self.cancels_in > self.requests_in + CANCEL_SLACK:
            raise bud.FloodError(f"flood of cancel messages ({self.cancels_in} cancels for "
                                 f"{self.requests_in} requests)")
        if self.uploads.pop(block, 0) is None and self._peer.fast:
            self._peer.conn.send(msg.reject(*block))  # BEP 6: every request gets one answer, a cancelled one too

    def on_request(self, index: int, begin: int, length: int) -> None:
        """REQUEST: queue it, or reject it (BEP 6) or drop it (BEP 3) if it cannot be served now."""
        t = self._torrent
        peer = self._peer
        self.requests_in += 1
        if (index >= t.meta.num_pieces or not 0 < length <= msg.MAX_REQUEST_LENGTH
                or begin + length > t.meta.piece_size(index)):
            # No piece, offset or length like this exists: a broken or hostile peer, not a race.
            raise ProtocolError(f"invalid request (piece {index}, offset {begin}, {length} bytes)")
        if not t.have[index]:
            self.bad_requests += 1
            if self.bad_requests > MAX_BAD_REQUESTS:
                raise ProtocolError("too many invalid requests")
            self._reject(index, begin, length)
            return
        if peer.am_choking and index not in peer.allowed_fast_out:
            # BEP 3: requests while choked are dropped; BEP 6: rejected, except allowed-fast pieces.
            peer.budget.spend(bud.USELESS_REQUEST)
            if time.monotonic() - self.choked_at > CHOKE_GRACE:
                self.choked_requests += 1
                if self.choked_requests > MAX_CHOKED_REQUESTS:
                    raise ProtocolError("too many requests while choked")
            self._reject(index, begin, length)
            return
        uploads = self.uploads
        block = (index, begin, length)
        if block in uploads:  # asked again while queued: the one answer to come serves both
            peer.budget.spend(bud.USELESS_REQUEST)
            return
        if len(uploads) >= OUR_REQQ:
            self.bad_requests += 1
            if self.bad_requests > MAX_BAD_REQUESTS:
                raise ProtocolError("request queue flooded")
            self._reject(index, begin, length)
            return
        uploads[block] = None
        peer.conn.wake()

    def produce(self) -> bytes | None:
        """Writer callback: the next PIECE messages to upload (BEP 6 rejects too), or None when none is due.

        Runs of consecutive queued blocks are read with one storage read and framed as one buffer, up to
        :data:`UPLOAD_BATCH_BYTES`; under an upload rate limit one block at a time, as each waits for its tokens.
        """
        uploads = self.uploads
        peer = self._peer
        if not uploads or (peer.am_choking and not peer.allowed_fast_out):
            return None
        t = self._torrent
        conn = peer.conn
        budget = 0 if t.upload_limit.rate else UPLOAD_BATCH_BYTES  # 0: take_run takes one block
        out: list[bytes] = []
        while uploads and not conn.closed:
            index, begin, lengths = take_run(uploads, budget)
            total = sum(lengths)
            if peer.am_choking and index not in peer.allowed_fast_out:
                if peer.fast:
                    out.append(_rejects(index, begin, lengths))
                continue
            t.upload_limit.consume(total)  # may sleep (a limit is set: one block)
            if conn.closed:
                break
            if peer.am_choking and index not in peer.allowed_fast_out:
                if peer.fast:
                    out.append(_rejects(index, begin, lengths))
                continue
            data = t.read_block(index, begin, total)  # a trusted piece is hashed first (Torrent.read_block)
            if data is None:
                if peer.fast and not conn.closed:
                    out.append(_rejects(index, begin, lengths))
                continue
            peer.up.add(total)
            t.block_uploaded(total)
            out.append(piece_messages(index, begin, lengths, data))
            budget -= total
            if budget <= 0:
                break
        return b"".join(out) if out else None

    def choked(self) -> None:
        """We just choked the peer: BEP 6 rejects the queued requests but the allowed-fast ones (BEP 3 drops
        them silently)."""
        self.choked_at = time.monotonic()
        peer = self._peer
        if peer.fast:
            allowed = peer.allowed_fast_out
            keep = [r for r in self.uploads if r[0] in allowed]
            rejected = [r for r in self.uploads if r[0] not in allowed]
            self.uploads = OrderedDict.fromkeys(keep)
            if rejected:
                peer.conn.send(b"".join(msg.reject(*r) for r in rejected))
        else:
            self.uploads.clear()

    def _reject(self, index: int, begin: int, length: int) -> None:
        """Tell a fast-extension peer that a request of its will not be served (others get silence)."""
        if self._peer.fast:
            self._peer.conn.send(msg.reject(index, begin, length))


def _rejects(index: int, begin: int, lengths: list[int]) -> bytes:
    """BEP 6 REJECTs of a run of consecutive blocks (see :func:`take_run`)."""
    out = []
    for n in lengths:
        out.append(msg.reject(index, begin, n))
        begin += n
    return b"".join(out)


__all__ = ["UPLOAD_BATCH_BYTES", "piece_messages", "take_run", "UploadQueue", "OUR_REQQ"]
