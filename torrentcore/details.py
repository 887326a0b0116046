"""Read-only views of one running torrent for remote controls: per-file progress, peers, trackers.

:class:`~torrentcore.handle.TorrentHandle` hands these out (``file_progress()``, ``peer_infos()``);
they are computed from the torrent's verified-piece bitfield and its connected peers when asked, so
nothing here costs anything while nobody asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .bitfield import Bitfield
    from .metainfo import Metainfo


@dataclass(frozen=True)
class PeerInfo:
    """One connected peer, as a remote control lists it."""

    address: tuple[str, int]
    client: str
    incoming: bool
    encrypted: bool
    source: str
    progress: float
    download_rate: float
    upload_rate: float
    am_choking: bool
    am_interested: bool
    peer_choking: bool
    peer_interested: bool


def file_progress(meta: Metainfo, have: Bitfield) -> list[int]:
    """Verified bytes of each data file (``meta.data_files`` order): the overlap of verified pieces."""
    piece_length = meta.piece_length
    out = []
    complete = have.complete
    for f in meta.data_files:
        if complete or f.length == 0:
            out.append(f.length if complete else 0)
            continue
        start, end = f.offset, f.offset + f.length
        first, last = start // piece_length, (end - 1) // piece_length
        done = 0
        for i in range(first, last + 1):
            if have[i]:
                lo, hi = max(start, i * piece_length), min(end, (i + 1) * piece_length)
                done += hi - lo
        out.append(done)
    return out


def peer_infos(peers: list[Any], num_pieces: int) -> list[PeerInfo]:
    """A :class:`PeerInfo` for each connected peer (``peers``: the swarm's Peer objects)."""
    out = []
    for p in peers:
        out.append(PeerInfo(
            address=tuple(p.address[:2]), client=str(getattr(p, "client", "") or ""), incoming=bool(p.incoming),
            encrypted=bool(p.encrypted), source=str(p.source), progress=p.has.count / num_pieces if num_pieces else 0.0,
            download_rate=float(p.down.rate), upload_rate=float(p.up.rate), am_choking=bool(p.am_choking),
            am_interested=bool(p.am_interested), peer_choking=bool(p.peer_choking),
            peer_interested=bool(p.peer_interested)))
    return out


__all__ = ["PeerInfo", "file_progress", "peer_infos"]
