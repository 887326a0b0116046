"""The extension protocol (BEP 10): which extension messages a torrent speaks, and their codecs.

* :class:`ExtensionRegistry` (one per torrent) gives every extension a local
  message id: the built-in ``ut_metadata`` (BEP 9) and ``ut_pex`` (BEP 11), and
  whatever plugins offer through the ``torrentcore_extensions`` hook.
* :class:`PeerExtensions` (one per connection) builds our extension handshake,
  remembers the ids the peer chose, and routes incoming extension messages to
  the handler registered under *our* id for them.
* Codecs: :func:`metadata_request` / :func:`metadata_data` /
  :func:`metadata_reject` / :func:`parse_metadata` for ``ut_metadata``, and
  :func:`encode_pex` / :func:`parse_pex` for ``ut_pex``.
* Built-in handlers: :class:`MetadataServer` answers metadata requests from the
  raw ``info`` bytes of the .torrent; :class:`PexHandler` learns peers from
  incoming PEX and sends our connected peers every :data:`PEX_INTERVAL` seconds.

Private torrents (BEP 27) speak neither ``ut_metadata`` nor ``ut_pex``: their
peers must come from the tracker only (libtorrent does the same).
"""

from __future__ import annotations

import functools
import ipaddress
import math
import struct
import time
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gevent
import structlog

from .. import bencode
from ..errors import PluginError, ProtocolError
from ..hookspec import Extension, ExtensionPeer

if TYPE_CHECKING:  # pragma: no cover
    from ..metainfo import Metainfo
    from .ports import SwarmView

log = structlog.get_logger(__name__)

UT_METADATA = "ut_metadata"
UT_PEX = "ut_pex"
#: Our local ids for the built-in extensions (libtorrent uses the same numbers).
BUILTIN_IDS = {UT_PEX: 1, UT_METADATA: 2}
#: Plugin extensions get local ids from here on.
FIRST_PLUGIN_ID = 10
#: Largest extension handshake we decode.
MAX_HANDSHAKE = 64 * 1024
#: Most bencoded values (keys, strings, integers, lists, dicts) in one extension handshake. libtorrent's has
#: about 30 (an 'm' of 8 names); decoding stops at the limit, so a 64 KiB handshake of 5,000 'm' entries
#: costs ~1 ms (the cut) instead of 48 ms.
MAX_HANDSHAKE_VALUES = 512
#: Most values in the bencoded header of a ut_metadata message (3 keys) or in a ut_pex message (6 keys).
MAX_MESSAGE_VALUES = 64

# --- ut_metadata (BEP 9) -------------------------------------------------------------------------

#: Metadata travels in pieces of 16 KiB (the last one may be shorter).
METADATA_PIECE_SIZE = 16 * 1024
#: Largest metadata we fetch or accept (libtorrent's default limit is 30 MiB; 8 MiB is ~500k pieces).
MAX_METADATA_SIZE = 8 * 1024 * 1024
META_REQUEST = 0
META_DATA = 1
META_REJECT = 2


def metadata_piece_count(size: int) -> int:
    """Number of 16 KiB pieces of metadata of ``size`` bytes."""
    return math.ceil(size / METADATA_PIECE_SIZE)


def metadata_piece_length(size: int, piece: int) -> int:
    """Length of metadata piece ``piece`` for metadata of ``size`` bytes."""
    return min(METADATA_PIECE_SIZE, size - piece * METADATA_PIECE_SIZE)


def metadata_request(piece: int) -> bytes:
    """The payload of a ``ut_metadata`` request for ``piece``."""
    return bencode.encode({"msg_type": META_REQUEST, "piece": piece})


def metadata_data(piece: int, total_size: int, data: bytes) -> bytes:
    """The payload of a ``ut_metadata`` data message: a bencoded header, then the piece's bytes."""
    return bencode.encode({"msg_type": META_DATA, "piece": piece, "total_size": total_size}) + data


def metadata_reject(piece: int) -> bytes:
    """The payload of a ``ut_metadata`` reject for ``piece``."""
    return bencode.encode({"msg_type": META_REJECT, "piece": piece})


@dataclass
class MetadataMessage:
    """A parsed ``ut_metadata`` message; ``data`` and ``total_size`` only for data messages."""

    msg_type: int
    piece: int
    total_size: int | None = None
    data: bytes = b""


def parse_metadata(payload: bytes) -> MetadataMessage:
    """Parse a ``ut_metadata`` payload; raise :class:`ProtocolError` if it is malformed."""
    try:
        header, end = bencode.decode_prefix(bytes(payload), max_size=METADATA_PIECE_SIZE + 1024,
                                            max_tokens=MAX_MESSAGE_VALUES)
    except bencode.BencodeError as exc:
        raise ProtocolError(f"bad ut_metadata message: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("ut_metadata message is not a dictionary")
    msg_type = header.get(b"msg_type")
    piece = header.get(b"piece")
    if msg_type not in (META_REQUEST, META_DATA, META_REJECT) or not isinstance(piece, int) or piece < 0:
        raise ProtocolError("ut_metadata message without a valid msg_type and piece")
    if msg_type != META_DATA:
        return MetadataMessage(msg_type, piece)
    total = header.get(b"total_size")
    if not isinstance(total, int) or total <= 0:
        raise ProtocolError("ut_metadata data message without a valid total_size")
    return MetadataMessage(msg_type, piece, total, bytes(payload[end:]))


# --- ut_pex (BEP 11) -----------------------------------------------------------------------------

#: Seconds between PEX messages to one peer (BEP 11: at most one a minute).
PEX_INTERVAL = 60.0
#: Most peers we put in one list (added / dropped, per family) of a PEX message.
PEX_MAX_SEND = 50
#: Most peers we take from one incoming PEX message (the rest are ignored).
PEX_MAX_ACCEPT = 100
#: Largest incoming PEX message we decode.
PEX_MAX_MESSAGE = 16 * 1024
#: An incoming PEX message sooner than this after the previous one is ignored.
PEX_MIN_GAP = 20.0
#: ``added.f`` flags (BEP 11).
PEX_FLAG_ENCRYPTION = 0x01
PEX_FLAG_SEED = 0x02
PEX_FLAG_UTP = 0x04
PEX_FLAG_HOLEPUNCH = 0x08
PEX_FLAG_REACHABLE = 0x10


@functools.lru_cache(maxsize=1024)
def compact_address(address: tuple[str, int]) -> bytes | None:
    """6 bytes (IPv4) or 18 bytes (IPv6) for ``(ip, port)``; ``None`` for a host name or bad port.

    Cached: a PEX round packs every connected peer's address once per peer told (50 peers: 2,450 calls of
    ``ipaddress.ip_address``, the round's largest cost in benchmarks/many_peers.py's py-spy profile)."""
    host, port = address
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if not 0 < port < 65536:
        return None
    return ip.packed + struct.pack(">H", port)


def _parse_compact(data: Any, size: int, limit: int) -> list[tuple[int, tuple[str, int]]]:
    """``(entry index, (ip, port))`` for the first ``limit`` usable entries of a compact list."""
    if not isinstance(data, bytes):
        if data is None:
            return []
        raise ProtocolError("ut_pex peer list is not a string")
    if len(data) % size:
        raise ProtocolError(f"ut_pex peer list of {len(data)} bytes is not a multiple of {size}")
    out: list[tuple[int, tuple[str, int]]] = []
    for off in range(0, len(data), size):
        if len(out) >= limit:
            break
        (port,) = struct.unpack_from(">H", data, off + size - 2)
        ip = ipaddress.ip_address(data[off : off + size - 2])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if port == 0 or ip.is_unspecified or ip.is_multicast:
            continue
        out.append((off // size, (str(ip), port)))
    return out


@dataclass
class PexMessage:
    """A parsed ``ut_pex`` message: added peers (with their flags, 0 if not given) and dropped peers."""

    added: list[tuple[tuple[str, int], int]] = field(default_factory=list)
    dropped: list[tuple[str, int]] = field(default_factory=list)


def encode_pex(added: Iterable[tuple[tuple[str, int], int]], dropped: Iterable[tuple[str, int]]) -> bytes:
    """The payload of a ``ut_pex`` message; ``added`` holds ``(address, flags)``.

    IPv4 and IPv6 peers go to ``added``/``added6`` and ``dropped``/``dropped6``;
    each list is cut at :data:`PEX_MAX_SEND` peers; host names are left out.
    """
    out: dict[str, bytes] = {}
    lists: dict[str, list[bytes]] = {"added": [], "added.f": [], "added6": [], "added6.f": [],
                                     "dropped": [], "dropped6": []}
    for address, flags in added:
        packed = compact_address(address)
        if packed is None:
            continue
        key = "added" if len(packed) == 6 else "added6"
        if len(lists[key]) < PEX_MAX_SEND:
            lists[key].append(packed)
            lists[key + ".f"].append(bytes([flags & 0xFF]))
    for address in dropped:
        packed = compact_address(address)
        if packed is None:
            continue
        key = "dropped" if len(packed) == 6 else "dropped6"
        if len(lists[key]) < PEX_MAX_SEND:
            lists[key].append(packed)
    for key, items in lists.items():
        if items or key in ("added", "added.f", "dropped"):
            out[key] = b"".join(items)
    return bencode.encode(out)


def parse_pex(payload: bytes) -> PexMessage:
    """Parse a ``ut_pex`` payload (at most :data:`PEX_MAX_ACCEPT` added peers are kept).

    Raises :class:`ProtocolError` for bencoding errors or lists that are not
    whole entries. Entries with port 0 or an unspecified or multicast address
    are skipped; a flags list of the wrong length is ignored (flags are advisory).
    """
    if len(payload) > PEX_MAX_MESSAGE:
        raise ProtocolError(f"ut_pex message of {len(payload)} bytes")
    try:
        d = bencode.decode(bytes(payload), max_size=PEX_MAX_MESSAGE, max_depth=4, max_tokens=MAX_MESSAGE_VALUES)
    except bencode.BencodeError as exc:
        raise ProtocolError(f"bad ut_pex message: {exc}") from None
    if not isinstance(d, dict):
        raise ProtocolError("ut_pex message is not a dictionary")
    msg = PexMessage()
    for key, flags_key, size in ((b"added", b"added.f", 6), (b"added6", b"added6.f", 18)):
        room = PEX_MAX_ACCEPT - len(msg.added)
        raw = d.get(key)
        peers = _parse_compact(raw, size, room)
        flags = d.get(flags_key)
        if not isinstance(flags, bytes) or (isinstance(raw, bytes) and len(flags) != len(raw) // size):
            flags = b""  # flags are advisory: a wrong-length list is ignored, the peers are kept
        msg.added += [(p, flags[i] if i < len(flags) else 0) for i, p in peers]
    for key, size in ((b"dropped", 6), (b"dropped6", 18)):
        msg.dropped += [p for _i, p in _parse_compact(d.get(key), size, PEX_MAX_ACCEPT)]
    return msg


# --- registry and per-peer state -----------------------------------------------------------------


class ExtensionRegistry:
    """The extensions one torrent speaks, by name, with our local message id for each."""

    def __init__(self, handlers: Mapping[str, Extension]) -> None:
        self.handlers: dict[str, Extension] = dict(handlers)
        self.ids: dict[str, int] = {}
        next_id = FIRST_PLUGIN_ID
        for name in sorted(self.handlers):  # sorted: the same plugins always get the same ids
            if name in BUILTIN_IDS:
                self.ids[name] = BUILTIN_IDS[name]
            else:
                self.ids[name] = next_id
                next_id += 1
        if next_id > 255:
            raise PluginError("too many extension messages (at most 245 plugin extensions)")
        self.by_id: dict[int, str] = {i: name for name, i in self.ids.items()}

    @classmethod
    def for_torrent(cls, meta: Metainfo, swarm: SwarmView, plugin_offers: Iterable[Mapping[str, Extension] | None],
                    pex: bool = True) -> ExtensionRegistry:
        """Built-in extensions (none for private torrents; no PEX when ``pex`` is false) plus plugins' ones.

        ``plugin_offers`` are the results of the ``torrentcore_extensions`` hook for this torrent.
        """
        handlers: dict[str, Extension] = {}
        if not meta.private:
            handlers[UT_METADATA] = MetadataServer(meta.raw_info)
            if pex:
                handlers[UT_PEX] = PexHandler(swarm)
        for result in plugin_offers:
            for name, handler in (result or {}).items():
                if not isinstance(name, str) or not name or len(name) > 64:
                    raise PluginError(f"invalid extension name {name!r}")
                if name in BUILTIN_IDS or name in handlers:
                    raise PluginError(f"extension {name!r} is offered twice (built in or by two plugins)")
                handlers[name] = handler
        return cls(handlers)


class PeerExtensions:
    """One connection's view of the extension protocol: our handshake, their ids, dispatch."""

    def __init__(self, peer: ExtensionPeer, registry: ExtensionRegistry) -> None:
        self.peer = peer
        self.registry = registry
        self.their_ids: dict[str, int] = {}
        self.handshake: dict | None = None

    def handshake_fields(self, metadata_size: int | None) -> dict[str, Any]:
        """Our extension handshake's ``m``, ``metadata_size`` (if we serve it) and ``yourip``."""
        fields: dict[str, Any] = {"m": dict(self.registry.ids)}
        if metadata_size and UT_METADATA in self.registry.ids:
            fields["metadata_size"] = metadata_size
        packed = compact_address((self.peer.address[0], 1))
        if packed is not None:
            fields["yourip"] = packed[:-2]
        return fields

    def on_handshake(self, info: dict) -> None:
        """Record the peer's ids from its handshake (it may send several; the last one wins per name).

        Only the names we speak are looked up: the cost follows our extensions, not the size of its 'm'.
        """
        self.handshake = info
        m = info.get(b"m")
        if not isinstance(m, dict):
            return
        new = []
        for name in self.registry.handlers:
            ext_id = m.get(name.encode("utf-8"))
            if not isinstance(ext_id, int) or not 0 <= ext_id <= 255:
                continue
            if ext_id == 0:
                self.their_ids.pop(name, None)  # BEP 10: id 0 disables an extension
            else:
                if name not in self.their_ids:
                    new.append(name)
                self.their_ids[name] = ext_id
        for name in new:
            self.registry.handlers[name].on_handshake(self.peer, info)

    def on_message(self, ext_id: int, payload: bytes) -> None:
        """Route a message the peer sent with *our* id ``ext_id``; unknown ids are ignored."""
        name = self.registry.by_id.get(ext_id)
        if name is None or name not in self.their_ids:
            return  # not ours, or the peer never said it speaks it: ignore (as libtorrent does)
        self.registry.handlers[name].on_message(self.peer, payload)

    def supports(self, name: str) -> bool:
        """True if both sides speak extension ``name``."""
        return name in self.their_ids and name in self.registry.ids

    def their_id(self, name: str) -> int | None:
        """The id the peer chose for ``name`` (what we send with), if both sides speak it."""
        return self.their_ids.get(name) if name in self.registry.ids else None


# --- built-in handlers ---------------------------------------------------------------------------


class MetadataServer:
    """Serve ``ut_metadata`` requests from the raw ``info`` bytes of the torrent (BEP 9).

    A peer gets at most ``3 x pieces + 10`` answers per connection; further requests are rejected, and a
    peer that asks as many times again is dropped (a flood: each request costs a decode and a reply; a
    magnet fetch asks each piece about once).
    """

    def __init__(self, raw_info: bytes) -> None:
        self.raw = raw_info
        self.pieces = metadata_piece_count(len(self.raw)) if self.raw else 0
        self._served: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()

    def on_handshake(self, peer: ExtensionPeer, handshake: dict) -> None:
        """Nothing to do: peers ask when they need metadata."""

    def on_message(self, peer: ExtensionPeer, payload: bytes) -> None:
        """Answer a request with the piece (or a reject); ignore data and rejects (we never ask)."""
        message = parse_metadata(payload)
        if message.msg_type != META_REQUEST:
            return
        asked = self._served.get(peer, 0) + 1  # requests of this peer, answered or not
        self._served[peer] = asked
        piece = message.piece
        limit = 3 * self.pieces + 10
        if asked > 2 * limit:
            raise ProtocolError(f"too many ut_metadata requests ({asked} for {self.pieces} pieces)")
        if not self.raw or piece >= self.pieces or asked > limit:
            peer.send_extension(UT_METADATA, metadata_reject(piece))
            return
        start = piece * METADATA_PIECE_SIZE
        data = self.raw[start : start + METADATA_PIECE_SIZE]
        peer.send_extension(UT_METADATA, metadata_data(piece, len(self.raw), data))


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PexHandler:
    """``ut_pex``: learn peers from others, and tell others whom we are connected to (BEP 11)."""

    def __init__(self, swarm: SwarmView) -> None:
        self.torrent = swarm
        #: Per peer: the addresses we last told it about, and when we last heard PEX from it.
        self._sent: weakref.WeakKeyDictionary[Any, set[tuple[str, int]]] = weakref.WeakKeyDictionary()
        self._sent_at: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self._heard: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    def on_handshake(self, peer: ExtensionPeer, handshake: dict) -> None:
        """Nothing at once: the PEX round sends the first message within a second."""

    def on_message(self, peer: ExtensionPeer, payload: bytes) -> None:
        """Learn the added peers (at most :data:`PEX_MAX_ACCEPT`; too frequent messages are ignored)."""
        now = time.monotonic()
        last = self._heard.get(peer)
        if last is not None and now - last < PEX_MIN_GAP:
            return
        self._heard[peer] = now
        message = parse_pex(payload)
        added = [address for address, _flags in message.added]
        if not _is_loopback(peer.address[0]):
            # A remote peer has no business sending us to this machine's own services.
            added = [address for address in added if not _is_loopback(address[0])]
        # Peers already connected (ours, or incoming ones by their listening port) are not dialled again.
        connected = set()
        for other in list(self.torrent.peers.values()):
            connected.add(other.address)
            if other.listen_port:
                connected.add((other.address[0], other.listen_port))
        added = [address for address in added if address not in connected]
        log.debug("pex received", peer=f"{peer.address[0]}:{peer.address[1]}",
                  added=len(added), dropped=len(message.dropped))
        if added:
            self.torrent.add_peers(added, source="pex")
            self._note_encryption(message.added)

    def _note_encryption(self, added: list[tuple[tuple[str, int], int]]) -> None:
        """``added.f`` 0x01: the peer prefers encryption; remembered on candidates we know nothing about yet.
        ``added.f`` 0x04: the peer speaks uTP; remembered on the candidate (it is dialled over uTP first)."""
        candidates = self.torrent.candidates
        for address, flags in added:
            cand = candidates.get(address)
            if flags & PEX_FLAG_UTP and cand is not None:
                cand.utp = True
            if flags & PEX_FLAG_ENCRYPTION and cand is not None and getattr(cand, "encryption", 0) is None:
                cand.encryption = True

    def connected_addresses(self) -> dict[tuple[str, int], int]:
        """Dialable addresses of our connected peers, with their ``added.f`` flags."""
        out = {}
        for peer in list(self.torrent.peers.values()):
            if peer.incoming:
                if not peer.listen_port:
                    continue
                address, flags = (peer.address[0], peer.listen_port), 0
            else:
                address, flags = peer.address, PEX_FLAG_REACHABLE
            if peer.has.complete:
                flags |= PEX_FLAG_SEED
            if getattr(peer, "encryption_hint", None):
                flags |= PEX_FLAG_ENCRYPTION
            if getattr(peer, "transport", "tcp") == "utp":
                flags |= PEX_FLAG_UTP  # it speaks uTP (BEP 29): others may reach it over UDP
            out[address] = flags
        return out

    def send_round(self, now: float | None = None) -> int:
        """Send each PEX peer what changed since its last message; return how many messages went out.

        A peer gets its first message on the first round after its handshake in which we are connected to
        someone else (all of them, up to the cap), then one every :data:`PEX_INTERVAL` seconds at most, and
        only if something changed.
        """
        now = time.monotonic() if now is None else now
        current = self.connected_addresses()
        sent = 0
        for peer in list(self.torrent.peers.values()):
            if not peer.supports_extension(UT_PEX):
                continue
            last = self._sent.get(peer)
            if last is not None and now - self._sent_at.get(peer, 0.0) < PEX_INTERVAL:
                continue
            before = last or set()
            own = {peer.address, (peer.address[0], peer.listen_port or 0)}
            now_set = {a for a in current if a not in own}
            added = [(a, current[a]) for a in now_set - before][:PEX_MAX_SEND]
            dropped = list(before - now_set)[:PEX_MAX_SEND]
            if not added and not dropped:
                continue  # nothing to tell (a new peer hears from us once there is someone to tell about)
            peer.send_extension(UT_PEX, encode_pex(added, dropped))
            self._sent[peer] = (before | {a for a, _f in added}) - set(dropped)
            self._sent_at[peer] = now
            sent += 1
        return sent

    def loop(self, interval: float = 1.0) -> None:
        """Run :meth:`send_round` every ``interval`` seconds (a background greenlet of the torrent)."""
        while True:
            gevent.sleep(interval)
            self.send_round()
