"""BEP 52 hash messages with one peer: serving our piece layers, and fetching the ones we lack.

A v2 torrent's metadata may lack its ``piece layers`` (a ``btmh`` magnet gives only the info dictionary);
peers send them in HASH REQUEST / HASHES / HASH REJECT messages (ids 21-23), each chunk proved against its
file's ``pieces root``. :class:`~torrentcore.piece_layers.PieceLayers` is the torrent-wide part (what is
missing, who asked for which chunk, the proofs); this is one connection's part: what we asked of this peer,
when, and how much we served it. The :class:`~torrentcore.peer.peer.Peer` dispatches the three message ids
here and sends through the callback it gives.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from .. import merkle
from ..errors import ProtocolError
from ..piece_layers import HEADER_SIZE, REQUEST_TIMEOUT, HashRequest
from . import messages as msg

if TYPE_CHECKING:
    from ..piece_layers import PieceLayers

log = structlog.get_logger(__name__)

#: BEP 52 hash requests we keep outstanding with one peer (a chunk of 512 piece hashes each).
MAX_HASH_REQUESTS = 2
#: Seconds a peer that left a hash request unanswered (piece_layers.REQUEST_TIMEOUT) is not asked again.
HASH_SILENT_BACKOFF = 30.0
#: Hashes we serve one connection: this many times the torrent's piece count (plus 10,000); a peer needs
#: each layer once, so past that its requests are rejected (a bound on what requests can make us send).
MAX_HASHES_SERVED_FACTOR = 4


class HashExchange:
    """One peer's side of the piece-layer exchange (see the module docstring)."""

    def __init__(self, layers: PieceLayers, send: Callable[[bytes], None], num_pieces: int,
                 peer_speaks_v2: bool, on_complete: Callable[[], None],
                 read_piece: Callable[[int], bytes | None] | None = None) -> None:
        """``read_piece(index)``: a verified piece's bytes (None if we lack it), to serve block-layer hashes."""
        self.layers = layers
        self._read_piece = read_piece
        self._send = send
        self._serve_cap = MAX_HASHES_SERVED_FACTOR * num_pieces + 10_000
        self._peer_speaks_v2 = peer_speaks_v2
        self._on_complete = on_complete
        self._outstanding = 0  # our requests this peer has not answered
        self._asked_at = 0.0  # monotonic time of the last one
        self._quiet_until = 0.0  # not asked before this (monotonic): it left requests unanswered
        self._served = 0  # hashes we sent this peer

    def on_message(self, msg_id: int, payload: bytes) -> None:
        """A HASH REQUEST, HASHES or HASH REJECT from the peer. Raises :class:`ProtocolError` for a malformed
        message or hashes that do not prove to their file's root (the peer is then dropped)."""
        try:
            req = HashRequest.unpack(payload)
        except ValueError as exc:
            raise ProtocolError(str(exc)) from None
        if msg_id == msg.HASH_REQUEST:
            self._answer(req, len(payload))
            return
        self._outstanding = max(0, self._outstanding - 1)
        if msg_id == msg.HASH_REJECT:
            self.layers.rejected(req)
            return
        body = payload[HEADER_SIZE:]
        if len(body) % merkle.HASH:
            raise ProtocolError(f"hashes message with {len(body)} bytes of hashes (not a multiple of 32)")
        if not self.layers.received(req, merkle.split(body)):
            raise ProtocolError("hashes that do not prove to the file's pieces root (wrong Merkle proof)")
        if self.layers.complete:
            self._on_complete()
        else:
            self.request()

    def _answer(self, req: HashRequest, size: int) -> None:
        if size != HEADER_SIZE:
            raise ProtocolError(f"hash request of {size} bytes")
        layers = self.layers
        # Past its cap nothing more is computed (a block-layer answer reads a piece from disk).
        hashes = layers.answer(req, self._read_piece) if self._served <= self._serve_cap else None
        if hashes is not None:
            # A block-layer answer costs a piece's read: counted as that piece's leaves at least.
            blocks = req.base == 0 and layers.piece_layer != 0
            self._served += max(len(hashes), layers.meta.piece_length // merkle.BLOCK) if blocks else len(hashes)
            if blocks:  # rare: a peer checks which block of a piece that failed was bad (libtorrent does)
                log.debug("block hashes served", index=req.index, count=req.count, proof_layers=req.proof_layers)
            if self._served > self._serve_cap:
                hashes = None  # it asked for every layer many times over: answer no more
        if hashes is None:
            self._send(msg.with_payload(msg.HASH_REJECT, req.pack()))
        else:
            self._send(msg.with_payload(msg.HASHES, req.pack() + b"".join(hashes)))

    def request(self) -> None:
        """Ask this peer for missing chunks of a piece layer, if it speaks v2 and we need any."""
        layers = self.layers
        if layers.complete or not self._peer_speaks_v2:
            return
        now = time.monotonic()
        if self._outstanding and now - self._asked_at > REQUEST_TIMEOUT:
            # It did not answer: its chunks went back to the pool (piece_layers) for other peers, and it is
            # asked again only after a while (else it would take them back first, every time).
            self._outstanding = 0
            self._quiet_until = now + HASH_SILENT_BACKOFF
        if now < self._quiet_until:
            return
        while self._outstanding < MAX_HASH_REQUESTS:
            req = layers.next_request(now, self)
            if req is None:
                return
            self._outstanding += 1
            self._asked_at = now
            self._send(msg.with_payload(msg.HASH_REQUEST, req.pack()))
