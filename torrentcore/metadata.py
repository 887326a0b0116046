"""Fetch a torrent's info dictionary from its swarm (BEP 9), for magnet links.

:class:`MetadataFetcher` gathers peer addresses from *peer sources* and asks
peers, a few at a time, for the metadata with the ``ut_metadata`` extension
message in 16 KiB pieces. Each peer is asked for every piece, so a peer that
sends a wrong, short or oversized piece, or metadata failing the SHA-1 check
against the info-hash, is known exactly: it is dropped (never asked again)
and other peers are tried. The first peer whose metadata matches wins.

A peer source is any callable ``source(info_hash) -> iterable of (host, port)``
(see :data:`PeerSource`): :func:`tracker_source` announces to the magnet's
trackers; a DHT node plugs in the same way, e.g.
``lambda info_hash: node.get_peers(info_hash, timeout=20)``. Sources are called
in their own greenlets, again every :data:`SOURCE_RETRY` seconds until the
metadata arrives, so a slow source never holds up a fast one.

Every wait is bounded: per connection (:data:`PEER_TIMEOUT`) and overall (the
``timeout`` given to :meth:`MetadataFetcher.fetch`).

Our own address is never a candidate: trackers (opentracker does) and the DHT
may list the address we announced, so an address on this host with our
announced port (``own_port``) is ignored, and so is a peer whose handshake
carries our own peer id; neither is counted among the peers known or tried.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import os
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import gevent
import gevent.event
import gevent.pool
import structlog

from . import bencode
from .errors import ProtocolError, TorrentcoreError, TrackerError
from .peer import handshake
from .peer import messages as msg
from .peer.connection import Connection
from .peer.extensions import (
    BUILTIN_IDS,
    MAX_HANDSHAKE,
    MAX_METADATA_SIZE,
    META_DATA,
    META_REJECT,
    UT_METADATA,
    metadata_piece_count,
    metadata_piece_length,
    metadata_request,
    parse_metadata,
)
from .statefile import write_atomic
from .tracker import AnnounceRequest, TrackerTiers

log = structlog.get_logger(__name__)

#: ``source(info_hash) -> iterable of (host, port)``; may block (it runs in its own greenlet).
PeerSource = Callable[[bytes], Iterable[tuple[str, int]]]

#: Seconds one peer gets to connect, handshake and deliver the whole metadata.
PEER_TIMEOUT = 30.0
#: Seconds to connect to a peer.
CONNECT_TIMEOUT = 5.0
#: Peers asked at the same time.
MAX_CONNECTIONS = 8
#: Seconds between calls of one peer source.
SOURCE_RETRY = 15.0
#: Seconds before trackers that answered are asked again during one fetch.
TRACKER_MIN_REPEAT = 300.0
#: A peer that failed to connect or had no metadata yet is tried again after this many seconds,
#: doubling after each failure up to RETRY_MAX (a peer that sent bad metadata is never tried again).
RETRY_DELAY = 3.0
RETRY_MAX = 30.0
#: Most peer addresses remembered (a DHT or tracker listing more costs bounded memory).
MAX_ADDRESSES = 1000
#: Non-metadata messages we read (and ignore) while waiting for the extension handshake or pieces.
MAX_OTHER_MESSAGES = 2000
#: Metadata pieces requested at once from one peer.
REQUEST_WINDOW = 16
#: Default time limit for the whole fetch (``torrentcore run --metadata-timeout``).
DEFAULT_TIMEOUT = 120.0


class MetadataError(TorrentcoreError):
    """No peer gave us the metadata in time."""


class BadPeer(Exception):
    """This peer sent something wrong: drop it and never ask it again."""


class OwnPeer(Exception):
    """The handshake carried our own peer id: this address is ourselves."""


class NotYet(Exception):
    """This peer could not help now (unreachable, no metadata yet): it may be tried again later."""


@dataclass
class _Address:
    attempts: int = 0
    next_try: float = 0.0
    bad: bool = False
    own: bool = False  # its handshake carried our peer id: ourselves, never tried again nor counted


@functools.lru_cache(maxsize=1)
def _host_addresses() -> frozenset[str]:
    """The addresses of this host's name (best effort; loopback is recognised separately)."""
    found = {"0.0.0.0", "::"}
    try:
        found.update(str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None))
    except OSError:
        pass
    return frozenset(found)


def is_own_address(address: tuple[str, int], own_port: int | None) -> bool:
    """True when ``address`` is ours: port ``own_port`` on a loopback address or an address of this host."""
    host, port = address
    if not own_port or port != own_port:
        return False
    if host.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified or str(ip) in _host_addresses()


@dataclass
class FetchResult:
    """The verified info dictionary (raw bytes, hashing to the info-hash) and who helped."""

    raw_info: bytes
    source_peer: tuple[str, int]
    peers: list[tuple[str, int]] = field(default_factory=list)


def tracker_source(trackers: list[list[str]], peer_id: bytes, port: int = 0) -> PeerSource:
    """A peer source announcing to ``trackers`` (BEP 12 tiers) as a leecher that has nothing yet.

    After an answer, the trackers are not asked again before their ``min interval`` (at least
    :data:`TRACKER_MIN_REPEAT` seconds); failed announces are retried (the tiers back off per tracker).
    """
    tiers = TrackerTiers(trackers)
    not_before = [0.0]

    def source(info_hash: bytes) -> list[tuple[str, int]]:
        if time.monotonic() < not_before[0]:
            return []
        req = AnnounceRequest(info_hash=info_hash, peer_id=peer_id, port=port or 6881, left=1,
                              event="started", numwant=200, key=int.from_bytes(peer_id[-4:], "big"))
        with gevent.Timeout(60, TrackerError("no tracker answered within 60 s")):
            resp = tiers.announce(req, timeout=15.0, total_timeout=60.0)
        not_before[0] = time.monotonic() + max(TRACKER_MIN_REPEAT, resp.min_interval or 0)
        return list(resp.peers)

    return source


class MetadataFetcher:
    """Ask the swarm of ``info_hash`` for its metadata (see the module docstring).

    ``own_port`` is the port we announce (to the trackers of ``sources``): that port on this host is
    ourselves, never dialled nor counted.
    """

    def __init__(
        self,
        info_hash: bytes,
        peer_id: bytes,
        peers: Iterable[tuple[str, int]] = (),
        sources: Sequence[PeerSource] = (),
        max_connections: int = MAX_CONNECTIONS,
        peer_timeout: float = PEER_TIMEOUT,
        own_port: int | None = None,
        encryption: str = "prefer",
        connect: handshake.Connect | None = None,
        info_hash_v2: bytes | None = None,
    ) -> None:
        self.info_hash = info_hash
        self.connect = connect  # opens the stream (the session's transports: uTP, TCP); None: TCP
        #: A v2 link's full SHA-256 (``urn:btmh``): the metadata must hash to it (BEP 52); ``info_hash``
        #: is then its first 20 bytes (v2-only) or the v1 hash (hybrid, checked too).
        self.info_hash_v2 = info_hash_v2
        self.encryption = encryption  # MSE/PE policy for our connections (peer/handshake.py)
        self.peer_id = peer_id
        self.own_port = own_port
        self.own_addresses: set[tuple[str, int]] = set()  # ourselves, as sources listed us (not counted)
        self.sources = list(sources)
        self.max_connections = max(1, max_connections)
        self.peer_timeout = peer_timeout
        self.log = log.bind(info_hash=info_hash.hex())
        self.addresses: dict[tuple[str, int], _Address] = {}
        self.helped: list[tuple[str, int]] = []
        self._result: FetchResult | None = None
        self._stopped = False
        self._done = gevent.event.Event()
        self._wake = gevent.event.Event()
        self.add_peers(peers)

    def add_peers(self, peers: Iterable[tuple[str, int]]) -> None:
        """Learn peer addresses (duplicates are ignored)."""
        for host, port in peers:
            address = (str(host), int(port))
            if address in self.addresses or address in self.own_addresses or not 0 < address[1] < 65536:
                continue
            if is_own_address(address, self.own_port):
                self.own_addresses.add(address)
                self.log.info("metadata: our own address ignored", peer=f"{address[0]}:{address[1]}")
                continue
            if len(self.addresses) < MAX_ADDRESSES:
                self.addresses[address] = _Address()
                self._wake.set()

    def counts(self) -> tuple[int, int]:
        """``(known, tried)``: peer addresses learned and those dialled at least once, ourselves excluded."""
        others = [state for state in self.addresses.values() if not state.own]
        return len(others), sum(1 for state in others if state.attempts)

    def stop(self) -> None:
        """End :meth:`fetch` early (Ctrl-C): it raises :class:`MetadataError` ("stopped")."""
        self._stopped = True
        self._done.set()

    def bad_peers(self) -> set[tuple[str, int]]:
        """Addresses dropped for sending wrong metadata (or being unable to speak ut_metadata), and ourselves."""
        return {address for address, state in self.addresses.items() if state.bad or state.own} | self.own_addresses

    def fetch(self, timeout: float = DEFAULT_TIMEOUT) -> FetchResult:
        """Return the verified metadata; raise :class:`MetadataError` after ``timeout`` seconds without it."""
        self.log.info("metadata fetch started", peers=len(self.addresses), sources=len(self.sources),
                      timeout=timeout)
        pool = gevent.pool.Pool(self.max_connections)
        greenlets = [gevent.spawn(self._run_source, source) for source in self.sources]
        deadline = time.monotonic() + timeout
        try:
            while not self._done.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._dial_ready(pool)
                self._wake.clear()
                gevent.wait([self._done, self._wake], timeout=min(left, 1.0), count=1)
        finally:
            for g in greenlets:
                g.kill(block=False)
            pool.kill(block=True, timeout=2)
        if self._stopped:
            raise MetadataError("stopped before the metadata arrived")
        known, tried = self.counts()
        if self._result is None:
            raise MetadataError(
                f"no peer sent the metadata of {self.info_hash.hex()} within {timeout:g} s "
                f"({known} peers known, {tried} tried)"
            )
        self.log.info("metadata fetch done", peer=f"{self._result.source_peer[0]}:{self._result.source_peer[1]}",
                      peers_known=known, peers_tried=tried)
        self._result.peers = list(self.helped)
        return self._result

    def _dial_ready(self, pool: gevent.pool.Pool) -> None:
        now = time.monotonic()
        for address, state in self.addresses.items():
            if pool.full():
                return
            if state.bad or state.own or state.next_try > now:
                continue
            state.attempts += 1
            state.next_try = float("inf")  # while in flight
            pool.spawn(self._try_peer, address, state)

    def _run_source(self, source: PeerSource) -> None:
        while not self._done.is_set():
            try:
                self.add_peers(source(self.info_hash))
            except (TorrentcoreError, OSError, gevent.Timeout) as exc:
                self.log.info("metadata peer source failed", error=str(exc))
            except Exception as exc:  # noqa: BLE001 - a broken source (a plugin's DHT) must not end the fetch
                self.log.warning("metadata peer source failed", error=repr(exc))
            self._done.wait(SOURCE_RETRY)

    def _try_peer(self, address: tuple[str, int], state: _Address) -> None:
        peer = f"{address[0]}:{address[1]}"
        try:
            with gevent.Timeout(self.peer_timeout, NotYet(f"no metadata within {self.peer_timeout:g} s")):
                raw = self._fetch_from(address)
        except OwnPeer:
            state.own = True
            self.log.info("metadata: connected to ourselves, address ignored", peer=peer)
        except BadPeer as exc:
            state.bad = True
            self.log.info("metadata peer dropped", peer=peer, reason=str(exc))
        except (NotYet, ProtocolError, OSError, ConnectionError) as exc:
            state.next_try = time.monotonic() + min(RETRY_MAX, RETRY_DELAY * 2 ** (state.attempts - 1))
            self.log.debug("metadata peer failed", peer=peer, reason=str(exc))
        else:
            if self._result is None:
                self.log.info("metadata received", peer=peer, size=len(raw))
                self._result = FetchResult(raw, address)
                self._done.set()
            return
        finally:
            self._wake.set()

    def _fetch_from(self, address: tuple[str, int]) -> bytes:
        identity = handshake.Identity(self.info_hash, self.peer_id, msg.reserved_bytes(msg.RESERVED_EXTENSIONS))
        try:
            done = handshake.dial(address, identity, encryption=self.encryption, connect_timeout=CONNECT_TIMEOUT,
                                  connect=self.connect)
        except OSError as exc:
            raise NotYet(f"connect failed: {exc}") from None
        except ProtocolError as exc:
            raise BadPeer(str(exc)) from None
        conn = done.conn
        try:
            if done.peer_id == self.peer_id:
                raise OwnPeer("connected to ourselves")
            if not msg.has_bit(done.reserved, msg.RESERVED_EXTENSIONS):
                raise BadPeer("no extension protocol (BEP 10)")
            ours = BUILTIN_IDS[UT_METADATA]
            conn.sock.sendall(msg.extended(0, bencode.encode({"m": {UT_METADATA: ours}})))
            their_id, size = self._read_handshake(conn)
            pieces = metadata_piece_count(size)
            asked = min(pieces, REQUEST_WINDOW)
            conn.sock.sendall(b"".join(msg.extended(their_id, metadata_request(i)) for i in range(asked)))
            buffer = bytearray(size)
            got: set[int] = set()
            others = 0
            while len(got) < pieces:
                payload = self._next_extended(conn, ours)
                if payload is None:
                    others += 1
                    if others > MAX_OTHER_MESSAGES:
                        raise NotYet("too many messages without metadata")
                    continue
                try:
                    message = parse_metadata(payload)
                except ProtocolError as exc:
                    raise BadPeer(str(exc)) from None
                if message.msg_type == META_REJECT:
                    raise NotYet("peer rejected our metadata request")
                if message.msg_type != META_DATA:
                    continue  # a request to us: we have nothing to give
                index = message.piece
                if index >= pieces or message.total_size != size:
                    raise BadPeer(f"metadata piece {index} of {message.total_size} bytes does not fit {size}")
                if len(message.data) != metadata_piece_length(size, index):
                    raise BadPeer(f"metadata piece {index} has {len(message.data)} bytes")
                start = index * 16384
                buffer[start : start + len(message.data)] = message.data
                got.add(index)
                if asked < pieces:
                    conn.sock.sendall(msg.extended(their_id, metadata_request(asked)))
                    asked += 1
            raw = bytes(buffer)
            v2_only = self.info_hash_v2 is not None and self.info_hash == self.info_hash_v2[:20]
            if (not v2_only and hashlib.sha1(raw).digest() != self.info_hash) or (
                    self.info_hash_v2 is not None and hashlib.sha256(raw).digest() != self.info_hash_v2):
                raise BadPeer("metadata does not match the info-hash")
            self.helped.append(address)
            return raw
        finally:
            conn.close("metadata fetch over")

    def _read_handshake(self, conn: Connection) -> tuple[int, int]:
        """Wait for the peer's extension handshake; return its ut_metadata id and the metadata size."""
        for _ in range(MAX_OTHER_MESSAGES):
            msg_id, payload = conn.read_message()
            if msg_id == msg.PIECE:
                conn.skip(payload[2])
                continue
            if msg_id != msg.EXTENDED or not payload or payload[0] != 0:
                continue
            try:
                info = bencode.decode(bytes(payload[1:]), max_size=MAX_HANDSHAKE)
            except bencode.BencodeError as exc:
                raise BadPeer(f"bad extension handshake: {exc}") from None
            m = info.get(b"m") if isinstance(info, dict) else None
            their_id = m.get(UT_METADATA.encode()) if isinstance(m, dict) else None
            if not isinstance(their_id, int) or not 0 < their_id < 256:
                raise BadPeer("peer does not speak ut_metadata")
            size = info.get(b"metadata_size")
            if not isinstance(size, int) or size <= 0:
                raise NotYet("peer does not have the metadata (no metadata_size)")
            if size > MAX_METADATA_SIZE:
                raise BadPeer(f"metadata_size {size} is larger than the {MAX_METADATA_SIZE}-byte limit")
            return their_id, size
        raise NotYet("no extension handshake")

    @staticmethod
    def _next_extended(conn: Connection, ours: int) -> bytes | None:
        """The payload of the next ut_metadata message (our id), or ``None`` for any other message."""
        msg_id, payload = conn.read_message()
        if msg_id == msg.PIECE:
            conn.skip(payload[2])
            return None
        if msg_id != msg.EXTENDED or not payload or payload[0] != ours:
            return None
        return bytes(payload[1:])


def torrent_file(raw_info: bytes, trackers: list[list[str]], piece_layers: dict[bytes, bytes] | None = None,
                 url_list: list[str] | None = None) -> bytes:
    """A .torrent holding ``raw_info`` byte for byte (so the info-hash is kept), the trackers, for a v2
    torrent whose layers were fetched from peers its ``piece layers``, and the link's BEP 19 web seeds
    (``ws=``) as ``url-list``, as libtorrent saves them."""
    parts = [b"d"]
    if trackers:
        parts += [bencode.encode(b"announce"), bencode.encode(trackers[0][0].encode())]
        parts += [bencode.encode(b"announce-list"), bencode.encode([[u.encode() for u in t] for t in trackers])]
    parts += [bencode.encode(b"created by"), bencode.encode(b"torrentcore (from a magnet link)")]
    parts += [bencode.encode(b"info"), raw_info]
    if piece_layers:
        parts += [bencode.encode(b"piece layers"), bencode.encode(dict(piece_layers))]
    if url_list:  # (keys in bencode's sorted order: "url-list" comes last)
        parts += [bencode.encode(b"url-list"), bencode.encode([u.encode() for u in url_list])]
    parts.append(b"e")
    return b"".join(parts)


def save_torrent_file(folder: str, name: str, data: bytes) -> str:
    """Write ``data`` as ``folder/NAME.torrent`` (``name`` is already a safe file name); return the path.

    Written to a temporary file first and renamed, so a crash never leaves half a .torrent.
    """
    path = os.path.join(folder, f"{name}.torrent")
    # The temporary name starts with .torrentcore- so that `create` never packs one a crash left behind.
    write_atomic(path, data, mode=0o644, temp_prefix=".torrentcore-")
    return path


def find_saved_torrent(folder: str, info_hash: bytes, limit: int = 100) -> str | None:
    """A ``*.torrent`` directly in ``folder`` whose info-hash is ``info_hash`` (what an earlier run saved).

    At most ``limit`` files are read; unreadable or malformed ones are skipped.
    """
    from . import metainfo

    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".torrent"))[:limit]
    except OSError:
        return None
    for name in names:
        path = os.path.join(folder, name)
        try:
            if os.path.isfile(path) and info_hash in metainfo.load(path).info_hashes:  # a hybrid: either hash
                return path
        except TorrentcoreError:
            continue
    return None


__all__ = ["MetadataFetcher", "MetadataError", "FetchResult", "PeerSource", "tracker_source", "torrent_file",
           "save_torrent_file", "find_saved_torrent", "is_own_address", "DEFAULT_TIMEOUT"]
