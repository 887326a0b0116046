"""One torrent's transfer statistics: byte counters, one-second rates, and what is left to fetch.

:class:`TransferStats` is updated from the per-block hot path (``block_arrived``/``block_uploaded``: one
addition each) and ticked once a second by the torrent. :func:`left_bytes` and :func:`wanted_bytes`
measure the wanted part of the torrent (all pieces, or those of the selected files), as trackers and
the progress snapshot report it.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

from .hookspec import ProgressSnapshot

if TYPE_CHECKING:  # pragma: no cover
    from .bitfield import Bitfield
    from .metainfo import Metainfo


class TransferStats:
    """Payload bytes down, up, wasted and corrupt (this session), and the rates of the last tick."""

    __slots__ = ("downloaded", "uploaded", "wasted", "corrupt", "rate_down", "rate_up", "_down_ticked", "_up_ticked")

    def __init__(self) -> None:
        self.downloaded = 0
        self.uploaded = 0
        self.wasted = 0
        #: Bytes of pieces that failed their hash check (Transmission's ``corruptEver``, for this run).
        self.corrupt = 0
        self.rate_down = 0.0
        self.rate_up = 0.0
        self._down_ticked = 0  # downloaded / uploaded at the last tick (a rate is what they grew by since)
        self._up_ticked = 0

    def block_arrived(self, n: int) -> None:
        """Payload bytes received."""
        self.downloaded += n

    def block_uploaded(self, n: int) -> None:
        """Payload bytes sent."""
        self.uploaded += n

    def stats_wasted(self, n: int) -> None:
        """Bytes received that could not be used (duplicates, unrequested, failed pieces)."""
        self.wasted += n

    def piece_corrupt(self, n: int) -> None:
        """A piece of ``n`` bytes failed its hash check: its bytes are wasted, and counted as corrupt."""
        self.wasted += n
        self.corrupt += n

    def still(self) -> bool:
        """No byte counted since the last tick, and both rates 0 (a tick would change nothing)."""
        return (self.downloaded == self._down_ticked and self.uploaded == self._up_ticked
                and not self.rate_down and not self.rate_up)

    def tick(self, elapsed: float) -> None:
        """Turn the bytes counted since the last tick into rates."""
        down, up = self.downloaded, self.uploaded
        if elapsed > 0:
            self.rate_down = (down - self._down_ticked) / elapsed
            self.rate_up = (up - self._up_ticked) / elapsed
        self._down_ticked, self._up_ticked = down, up


def have_bytes(meta: Metainfo, have: Bitfield) -> int:
    """Bytes of verified pieces (pad files not counted)."""
    if not have.count:
        return 0
    if have.complete:
        return meta.data_length
    last = meta.num_pieces - 1
    full = have.count - (1 if have[last] else 0)
    done = full * meta.piece_length + (meta.piece_size(last) if have[last] else 0)
    return done - sum(n for i, n in meta.pad_in_piece.items() if have[i])


def _data_in(meta: Metainfo, index: int) -> int:
    return meta.piece_size(index) - meta.pad_in_piece.get(index, 0)


def left_bytes(meta: Metainfo, have: Bitfield, selected: Bitfield | None) -> int:
    """Bytes of wanted pieces (all, or those of the selected files) not verified yet (no pad bytes)."""
    if selected is None:
        return max(0, meta.data_length - have_bytes(meta, have))
    return sum(_data_in(meta, i) for i in selected.indices() if not have[i])


def wanted_bytes(meta: Metainfo, selected: Bitfield | None) -> int:
    """Bytes of the wanted pieces (no pad bytes)."""
    if selected is None:
        return meta.data_length
    return sum(_data_in(meta, i) for i in selected.indices())


def make_snapshot(meta: Metainfo, have: Bitfield, selected: Bitfield | None, selected_files: list[int] | None,
                  peers: list[Any], stats: TransferStats, state: str, elapsed: float, checked: int,
                  extra: dict) -> ProgressSnapshot:
    """A torrent's :class:`~torrentcore.hookspec.ProgressSnapshot` from its parts (``peers``: connected Peers)."""
    left = left_bytes(meta, have, selected)
    wanted = None if selected is None else wanted_bytes(meta, selected)
    rate = sum(p.down.rate for p in peers) or stats.rate_down
    eta = left / rate if rate > 0 and left else (0.0 if not left else None)
    return ProgressSnapshot(
        name=meta.name,
        state=state,
        total_bytes=meta.data_length,
        have_bytes=have_bytes(meta, have),
        pieces_done=have.count,
        num_pieces=meta.num_pieces,
        downloaded=stats.downloaded,
        uploaded=stats.uploaded,
        download_rate=rate,
        upload_rate=sum(p.up.rate for p in peers) or stats.rate_up,
        peers=len(peers),
        seeds=sum(1 for p in peers if p.has.complete),
        leechers=sum(1 for p in peers if not p.has.complete and p.peer_interested),
        eta=eta,
        elapsed=elapsed,
        checked=checked,
        wasted=stats.wasted,
        peer_sources=dict(collections.Counter(p.source for p in peers)),
        selected_files=None if selected_files is None else len(selected_files),
        wanted_bytes=wanted,
        wanted_have_bytes=0 if wanted is None else wanted - left,
        encrypted_peers=sum(1 for p in peers if p.encrypted),
        utp_peers=sum(1 for p in peers if p.transport == "utp"),
        extra=extra,
    )


__all__ = ["TransferStats", "have_bytes", "left_bytes", "wanted_bytes", "make_snapshot"]
