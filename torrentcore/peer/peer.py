"""The life of one peer connection after the handshake: one greenlet reading messages.

:class:`Peer` keeps the four BEP 3 states (am/peer choking, am/peer
interested), the peer's pieces, our outstanding requests and its queued
requests to us, and reacts to every message. Decisions that involve the whole
swarm (which blocks, who to unchoke) are delegated to the torrent.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING

import structlog

from .. import bencode
from ..bitfield import Bitfield
from ..errors import ProtocolError, TorrentcoreError
from ..hookspec import BLOCK_SIZE, PeerInfo
from ..ratemeter import RateMeter
from . import messages as msg
from .connection import Connection

if TYPE_CHECKING:  # pragma: no cover
    from ..session import Torrent

log = structlog.get_logger(__name__)

#: Pipeline depth bounds (blocks of 16 KiB). The depth follows the peer's rate.
MIN_DEPTH = 16
START_DEPTH = 64
MAX_DEPTH = 1000
#: Seconds of data to keep requested from a peer (libtorrent uses 3).
QUEUE_SECONDS = 2.0
#: The peer's request queue when it does not say (BEP 10 'reqq').
DEFAULT_REQQ = 250
#: Our advertised request queue, and the most requests we queue from one peer.
OUR_REQQ = 500
#: A peer whose requests keep being invalid is dropped after this many.
MAX_BAD_REQUESTS = 20
#: Seconds without a block while requests are outstanding before they go elsewhere.
REQUEST_TIMEOUT = 20.0


class Peer:
    """A connected, handshaken peer of one torrent."""

    def __init__(self, torrent: Torrent, conn: Connection, peer_id: bytes, reserved: bytes, incoming: bool):
        self.torrent = torrent
        self.conn = conn
        self.address = conn.address
        self.peer_id = peer_id
        self.incoming = incoming
        self.supports_extensions = msg.has_bit(reserved, msg.RESERVED_EXTENSIONS)
        self.log = log.bind(torrent=torrent.meta.name, peer=f"{self.address[0]}:{self.address[1]}")
        self.has = Bitfield(torrent.meta.num_pieces)
        self.am_choking = True
        self.am_interested = False
        self.peer_choking = True
        self.peer_interested = False
        self.outstanding: dict[tuple[int, int], int] = {}
        self.uploads: deque[tuple[int, int, int]] = deque()
        self.down = RateMeter()
        self.up = RateMeter()
        self.last_block = time.monotonic()
        self.snubbed = False
        self.reqq = DEFAULT_REQQ
        self.listen_port: int | None = None
        self.client = _client_name(peer_id)
        self.bad_requests = 0
        self.got_first_message = False
        conn.producer = self._produce

    # --- identity --------------------------------------------------------------------------------

    @property
    def key(self) -> tuple[str, int]:
        """The address we know the peer by."""
        return self.address

    def info(self) -> PeerInfo:
        """A snapshot for reporters."""
        return PeerInfo(
            address=self.address,
            client=self.client,
            incoming=self.incoming,
            download_rate=self.down.rate,
            upload_rate=self.up.rate,
            downloaded=self.down.total,
            uploaded=self.up.total,
            is_seed=self.has.complete,
        )

    # --- main loop ---------------------------------------------------------------------------------

    def run(self) -> str:
        """Read and handle messages until the connection ends; return why it ended."""
        t = self.torrent
        self.conn.start_writer()
        if self.supports_extensions:
            self._send_extension_handshake()
        if t.have.count:
            self.conn.send(msg.bitfield(t.have.to_bytes()))
        try:
            while not self.conn.closed:
                msg_id, payload = self.conn.read_message()
                self._handle(msg_id, payload)
        except ProtocolError as exc:
            return f"protocol error: {exc}"
        except (OSError, ConnectionError) as exc:
            return self.conn.close_reason or f"connection lost: {exc}"
        except TorrentcoreError as exc:
            return str(exc)
        return self.conn.close_reason or "closed"

    def _handle(self, msg_id: int, payload) -> None:
        # BITFIELD must come first, but the BEP 10 handshake may precede it (libtorrent sends it first).
        first = not self.got_first_message
        if msg_id != msg.EXTENDED:
            self.got_first_message = True
        if msg_id == msg.PIECE:
            self._on_piece(*payload)
        elif msg_id == -1:
            pass
        elif msg_id == msg.CHOKE:
            self.peer_choking = True
            self._drop_requests(send_cancel=False)
        elif msg_id == msg.UNCHOKE:
            self.peer_choking = False
            self.fill_requests()
        elif msg_id == msg.INTERESTED:
            self.peer_interested = True
            self.torrent.choker.peer_interest_changed(self)
        elif msg_id == msg.NOT_INTERESTED:
            self.peer_interested = False
            self.torrent.choker.peer_interest_changed(self)
        elif msg_id == msg.HAVE:
            self._on_have(msg.parse_have(payload))
        elif msg_id == msg.BITFIELD:
            if first:
                self._on_bitfield(payload)
            else:
                self._on_late_bitfield(payload)
        elif msg_id == msg.REQUEST:
            self._on_request(*msg.parse_triple(payload))
        elif msg_id == msg.CANCEL:
            block = msg.parse_triple(payload)
            try:
                self.uploads.remove(block)
            except ValueError:
                pass
        elif msg_id == msg.EXTENDED:
            self._on_extended(payload)
        # PORT (DHT) and unknown ids are ignored, as BEP 3 asks.

    # --- their pieces ------------------------------------------------------------------------------

    def _on_bitfield(self, payload: bytes) -> None:
        self.has = Bitfield(self.torrent.meta.num_pieces, payload)
        self.torrent.manager.add_peer_pieces(self.has)
        self._after_pieces_changed()

    def _on_late_bitfield(self, payload: bytes) -> None:
        """A bitfield after other messages: aria2 sends one instead of several HAVEs (libtorrent accepts it).

        Its new bits are taken as HAVEs; a peer does not lose pieces, so cleared bits are ignored.
        """
        update = Bitfield(self.torrent.meta.num_pieces, payload)
        for index in update.indices():
            if not self.has[index]:
                self._on_have(index)

    def _on_have(self, index: int) -> None:
        if index >= self.has.size:
            raise ProtocolError(f"have for piece {index} of {self.has.size}")
        if self.has.set(index):
            self.torrent.manager.add_peer_piece(index)
            if not self.am_interested and self.torrent.manager.wanted(index):
                self.set_interested(True)
            if self.has.complete:
                self._after_pieces_changed()

    def _after_pieces_changed(self) -> None:
        t = self.torrent
        if self.has.complete and t.have.complete:
            self.conn.close("both sides are seeds")
            return
        self.set_interested(t.manager.interesting(self.has))

    def set_interested(self, value: bool) -> None:
        """Tell the peer whether we want something it has."""
        if value != self.am_interested:
            self.am_interested = value
            self.conn.send(msg.simple(msg.INTERESTED if value else msg.NOT_INTERESTED))
            if value:
                self.fill_requests()

    # --- requesting --------------------------------------------------------------------------------

    def pipeline_depth(self) -> int:
        """How many blocks to keep requested: enough for ``QUEUE_SECONDS`` at the peer's rate."""
        if self.snubbed:
            return 2
        by_rate = int(self.down.rate * QUEUE_SECONDS / BLOCK_SIZE)
        depth = max(START_DEPTH if self.down.total < 4 * 1024 * 1024 else MIN_DEPTH, by_rate)
        return min(depth, self.reqq, MAX_DEPTH)

    def fill_requests(self) -> None:
        """Top up the request pipeline if we may and there is room."""
        if self.peer_choking or not self.am_interested or self.conn.closed:
            return
        depth = self.pipeline_depth()
        room = depth - len(self.outstanding)
        if room <= 0 or (self.outstanding and room < max(1, depth // 8)):
            return
        blocks = self.torrent.manager.next_requests(self.key, self.has, room)
        if blocks:
            out = self.outstanding
            for index, begin, length in blocks:
                out[(index, begin)] = length
            if len(out) == len(blocks):
                self.last_block = time.monotonic()  # the request clock starts now
            self.conn.send(b"".join(msg.request(*b) for b in blocks))
        elif not self.outstanding and not self.torrent.manager.interesting(self.has):
            self.set_interested(False)

    def _drop_requests(self, send_cancel: bool) -> None:
        if not self.outstanding:
            return
        blocks = [(i, b, n) for (i, b), n in self.outstanding.items()]
        self.outstanding.clear()
        self.torrent.manager.release(self.key, blocks)
        if send_cancel and not self.conn.closed:
            self.conn.send(b"".join(msg.cancel(*b) for b in blocks))
        self.torrent.wake_requesters()

    def cancel_block(self, index: int, begin: int) -> None:
        """Another peer delivered this block first (endgame): cancel ours."""
        length = self.outstanding.pop((index, begin), None)
        if length is not None:
            self.conn.send(msg.cancel(index, begin, length))

    def check_timeouts(self, now: float) -> None:
        """Called every second: a peer that stopped delivering loses its requests to others."""
        if self.outstanding and now - self.last_block > REQUEST_TIMEOUT:
            if not self.snubbed:
                self.log.info("peer snubbed us", outstanding=len(self.outstanding))
            self.snubbed = True
            self._drop_requests(send_cancel=True)

    def _on_piece(self, index: int, begin: int, length: int) -> None:
        t = self.torrent
        if length <= BLOCK_SIZE:
            # Receive the whole block before looking up where it goes: from block_buffer() to
            # block_received() no other greenlet may run, or another peer could complete (endgame) the
            # piece meanwhile, which is then hashed and written while this one still writes into it.
            self.conn.prefetch(length)
        dest = t.manager.block_buffer(index, begin, length)
        if dest is None:
            self.conn.skip(length)
            t.stats_wasted(length)
            self.outstanding.pop((index, begin), None)
            return
        self.conn.read_into(dest)
        self.outstanding.pop((index, begin), None)
        self.last_block = time.monotonic()
        self.snubbed = False
        self.down.add(length)
        others, piece = t.manager.block_received(self.key, index, begin)
        t.block_arrived(length)
        for other in others:
            peer = t.peers.get(other)
            if peer is not None:
                peer.cancel_block(index, begin)
        if piece is not None:
            t.verify_piece(piece)
        self.fill_requests()
        t.download_limit.consume(length)  # may sleep: only once the block is recorded

    # --- their requests ----------------------------------------------------------------------------

    def _on_request(self, index: int, begin: int, length: int) -> None:
        t = self.torrent
        valid = (
            index < t.meta.num_pieces
            and t.have[index]
            and 0 < length <= msg.MAX_REQUEST_LENGTH
            and begin + length <= t.meta.piece_size(index)
        )
        if not valid:
            self.bad_requests += 1
            if self.bad_requests > MAX_BAD_REQUESTS:
                raise ProtocolError("too many invalid requests")
            return
        if self.am_choking:
            return  # BEP 3: requests while choked are dropped
        if len(self.uploads) >= OUR_REQQ:
            self.bad_requests += 1
            if self.bad_requests > MAX_BAD_REQUESTS:
                raise ProtocolError("request queue flooded")
            return
        self.uploads.append((index, begin, length))
        self.conn.wake()

    def _produce(self) -> bytes | None:
        """Writer callback: the next piece message to upload, if any."""
        if self.am_choking or not self.uploads:
            return None
        index, begin, length = self.uploads.popleft()
        t = self.torrent
        t.upload_limit.consume(length)
        if self.am_choking or self.conn.closed:
            return None
        data = t.read_block(index, begin, length)
        if data is None:
            return None
        self.up.add(length)
        t.block_uploaded(length)
        return msg.piece_header(index, begin, length) + data

    def choke(self) -> None:
        """Stop serving this peer."""
        if not self.am_choking:
            self.am_choking = True
            self.uploads.clear()
            self.conn.send(msg.simple(msg.CHOKE))

    def unchoke(self) -> None:
        """Start serving this peer."""
        if self.am_choking:
            self.am_choking = False
            self.conn.send(msg.simple(msg.UNCHOKE))

    def send_have(self, index: int) -> None:
        """Tell the peer we have a new piece; lose interest if it has nothing more for us."""
        self.conn.send(msg.have(index))
        if self.am_interested and not self.outstanding and not self.torrent.manager.interesting(self.has):
            self.set_interested(False)

    # --- extension protocol (BEP 10) ---------------------------------------------------------------

    def _send_extension_handshake(self) -> None:
        t = self.torrent
        payload = {"m": {}, "reqq": OUR_REQQ, "v": f"torrentcore {t.version}"}
        if t.port:
            payload["p"] = t.port
        self.conn.send(msg.extended(0, bencode.encode(payload)))

    def _on_extended(self, payload: bytes) -> None:
        if not payload or payload[0] != 0:
            return  # we negotiate no extension messages yet
        try:
            info = bencode.decode(payload[1:], max_size=64 * 1024)
        except bencode.BencodeError as exc:
            raise ProtocolError(f"bad extension handshake: {exc}") from None
        if not isinstance(info, dict):
            raise ProtocolError("extension handshake is not a dictionary")
        reqq = info.get(b"reqq")
        if isinstance(reqq, int) and reqq > 0:
            self.reqq = min(reqq, MAX_DEPTH)
        port = info.get(b"p")
        if isinstance(port, int) and 0 < port < 65536:
            self.listen_port = port
        version = info.get(b"v")
        if isinstance(version, bytes):
            self.client = version.decode("utf-8", "replace")[:40]


def _client_name(peer_id: bytes) -> str:
    """A readable client name from an Azureus-style peer id (``-LT2010-...``)."""
    if len(peer_id) == 20 and peer_id[:1] == b"-" and peer_id[7:8] == b"-":
        return peer_id[1:7].decode("ascii", "replace")
    return peer_id[:8].decode("ascii", "replace")
