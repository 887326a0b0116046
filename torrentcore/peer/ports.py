"""The narrow interfaces a peer connection, the choker and the extensions see of their torrent.

A :class:`~torrentcore.peer.peer.Peer` never holds the torrent: it holds a :class:`TorrentPort`, a
small object the torrent builds from its collaborators (piece manager, verifier, stats, limits), the
way libtorrent's peer list takes a small ``torrent_state``. Everything a peer may read or ask of the
swarm is listed here, so a reader can see the whole contract at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from ..bitfield import Bitfield
    from ..metainfo import Metainfo
    from ..piece_layers import PieceLayers
    from ..piecemanager import Piece, PieceManager
    from .peer import Peer


class Limiter(Protocol):
    """A rate limit: ``consume(n)`` blocks the calling greenlet until ``n`` bytes may pass."""

    rate: float

    def consume(self, n: int) -> None: ...


class TorrentPort(Protocol):
    """What one peer connection needs of its torrent."""

    meta: Metainfo
    #: Pieces we have verified (read only for peers).
    have: Bitfield
    #: Hands out blocks to request and takes the ones received (replaced after the start-up check).
    manager: PieceManager
    #: The torrent's connected peers by address (to cancel duplicate endgame requests elsewhere).
    peers: Mapping[tuple[str, int], Peer]
    download_limit: Limiter
    upload_limit: Limiter
    #: Our TCP listen port (0: not listening) and our DHT node's UDP port (None: no DHT for this torrent).
    listen_port: int
    dht_port: int | None
    #: ``torrentcore X.Y.Z``'s version, for the BEP 10 ``v`` field.
    version: str
    #: The session's MSE/PE policy (prefer, require, disable): BEP 10 ``e`` is sent unless disabled.
    encryption: str
    #: A v2 torrent's piece layers, served to peers and fetched from them (None for v1 torrents).
    layers: PieceLayers | None

    def block_arrived(self, n: int) -> None:
        """``n`` payload bytes were received."""

    def block_uploaded(self, n: int) -> None:
        """``n`` payload bytes were sent."""

    def stats_wasted(self, n: int) -> None:
        """``n`` bytes arrived that could not be used."""

    def verify_piece(self, piece: Piece) -> None:
        """A piece has all its blocks: hash it, then store it (may make the caller wait)."""

    def read_block(self, index: int, begin: int, length: int) -> bytes | None:
        """A block of a verified piece to upload, or None."""

    def wake_requesters(self) -> None:
        """Blocks became free: idle unchoked peers should request them."""

    def interest_changed(self, peer: Peer) -> None:
        """The peer became interested or not interested in us (the choker may act at once)."""

    def layers_complete(self) -> None:
        """The last missing piece layer arrived: pieces can be requested and checked."""


class SwarmView(Protocol):
    """What the choker and the PEX handler see of a torrent: its peers, whether it seeds, new addresses."""

    peers: Mapping[tuple[str, int], Peer]

    @property
    def complete(self) -> bool: ...

    @property
    def candidates(self) -> Mapping[tuple[str, int], Any]:
        """Addresses we may dial (each with ``encryption``: what we know of the peer's MSE/PE support)."""

    def add_peers(self, addresses, source: str = "tracker") -> None: ...


__all__ = ["Limiter", "TorrentPort", "SwarmView"]
