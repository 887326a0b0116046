"""Smart ban: find the peers that sent corrupt blocks, as libtorrent's smart_ban plugin does.

When a piece fails its hash check, :meth:`SmartBan.piece_failed` keeps a fingerprint (SHA-1) of every
block and who sent it. When the same piece later verifies, :meth:`SmartBan.piece_verified` compares: the
senders of blocks that differ from the good data are liars and are banned. A peer that was the only
sender of pieces failing their hash :data:`BAN_STRIKES` times is banned too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .piecemanager import Piece

#: Ban a peer once it has sent blocks of this many pieces that failed their hash alone.
BAN_STRIKES = 2
_BLOCK = 16384

Address = tuple[str, int]


def _sha1(data) -> bytes:
    return hashlib.sha1(data).digest()


class SmartBan:
    """Remembers failed pieces' blocks; calls ``ban(address, reason)`` for the peers proven to lie."""

    def __init__(self, ban: Callable[[Address, str], None]) -> None:
        self._ban = ban
        self.strikes: dict[Address, int] = {}
        self._bad_blocks: dict[int, dict[int, tuple[Address, bytes]]] = {}

    def piece_failed(self, piece: Piece) -> None:
        """Fingerprint each block of a piece that failed its hash, and strike a lone sender."""
        view = memoryview(piece.buffer)
        self._bad_blocks[piece.index] = {
            b: (sender, _sha1(view[b * _BLOCK : (b + 1) * _BLOCK])) for b, sender in piece.senders.items()
        }
        del view
        senders = set(piece.senders.values())
        if len(senders) == 1:
            self._strike(next(iter(senders)))

    def piece_verified(self, piece: Piece) -> None:
        """A piece that failed before is good now: ban whoever sent a block that differs."""
        blocks = self._bad_blocks.pop(piece.index, None)
        if blocks is None:
            return
        view = memoryview(piece.buffer)
        for b, (sender, digest) in blocks.items():
            if _sha1(view[b * _BLOCK : (b + 1) * _BLOCK]) != digest:
                self._ban(sender, "sent corrupt data")

    def _strike(self, address: Address) -> None:
        self.strikes[address] = self.strikes.get(address, 0) + 1
        if self.strikes[address] >= BAN_STRIKES:
            self._ban(address, "sent data for several pieces that failed their hash")


__all__ = ["SmartBan", "BAN_STRIKES"]
