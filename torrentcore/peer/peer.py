"""The life of one peer connection after the handshake: one greenlet reading messages.

:class:`Peer` keeps the four BEP 3 states (am/peer choking, am/peer
interested) and the peer's pieces, and reacts to every message; our requests to it are its
:class:`~torrentcore.peer.request_pipeline.RequestPipeline`'s, its requests to us its
:class:`~torrentcore.peer.upload.UploadQueue`'s. Decisions that involve the whole
swarm (which blocks, who to unchoke) are delegated to the torrent.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import gevent
import structlog

from .. import bencode
from ..bitfield import Bitfield
from ..errors import ProtocolError, TorrentcoreError
from ..hookspec import BLOCK_SIZE, PeerInfo
from ..piecemanager import STORED
from ..ratemeter import RateMeter
from . import budget as bud
from . import messages as msg
from .connection import Connection, format_address
from .extensions import MAX_HANDSHAKE, MAX_HANDSHAKE_VALUES, ExtensionRegistry, PeerExtensions
from .request_pipeline import MAX_DEPTH, RequestPipeline
from .upload import OUR_REQQ, UploadQueue

if TYPE_CHECKING:  # pragma: no cover
    from .hash_exchange import HashExchange
    from .ports import TorrentPort

log = structlog.get_logger(__name__)
_PIECE = msg.PIECE
_monotonic = time.monotonic

#: Fast extension (BEP 6): pieces in the allowed-fast set we grant each IPv4 peer (BEP 6 suggests 10).
ALLOWED_FAST_K = 10
#: A late bitfield is free when it brings a new piece per this many of its bytes (5 + its length): aria2 sends
#: one once it is no longer than its HAVEs (9 bytes each) would be; twice that is the margin.
LATE_BITFIELD_HAVE_BYTES = 18
#: Fairness: a peer's read loop yields to the other greenlets (gevent.sleep(0)) after this many messages or
#: this many block bytes, whichever comes first, even while data is already buffered (gevent's recv_into
#: then returns at once, so without it one flooding peer held the event loop: an honest leecher fell from
#: 8.4 to 0.05 MB/s). 64 keep-alives take ~0.1 ms and 16 blocks ~0.3 ms here; a yield costs ~4 us, and
#: gevent polls sockets at least every switch interval (5 ms) while greenlets keep yielding.
READ_YIELD_MESSAGES = 64
READ_YIELD_BYTES = 256 * 1024


class Peer:
    """A connected, handshaken peer of one torrent.

    About 510 lines: one connection's state machine (BEP 3 choking and interest, BEP 6 fast extension, BEP 10
    dispatch) in one place, with the per-block path (``_on_piece``) written inline because it runs 65,536 times
    per GiB. Our requests to the peer are its :class:`~torrentcore.peer.request_pipeline.RequestPipeline`'s,
    its requests to us its :class:`~torrentcore.peer.upload.UploadQueue`'s.
    """

    def __init__(self, torrent: TorrentPort, conn: Connection, peer_id: bytes, reserved: bytes, incoming: bool,
                 source: str = "", extensions: ExtensionRegistry | None = None, encrypted: bool = False):
        #: The torrent as this peer sees it: a narrow port (see :mod:`torrentcore.peer.ports`), not the Torrent.
        self.torrent = torrent
        #: Whether the connection is encrypted (MSE/PE).
        self.encrypted = encrypted or conn.encrypted
        self.conn = conn
        self.address = conn.address
        #: The address we know the peer by (a plain attribute, not a property: read for every block).
        self.key: tuple[str, int] = conn.address
        self.peer_id = peer_id
        self.incoming = incoming
        #: Where we learnt of this peer (one of session.PEER_SOURCES); incoming connections are "incoming".
        self.source = source or ("incoming" if incoming else "manual")
        self.supports_extensions = msg.has_bit(reserved, msg.RESERVED_EXTENSIONS)
        # Fast extension (BEP 6): we always set the bit, so it is on when the peer set it too.
        self.fast = msg.has_bit(reserved, msg.RESERVED_FAST)
        self.supports_dht = msg.has_bit(reserved, msg.RESERVED_DHT)  # BEP 5: it wants a PORT message
        # BEP 52: it speaks v2 (serves piece layer hashes): a v2-only torrent's peers do (they used its v2
        # hash); in a hybrid's v1 swarm the bit says so (libtorrent sets it only there).
        self.supports_v2 = torrent.meta.v2_only or msg.has_bit(reserved, msg.RESERVED_V2)
        #: A v2 torrent's piece layers (None for v1; a port without the attribute is a v1 torrent's).
        self._layers = getattr(torrent, "layers", None)
        #: BEP 52 hash messages with this peer (None for a v1 torrent).
        self.hashes: HashExchange | None = None
        if self._layers is not None:
            from .hash_exchange import HashExchange  # v2 torrents only: not imported by a v1 run

            self.hashes = HashExchange(
                self._layers, conn.send, torrent.meta.num_pieces, self.supports_v2, torrent.layers_complete,
                lambda i: torrent.read_block(i, 0, torrent.meta.piece_size(i)))  # block-layer hashes come from disk
        self.allowed_fast_out: frozenset[int] = frozenset()  # pieces it may request while we choke it
        self.suggested = 0
        self.log = log.bind(torrent=torrent.meta.name, peer=format_address(self.address))
        self.has = Bitfield(torrent.meta.num_pieces)
        self.am_choking = True
        self.am_interested = False
        self.peer_choking = True
        self.peer_interested = False
        #: Per-kind budgets of control messages (see :mod:`torrentcore.peer.budget`).
        self.budget = bud.MessageBudget()
        self.down = RateMeter()
        #: ``down.total`` as already added to the torrent's counters (``block_arrived``): the blocks of one
        #: :meth:`Connection.take_blocks` batch are counted there at once (see :meth:`_count_arrived`).
        self._counted = 0
        self.up = RateMeter()
        self.listen_port: int | None = None
        self.client = _client_name(peer_id)
        self.got_first_message = False
        #: The connection ended for a protocol error or a flood (the listener then throttles its reconnects).
        self.misbehaved = False
        #: BEP 10: the peer's extension handshake (``None`` until it arrives) and our per-peer dispatch.
        self.extension_handshake: dict | None = None
        #: MSE/PE: the peer's BEP 10 ``e`` flag (1: it prefers encrypted connections).
        self.prefers_encryption = False
        self.extensions = PeerExtensions(self, extensions or ExtensionRegistry({}))
        #: Our requests to this peer (:mod:`torrentcore.peer.request_pipeline`).
        self.requests = RequestPipeline(self, torrent, self.log)
        #: The peer's requests to us (:mod:`torrentcore.peer.upload`).
        self.serving = UploadQueue(self, torrent)
        conn.producer = self.serving.produce

    # --- identity --------------------------------------------------------------------------------

    @property
    def transport(self) -> str:
        """``tcp`` or ``utp`` (BEP 29): what the connection runs on."""
        return getattr(self.conn, "transport", "tcp")

    @property
    def encryption_hint(self) -> bool | None:
        """True if the peer can encrypt (this connection is encrypted, or its ``e`` flag says so), else None."""
        return True if self.encrypted or self.prefers_encryption else None

    def info(self) -> PeerInfo:
        """A snapshot for reporters."""
        return PeerInfo(
            address=self.address,
            client=self.client,
            incoming=self.incoming,
            source=self.source,
            download_rate=self.down.rate,
            upload_rate=self.up.rate,
            downloaded=self.down.total,
            uploaded=self.up.total,
            is_seed=self.has.complete,
            encrypted=self.encrypted,
            transport=self.transport,
        )

    # --- main loop ---------------------------------------------------------------------------------

    def run(self) -> str:
        """Read and handle messages until the connection ends; return why it ended."""
        t = self.torrent
        self.conn.start_writer()
        if self.supports_extensions:
            self._send_extension_handshake()
        if self.fast:
            self._send_fast_greeting()
        elif t.have.count:
            self.conn.send(msg.bitfield(self._advertised().to_bytes()))
        if self.supports_dht and t.dht_port is not None:
            self.conn.send(msg.port(t.dht_port))  # BEP 5: where our DHT node listens
        conn = self.conn
        read_message, take_blocks, handle = conn.read_message, conn.take_blocks, self._handle
        on_piece, on_block = self._on_piece, self._on_block
        messages, block_bytes = READ_YIELD_MESSAGES, READ_YIELD_BYTES  # left before the next yield
        try:
            while not conn.closed:
                # The whole blocks already buffered (nearly every one of a download), within the budget.
                got, blocks = take_blocks(on_block, BLOCK_SIZE, block_bytes, messages)
                if blocks:
                    if self.down.total != self._counted:
                        self._count_arrived()
                    self.got_first_message = True
                    block_bytes -= got
                    messages -= blocks
                else:
                    msg_id, payload = read_message()
                    if msg_id == _PIECE:  # a block not all received yet: no dispatch chain either
                        self.got_first_message = True
                        on_piece(*payload)
                        block_bytes -= payload[2]
                    else:
                        handle(msg_id, payload)
                    messages -= 1
                if messages <= 0 or block_bytes <= 0:  # fairness: see READ_YIELD_MESSAGES
                    if conn.on_drained is not None:
                        conn.call_on_drained()  # (an INTERESTED heard: _interest_heard)
                    gevent.sleep(0)
                    messages, block_bytes = READ_YIELD_MESSAGES, READ_YIELD_BYTES
        except bud.FloodError as exc:
            self.misbehaved = True
            self.log.info("peer dropped for flooding", reason=str(exc), client=self.client)
            return f"protocol error: {exc}"
        except ProtocolError as exc:
            self.misbehaved = True
            return f"protocol error: {exc}"
        except (OSError, ConnectionError) as exc:
            return self.conn.close_reason or f"connection lost: {exc}"
        except TorrentcoreError as exc:
            return str(exc)
        finally:
            self._count_arrived()  # the blocks of a batch cut short (an error, a close)
        return self.conn.close_reason or "closed"

    def _count_arrived(self) -> None:
        """Add the blocks stored since the last call to the torrent's counters (``block_arrived``): once per
        batch of :meth:`Connection.take_blocks`, and before anything in the per-block path that may let another
        greenlet run (a complete piece's hand-over, a rate limit's sleep), so the torrent's count is never
        behind when someone else can read it. One call per batch instead of one per block."""
        n = self.down.total - self._counted
        if n:
            self._counted += n
            self.torrent.block_arrived(n)

    def _handle(self, msg_id: int, payload) -> None:
        # BITFIELD (or BEP 6 HAVE ALL / HAVE NONE) must come first, but the BEP 10 handshake may precede it
        # (libtorrent sends it first), and a keep-alive is no message.
        first = not self.got_first_message
        if msg_id != msg.EXTENDED and msg_id != -1 and msg_id != msg.PORT:  # PORT (BEP 5) may come first too
            self.got_first_message = True
        if msg_id == msg.PIECE:
            self._on_piece(*payload)
        elif msg_id == -1:
            self.budget.spend(bud.KEEPALIVE)
        elif msg_id == msg.CHOKE:
            self.budget.spend(bud.STATE)
            self.peer_choking = True
            self.requests.on_choked(self.fast)
        elif msg_id == msg.UNCHOKE:
            self.budget.spend(bud.STATE)
            self.peer_choking = False
            self.fill_requests()
        elif msg_id == msg.INTERESTED:
            self.budget.spend(bud.STATE)
            self.peer_interested = True
            if self.conn.buffered:  # see _interest_heard
                self.conn.on_drained = self._interest_heard
            else:
                self.torrent.interest_changed(self)
        elif msg_id == msg.NOT_INTERESTED:
            self.budget.spend(bud.STATE)
            self.peer_interested = False
            self.torrent.interest_changed(self)
        elif msg_id == msg.HAVE:
            self._on_have(msg.parse_have(payload))
        elif msg_id == msg.BITFIELD:
            if first:
                self._on_bitfield(payload)
            else:
                self._on_late_bitfield(payload)
        elif msg_id == msg.REQUEST:
            self.serving.on_request(*msg.parse_triple(payload))
        elif msg_id == msg.CANCEL:
            self.serving.on_cancel(msg.parse_triple(payload))
        elif msg_id in msg.FAST_IDS:
            self._on_fast(msg_id, payload, first)
        elif msg_id == msg.EXTENDED:
            self._on_extended(payload)
        elif msg_id == msg.PORT:
            self.budget.spend(bud.PORT)
            self._on_port(payload)
        elif msg.HASH_REQUEST <= msg_id <= msg.HASH_REJECT and self.hashes is not None:
            self.budget.spend(bud.EXTENSION)  # (the hashes served are capped too: hash_exchange)
            self.hashes.on_message(msg_id, payload)
        else:
            # Unknown ids are ignored, as BEP 3 asks (the v2 hash messages too, for a v1 torrent).
            self.budget.spend(bud.UNKNOWN)

    def _interest_heard(self) -> None:
        """INTERESTED reaches the choker (which may unchoke the peer at once) only after the messages that came
        with it are read (or after READ_YIELD_MESSAGES of them): requests pipelined behind it, sent before the
        peer could see an unchoke, are then requests while choked, as BEP 3 has them. Seeding at 8 MB/s, a
        flooder's INTERESTED + 500 REQUESTs + a CANCEL flood got an at-once unchoke and took the rate limit's
        whole burst (8 MiB) before its cancels were read; now it is dropped for its requests while choked."""
        self.torrent.interest_changed(self)

    def _on_port(self, payload: bytes) -> None:
        """PORT (BEP 5): the peer's DHT node is on this UDP port; our node pings it (it may join our table)."""
        dht = getattr(self.torrent, "dht", None)
        if dht is not None and len(payload) == 2 and int.from_bytes(payload, "big"):
            dht.add_contact((self.address[0], int.from_bytes(payload, "big")))

    # --- their pieces ------------------------------------------------------------------------------

    def _on_bitfield(self, payload: bytes) -> None:
        self.has = Bitfield(self.torrent.meta.num_pieces, payload)
        self.torrent.manager.add_peer_pieces(self.has)
        self._after_pieces_changed()

    def _on_late_bitfield(self, payload: bytes) -> None:
        """A bitfield after other messages: aria2 sends one instead of its HAVEs whenever it is no longer than
        they would be (``DefaultBtInteractive::checkHave``: 5 + bitfield length <= 9 x new pieces); libtorrent
        accepts it.

        Its new bits are taken as HAVEs; a peer does not lose pieces, so cleared bits are ignored. One that
        brings at least half the new pieces aria2's rule needs is free, as new HAVEs are: at most
        :data:`LATE_BITFIELD_HAVE_BYTES` x pieces / its length of those per connection (about 144, each
        O(pieces) in C). Others spend the ``late bitfield`` budget. Why: an aria2c leecher fetching from us
        at 100 MB/s sends dozens a second (one per 15 pieces of a 1,024-piece torrent), and a flat budget of
        2 a second dropped it half a second in, every time (``benchmarks/seed.py``, issue 17).
        """
        update = Bitfield(self.torrent.meta.num_pieces, payload)
        new = self.has.added_by(update)
        if len(new) * LATE_BITFIELD_HAVE_BYTES < 5 + len(payload):
            self.budget.spend(bud.LATE_BITFIELD)
        for index in new:
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
        else:  # new HAVEs are bounded by the piece count, repeated ones by a budget
            self.budget.spend(bud.REDUNDANT_HAVE)

    def _after_pieces_changed(self) -> None:
        t = self.torrent
        if self.has.complete and t.have.complete and (not self.supports_v2 or self._layers is None
                                                      or self._layers.complete):  # it may give missing layers
            self.conn.close("both sides are seeds")
            return
        self.set_interested(t.manager.interesting(self.has))
        if self.hashes is not None:
            self.hashes.request()

    def set_interested(self, value: bool) -> None:
        """Tell the peer whether we want something it has."""
        if value != self.am_interested:
            self.am_interested = value
            self.conn.send(msg.simple(msg.INTERESTED if value else msg.NOT_INTERESTED))
            if value:
                self.fill_requests()

    @property
    def choked_requests(self) -> int:
        """Requests it sent while we choked it, past CHOKE_GRACE (the choker never unchokes a greedy peer)."""
        return self.serving.choked_requests

    # --- requesting (torrentcore.peer.request_pipeline) ---------------------------------------------

    @property
    def outstanding(self) -> dict[tuple[int, int], int]:
        """Our requests to the peer not yet answered: (piece, offset) -> length (the pipeline's)."""
        return self.requests.outstanding

    @property
    def snubbed(self) -> bool:
        """No block for REQUEST_TIMEOUT while requests were outstanding (the choker ranks such peers last)."""
        return self.requests.snubbed

    @property
    def may_request(self) -> bool:
        """May we send this peer requests now (:attr:`RequestPipeline.may_request`)."""
        return self.requests.may_request

    def fill_requests(self) -> None:
        """Top up the request pipeline if we may and there is room (:meth:`RequestPipeline.fill`)."""
        self.requests.fill()

    def cancel_block(self, index: int, begin: int) -> None:
        """Another peer delivered this block first (endgame): cancel ours."""
        self.requests.cancel_block(index, begin)

    def check_timeouts(self, now: float) -> None:
        """Called every second: a peer that stopped delivering loses its requests to others."""
        self.requests.check_timeouts(now)

    def _on_piece(self, index: int, begin: int, length: int) -> None:
        """A PIECE header whose payload is not all received yet (the rest: :meth:`_on_block`)."""
        key = (index, begin)
        pipe = self.requests
        if pipe.outstanding.get(key) != length and key not in pipe.awaiting_answer:
            # Never asked for (nor cancelled/released): a bogus index, offset or length, or data pushed at us.
            raise ProtocolError(f"block we did not request (piece {index}, offset {begin}, {length} bytes)")
        # Receive the whole block first, then copy it into its piece and record it in one call (store_block):
        # no other greenlet runs between finding the piece and recording the block, so no other peer can
        # complete (endgame) the piece meanwhile and have it hashed while this one still writes into it.
        # Only blocks of at most BLOCK_SIZE are ever requested (a longer one is never needed).
        conn = self.conn
        if length <= BLOCK_SIZE:
            conn.prefetch(length)
            self._on_block(index, begin, conn.take(length))
            self._count_arrived()
            return
        pipe.awaiting_answer.pop(key, None)
        conn.skip(length)
        self.torrent.stats_wasted(length)
        pipe.outstanding.pop(key, None)

    def _on_block(self, index: int, begin: int, data: memoryview) -> None:
        """A whole block received (``data``: a view of the read buffer, valid until the next read)."""
        # The per-block hot path (65,536 calls per GiB): keep it free of logging, hooks and allocations.
        key = (index, begin)
        pipe = self.requests
        outstanding = pipe.outstanding
        length = len(data)
        asked = outstanding.pop(key, None)
        if asked != length:
            if key not in pipe.awaiting_answer:
                # Never asked for (nor cancelled/released): a bogus index, offset or length, or data pushed at us.
                if asked is not None:
                    outstanding[key] = asked  # still requested (released with the others when the peer goes)
                raise ProtocolError(f"block we did not request (piece {index}, offset {begin}, {length} bytes)")
        if pipe.awaiting_answer:
            pipe.awaiting_answer.pop(key, None)
        t = self.torrent
        manager = t.manager
        # Copied into its piece and recorded in one call, no other greenlet running meanwhile (see _on_piece).
        result = manager.store_block(self.key, index, begin, data)
        if result is None:
            t.stats_wasted(length)
            return
        # The one per-block count of this peer: its rate, and (RequestPipeline.check_timeouts, snubbed) whether
        # blocks still come, without a clock read or flag per block; the torrent's count follows from it once
        # per batch (_count_arrived).
        self.down.total += length
        if result is not STORED:  # not the usual block (asked from this peer only, not its piece's last)
            others, piece = result
            if others:
                for other in others:
                    peer = t.peers.get(other)
                    if peer is not None:
                        peer.cancel_block(index, begin)
            if piece is not None:
                self._count_arrived()  # (the hand-over may wait for a slot: other greenlets run)
                t.verify_piece(piece)
        # Else fill_requests would find too little room here, or all peers together at the request limit.
        if len(outstanding) <= pipe.refill_below and (
                not outstanding or manager.max_requested - manager.requested_blocks >= pipe.refill_min_free):
            pipe.fill()
        if t.download_limit.rate:
            self._count_arrived()
            t.download_limit.consume(length)  # may sleep: only once the block is recorded

    def choke(self) -> None:
        """Stop serving this peer."""
        if not self.am_choking:
            self.am_choking = True
            self.conn.send(msg.simple(msg.CHOKE))
            self.serving.choked()

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

    # --- fast extension (BEP 6) --------------------------------------------------------------------

    def _advertised(self) -> Bitfield:
        """The pieces we greet with: a hybrid leaves out those not checked with their Merkle hash yet."""
        have = self.torrent.have
        return have if self._layers is None else self._layers.advertised(have)

    def _send_fast_greeting(self) -> None:
        """HAVE ALL / HAVE NONE / BITFIELD (one of them is required), then our allowed-fast set."""
        t = self.torrent
        have = self._advertised()
        if have.complete:
            self.conn.send(msg.simple(msg.HAVE_ALL))
        elif not have.count:
            self.conn.send(msg.simple(msg.HAVE_NONE))
        else:
            self.conn.send(msg.bitfield(have.to_bytes()))
        # At most a quarter of the torrent, so that choking still means something on small torrents.
        k = min(ALLOWED_FAST_K, t.meta.num_pieces // 4)
        allowed = msg.allowed_fast_set(t.meta.info_hash, self.address[0], t.meta.num_pieces, k)
        if allowed:
            self.allowed_fast_out = frozenset(allowed)
            self.conn.send(b"".join(msg.allowed_fast(i) for i in allowed))

    def _on_fast(self, msg_id: int, payload: bytes, first: bool) -> None:
        name = msg.NAMES[msg_id]
        if not self.fast:
            raise ProtocolError(f"{name} message from a peer that did not enable the fast extension")
        n = self.torrent.meta.num_pieces
        if msg_id in (msg.HAVE_ALL, msg.HAVE_NONE):
            if payload:
                raise ProtocolError(f"{name} message with a payload")
            if not first:
                raise ProtocolError(f"{name} is only allowed as the first message")
            self.log.debug(f"peer sent {name}")
            if msg_id == msg.HAVE_ALL:
                self.has = Bitfield.full(n)
                self.torrent.manager.add_peer_pieces(self.has)
                self._after_pieces_changed()
            return
        if msg_id == msg.REJECT:
            self.requests.on_reject(*msg.parse_triple(payload))
            return
        index = msg.parse_have(payload)
        if index >= n:
            raise ProtocolError(f"{name} for piece {index} of {n}")
        if msg_id == msg.SUGGEST:
            self.budget.spend(bud.SUGGEST)
            self.suggested += 1  # advisory: our strategy already orders pieces by rarity
        elif not self.requests.allow_fast(index):
            self.budget.spend(bud.SUGGEST)  # a repeated allowed-fast piece, or more than we take

    # --- extension protocol (BEP 10) ---------------------------------------------------------------

    def _send_extension_handshake(self) -> None:
        t = self.torrent
        payload = self.extensions.handshake_fields(len(t.meta.raw_info) or None)
        payload.update({"reqq": OUR_REQQ, "v": f"torrentcore {t.version}"})
        if t.listen_port:
            payload["p"] = t.listen_port
        if t.encryption != "disable":
            payload["e"] = 1  # BEP 10: we prefer encrypted connections (MSE/PE)
        self.conn.send(msg.extended(0, bencode.encode(payload)))

    def _on_extended(self, payload: bytes) -> None:
        if not payload:
            raise ProtocolError("empty extension message")
        if payload[0] != 0:
            self.budget.spend(bud.EXTENSION)
            self.extensions.on_message(payload[0], bytes(payload[1:]))
            return
        self.budget.spend(bud.EXTENSION_HANDSHAKE)
        try:
            # At most MAX_HANDSHAKE_VALUES values: the decoder stops there (a 64 KiB handshake of 5,000 'm'
            # entries took 48 ms to decode; it now fails after ~1 ms).
            info = bencode.decode(payload[1:], max_size=MAX_HANDSHAKE, max_tokens=MAX_HANDSHAKE_VALUES)
        except bencode.BencodeError as exc:
            raise ProtocolError(f"bad extension handshake: {exc}") from None
        if not isinstance(info, dict):
            raise ProtocolError("extension handshake is not a dictionary")
        reqq = info.get(b"reqq")
        if isinstance(reqq, int) and reqq > 0:
            self.requests.reqq = min(reqq, MAX_DEPTH)
        port = info.get(b"p")
        if isinstance(port, int) and 0 < port < 65536:
            self.listen_port = port
        self.prefers_encryption = info.get(b"e") == 1
        version = info.get(b"v")
        if isinstance(version, bytes):
            self.client = version.decode("utf-8", "replace")[:40]
        self.extension_handshake = info
        self.extensions.on_handshake(info)

    def supports_extension(self, name: str) -> bool:
        """True if the peer and we both speak extension message ``name`` (BEP 10)."""
        return self.extensions.supports(name)

    def send_extension(self, name: str, payload: bytes) -> bool:
        """Send extension message ``name`` with the id the peer chose; False if it does not speak it."""
        ext_id = self.extensions.their_id(name)
        if ext_id is None or self.conn.closed:
            return False
        self.conn.send(msg.extended(ext_id, payload))
        return True

    def close(self, reason: str) -> None:
        """Drop the connection."""
        self.conn.close(reason)


def _client_name(peer_id: bytes) -> str:
    """A readable client name from an Azureus-style peer id (``-LT2010-...``)."""
    if len(peer_id) == 20 and peer_id[:1] == b"-" and peer_id[7:8] == b"-":
        return peer_id[1:7].decode("ascii", "replace")
    return peer_id[:8].decode("ascii", "replace")
