"""When a torrent's download counts as complete, what follows, and when its seeding is done.

:class:`Completion` holds the rules and the moment (``completed_at``):

* **done downloading**: every wanted piece verified, and none still waiting for its Merkle check. A hybrid
  fetched by magnet whose piece layers are still coming has its pieces pass SHA-1 before the layers arrive
  (:meth:`torrentcore.layer_recheck.LayerRecheck.holds_completion`): until the layers are settled (or the
  wait for them expired) the swarm, the choker and the trackers see a download, and seeds are kept;
  ``seed`` (``seed_only``) does not wait.
* **complete**: the data flushed, reporters hear ``completed``, the trackers a "completed" announce, seeds
  are dropped; a download that does not seed stops once that announce is sent (at most
  :data:`COMPLETED_ANNOUNCE_WAIT`). A piece the resume record claimed is confirmed first.
* **incomplete again**: a trusted piece found bad sends a completed torrent back to downloading.
* **seeding done**: the seeding limits (ratio, time, idle) are reached.

The torrent is seen only through :class:`CompletionCalls` (callbacks) and its collaborators (verifier,
stats, swarm, announcer, reporter, seeding limits, the layer recheck), never as a whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import gevent

from .errors import EXIT_OK

if TYPE_CHECKING:  # pragma: no cover
    from .config import TorrentConfig
    from .hookspec import ProgressSnapshot
    from .layer_recheck import LayerRecheck
    from .seeding import SeedingLimits
    from .stats import TransferStats
    from .verifier import Verifier

#: Seconds a download that does not seed waits, at most, for its "completed" announce before it stops (it
#: was a fixed 0.1 s: a tenth of a 512 MiB download at libtorrent's speed here; the announce takes ~5 ms).
COMPLETED_ANNOUNCE_WAIT = 0.1


class Announcing(Protocol):
    """The torrent's announces (an :class:`~torrentcore.announcer.Announcer` is one)."""

    #: Set once an announce was sent.
    announced: Any
    #: Set to announce now.
    announce_now: Any


class Peers(Protocol):
    """The connected peers (a :class:`~torrentcore.swarm.Swarm` is one)."""

    peers: Mapping[tuple[str, int], Any]

    def drop_seeds(self) -> None: ...


class Events(Protocol):
    """Where completion is reported (a :class:`~torrentcore.events.Reporter` is one)."""

    def emit(self, kind: str, **kwargs: Any) -> None: ...


@dataclass(frozen=True)
class CompletionCalls:
    """What completion needs of its torrent, as callbacks."""

    #: Every wanted piece is verified (the piece manager is replaced after each start-up check).
    complete: Callable[[], bool]
    #: The torrent's settings now (``seed``, ``seed_only``; the handle may replace them).
    config: Callable[[], TorrentConfig]
    #: Set the torrent's state ("seeding", "downloading").
    set_state: Callable[[str], None]
    #: Hash the pieces a resume record claimed; False if one was bad (it is downloaded again).
    confirm_trusted: Callable[[], bool]
    #: The torrent's progress snapshot now.
    snapshot: Callable[[], ProgressSnapshot]
    #: End the torrent with this exit code.
    finish: Callable[[int], None]


class Completion:
    """The completion rules of one torrent (see the module docstring)."""

    def __init__(self, calls: CompletionCalls, layer_recheck: LayerRecheck | None, verifier: Verifier,
                 stats: TransferStats, swarm: Peers, announcer: Announcing, reporter: Events,
                 seeding_limits: SeedingLimits, started_at: float, log: Any) -> None:
        self._calls = calls
        self._recheck = layer_recheck
        self._verifier = verifier
        self._stats = stats
        self._swarm = swarm
        self._announcer = announcer
        self._reporter = reporter
        self._limits = seeding_limits
        self._started_at = started_at
        self._log = log
        #: When the download completed (monotonic clock); None while it downloads.
        self.completed_at: float | None = None

    def should_seed(self) -> bool:
        """The torrent seeds once complete (``seed`` or ``seed_only``)."""
        config = self._calls.config()
        return config.seed or config.seed_only

    def done_downloading(self) -> bool:
        """Complete, and no piece still waits for its Merkle check (a hybrid fetched by magnet whose piece layers
        are still coming: :meth:`torrentcore.layer_recheck.LayerRecheck.holds_completion`).
        Until then the swarm, the choker and the trackers see a download, and seeds are dialled and kept."""
        r = self._recheck
        return self._calls.complete() and (r is None or r.settled or r.gave_up or r.waiting_since is None)

    def holds_completion(self) -> bool:
        """All pieces passed SHA-1, some not yet their Merkle hash: wait for the layers (``seed`` does not)."""
        r = self._recheck
        return r is not None and not self._calls.config().seed_only and r.holds_completion()

    def layers_settled(self) -> None:
        """Every layer known and every held piece re-checked: a download that waited for that completes now."""
        if self._calls.complete():
            self.on_complete()

    def incomplete_again(self) -> None:
        """A trusted piece was bad (see :mod:`torrentcore.piece_outcome`): a completed torrent downloads again."""
        if self.completed_at is not None and not self._calls.complete():
            self.completed_at = None  # back to downloading (``seed`` cannot: the piece is just not served)
            self._calls.set_state("downloading")
            if self._calls.config().seed_only:
                self._log.warning("the data is no longer complete; serving the pieces that are good")

    def on_complete(self) -> None:
        """Every wanted piece may be verified: complete the download unless a rule holds it back."""
        if self.completed_at is not None:
            return
        if self._verifier.unconfirmed and self._stats.downloaded and not self._calls.confirm_trusted():
            return  # a piece the resume record claimed was bad: it is being downloaded again
        if self.holds_completion():
            return  # complete on SHA-1 only: the Merkle check waits for piece layers from peers (layer_recheck)
        self.completed_at = time.monotonic()
        self._calls.set_state("seeding")
        self._verifier.flush()
        self._log.info("download complete", seconds=round(self.completed_at - self._started_at, 2),
                       downloaded=self._stats.downloaded, wasted=self._stats.wasted,
                       storage_stalled=round(self._verifier.slots.stalled_seconds, 2),
                       storage_stalls=self._verifier.slots.stalls)
        self._reporter.emit("completed", snapshot=self._calls.snapshot())
        self._announcer.announced.clear()
        self._announcer.announce_now.set()
        self._swarm.drop_seeds()
        if not self.should_seed():
            gevent.spawn(self._finish_after_announce)

    def _finish_after_announce(self) -> None:
        self._announcer.announced.wait(COMPLETED_ANNOUNCE_WAIT)
        self._calls.finish(EXIT_OK)

    def seeding_done(self) -> bool:
        """A completed torrent that seeds has reached a seeding limit."""
        if self.completed_at is None or not self.should_seed():
            return False
        interested = any(p.peer_interested for p in self._swarm.peers.values())
        s = self._stats
        return self._limits.reached(self.completed_at, s.downloaded, s.uploaded, interested)


__all__ = ["COMPLETED_ANNOUNCE_WAIT", "Completion", "CompletionCalls"]
