"""A piece's outcome: what follows the hash check of a complete piece, or the late check of a trusted one.

A peer's reader (or a web seed) hands a piece whose blocks have all arrived to :meth:`PieceOutcome.verify_piece`;
the :class:`~torrentcore.verifier.Verifier` hashes and writes it off the event loop and comes back with a
verdict, which this module turns into the piece's outcome:

* **stored** (hash good, bytes on disk): the piece manager marks it done, reporters hear ``piece_verified``,
  smart ban compares it with the failed copies it kept, every peer gets a HAVE, and the torrent hears
  when the download may be complete. A piece stored while the torrent stops is counted, nothing more.
* **failed** (hash bad): its bytes count as wasted, its blocks are requested again, reporters hear
  ``piece_failed`` with who sent it (a web seed named ``(URL, 0)``), and smart ban fingerprints its
  blocks and strikes a lone sender. Smart ban's verdict bans a lying peer or drops a lying web seed.
* **a trusted piece found bad**: a piece the resume record claimed, hashed late (when a peer asks for it,
  or at the end of a resumed download) and wrong (issue 13, 7c): it is downloaded again; interested
  peers that have it are asked for it.
* **a held piece found good**: a v2 piece on disk that waited for its file's piece layer
  (:mod:`torrentcore.layer_recheck`) and matched it: marked done, reported and announced like a stored one.

The torrent is seen only through :class:`OutcomeCalls` (callbacks) and its collaborators (verifier,
swarm, web seeds, reporter, stats), never as a whole.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .smart_ban import SmartBan

if TYPE_CHECKING:  # pragma: no cover
    from .piecemanager import Piece, PieceManager
    from .verifier import Verifier


class Peers(Protocol):
    """What an outcome asks of the connected peers (a :class:`~torrentcore.swarm.Swarm` is one)."""

    peers: Mapping[tuple[str, int], Any]
    #: Set to make the connect loop look for candidates now.
    connect_now: Any

    def wake_requesters(self) -> None: ...

    def broadcast_have(self, index: int) -> None: ...

    def ban(self, address: tuple[str, int], reason: str) -> None: ...


class WebSeedSet(Protocol):
    """The torrent's web seeds (a :class:`~torrentcore.webseed.WebSeeds` is one): is a sender one of them."""

    def owns(self, who: Hashable) -> bool: ...

    def drop(self, seed: Any, reason: str) -> None: ...


class Events(Protocol):
    """Where an outcome is reported (a :class:`~torrentcore.events.Reporter` is one)."""

    def emit(self, kind: str, **kwargs: Any) -> None: ...


@dataclass(frozen=True)
class OutcomeCalls:
    """What an outcome needs of its torrent, as callbacks."""

    #: The torrent's piece manager now (it is replaced after each start-up check).
    manager: Callable[[], PieceManager]
    #: True once the torrent is stopping: a piece stored then is only counted.
    stopping: Callable[[], bool]
    #: A stored piece may have completed the download (wanted pieces all verified).
    completed: Callable[[], None]
    #: A trusted piece was bad: a completed torrent goes back to downloading.
    incomplete_again: Callable[[], None]
    #: Run ``fn(*args)`` as the torrent's background work is run: an exception stops the torrent, one clear line.
    guard: Callable[..., None]


class PieceOutcome:
    """Stores or re-requests each checked piece, bans the liars, re-fetches trusted pieces found bad."""

    def __init__(self, calls: OutcomeCalls, verifier: Verifier, peers: Peers, webseeds: WebSeedSet,
                 events: Events, wasted: Callable[[int], None], log: Any) -> None:
        self._calls = calls
        self.verifier = verifier
        self._peers = peers
        self._webseeds = webseeds
        self._events = events
        self._wasted = wasted
        self._log = log
        self.smart_ban = SmartBan(self._ban)

    def verify_piece(self, piece: Piece) -> None:
        """Hash a complete piece off the event loop, then store it (batched: see :mod:`torrentcore.verifier`).
        The caller (a peer's reader) waits while the verify queue is full."""
        self.verifier.acquire_slot()
        try:
            self.verifier.submit(piece, self._on_verdict)
        except Exception as exc:  # noqa: BLE001 - a bug in the hand-over: fatal, as one in the worker would be
            # (without this the piece, taken out of the download and never verified, stalled it for good).
            try:
                self._on_verdict(piece, exc)
            finally:
                self.verifier.release_slot()

    def _on_verdict(self, piece: Piece, verdict) -> None:
        """A piece's hash check and write ended (in a greenlet; its slot is released after this)."""
        self._calls.guard(self._apply_verdict, piece, verdict)

    def _apply_verdict(self, piece: Piece, verdict) -> None:
        if isinstance(verdict, BaseException):
            raise verdict  # StorageError: one clear line (the guard); anything else: an internal error
        if verdict:
            self.piece_stored(piece)
        elif verdict is not None:
            self.piece_failed(piece)

    def piece_stored(self, piece: Piece) -> None:
        """The piece matched its hash and is on disk."""
        index = piece.index
        manager = self._calls.manager  # called each time: a recheck replaces the torrent's manager
        manager().piece_verified(index)
        self._events.emit("piece_verified", index=index)
        if self._calls.stopping():  # stored while stopping: counted, nothing more (the storage may be closed)
            manager().recycle(piece)
            return
        self.smart_ban.piece_verified(piece)
        manager().recycle(piece)
        self._peers.broadcast_have(index)
        if manager().complete:
            self._calls.completed()

    def piece_failed(self, piece: Piece) -> None:
        """The piece did not match its hash: fetch it again, and remember who sent what."""
        # Web seeds are named (URL, 0) for reporters (hookspec.torrentcore_on_piece_failed).
        senders = {(s.url, 0) if self._webseeds.owns(s) else s for s in piece.senders.values()}
        self._wasted(piece.size)
        self._calls.manager().piece_failed(piece.index)
        self._log.warning("piece failed hash check", piece=piece.index, peers=len(senders))
        self._events.emit("piece_failed", index=piece.index, peers=sorted(senders))
        self.smart_ban.piece_failed(piece)
        self._calls.manager().recycle(piece)
        self._peers.wake_requesters()

    def held_piece_good(self, index: int) -> None:
        """A piece on disk, held until its v2 layer arrived, matched it (layer_recheck): counted and announced."""
        manager = self._calls.manager
        manager().piece_found(index)
        self._events.emit("piece_verified", index=index)
        self._peers.broadcast_have(index)
        if manager().complete:
            self._calls.completed()

    def confirm_trusted(self) -> bool:
        """At the end of a resumed download: hash the pieces trusted from the resume record and not hashed
        since (issue 13, 7c), so "complete" means every piece matched its hash. False: some did not."""
        bad = [i for i in sorted(self.verifier.unconfirmed) if not self.verifier.confirm(i)]
        for index in bad:
            self.trusted_piece_bad(index)
        return not bad

    def trusted_piece_bad(self, index: int) -> None:
        """A piece trusted from the resume record failed its first hash (issue 13, 7c): download it again."""
        self._calls.manager().piece_lost(index)
        self._events.emit("piece_failed", index=index, peers=[])
        self._calls.incomplete_again()
        for peer in list(self._peers.peers.values()):
            if peer.has[index] and not peer.am_interested:
                peer.set_interested(True)
        self._peers.connect_now.set()
        self._peers.wake_requesters()

    def _ban(self, who, reason: str) -> None:
        """Smart ban's verdict: a lying peer is banned, a lying web seed dropped."""
        if self._webseeds.owns(who):
            self._webseeds.drop(who, reason)
        else:
            self._peers.ban(who, reason)


__all__ = ["PieceOutcome", "OutcomeCalls", "Peers", "WebSeedSet", "Events"]
