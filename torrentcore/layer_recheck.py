"""When a v2 file's piece layer arrives mid-run, check what was held unverified for want of it.

A magnet link (``xt=urn:btmh:``) gives no piece layers; they come from peers, file by file
(:mod:`torrentcore.piece_layers`). Until a file's layer is known its pieces cannot be checked with their
Merkle hash, so:

* **v2-only:** pieces with data on disk that the start-up check could not verify (a resumed download;
  :attr:`Verifier.held <torrentcore.verifier.Verifier.held>`) are checked now; those that match are
  marked done (never before: the hash is checked first, and the bytes are already on disk). The file's
  pieces are requested from peers only after this (:meth:`PieceLayers.file_ready
  <torrentcore.piece_layers.PieceLayers.file_ready>`), so no piece is both fetched and found on disk;
* **hybrid:** pieces stored on their SHA-1 alone (the v1 half needs no layer) are checked again with
  both hashes; one that fails the Merkle hash is not ours any more: cleared on disk and in ``have``, and
  downloaded again (data that passes one hash and fails the other is refused, as everywhere).

Pieces of the file still being hashed when the layer arrives are waited for first (bounded), since their
check may have run without the layer. The check itself runs in the session's worker threads, in batches.

**Completion of a hybrid waits for this** (issue 16): its download can complete on SHA-1 before every layer
came. Until every layer is known and every held piece re-checked (:attr:`LayerRecheck.settled`), the torrent
does not call itself complete (:meth:`LayerRecheck.holds_completion`): no "completed" announce, the seeds
(where the layers come from) are not dropped, a ``--no-seed`` run does not exit. The wait is bounded
(:data:`LAYER_WAIT`); past it the download completes on SHA-1 alone, with one warning
(:meth:`LayerRecheck.wait_expired`), as libtorrent, which never waits, completes a hybrid on its v1 hashes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
import structlog

if TYPE_CHECKING:  # pragma: no cover
    from .bitfield import Bitfield
    from .metainfo import FileEntry, Metainfo
    from .piece_layers import PieceLayers
    from .verifier import Verifier

log = structlog.get_logger(__name__)

#: Pieces read and hashed per hand-off to a worker thread.
BATCH = 16
#: Waiting for the file's pieces being hashed when the layer arrived: rounds of WAIT_STEP seconds, at most
#: (10 s in all, as a shutdown waits for them: torrent.SHUTDOWN_VERIFY_WAIT).
WAIT_ROUNDS = 200
WAIT_STEP = 0.05
#: Seconds a download complete on SHA-1 waits, at most, for its missing piece layers before it completes
#: without them. One silent peer costs piece_layers.REQUEST_TIMEOUT (5 s) before its chunk goes to another,
#: and hash_exchange.HASH_SILENT_BACKOFF (30 s) before it is asked again: 45 s covers that round once more
#: with a second; a libtorrent seeder here answers a 512-hash chunk in one round trip (milliseconds).
LAYER_WAIT = 45.0


class LayerRecheck:
    """Checks one torrent's held pieces as their files' layers arrive (see the module docstring).

    ``manager()`` is the torrent's current piece manager (a re-check replaces it); ``stored(index)``: a held
    piece matched and is marked complete in the storage (the torrent counts it, announces it); ``lost(index)``:
    a hybrid piece failed its Merkle hash (``have`` and the storage's record are cleared already); ``ready()``:
    a file's pieces may be requested now; ``spawn(fn)`` runs ``fn`` in a greenlet whose errors are the
    torrent's; ``stopping()``: the torrent is shutting down; ``settled()``: every layer is known and every
    held piece checked with it (:attr:`settled` became True: a download waiting for that may complete now).
    """

    def __init__(self, meta: Metainfo, layers: PieceLayers, verifier: Verifier, have: Bitfield,
                 manager: Callable[[], Any], stored: Callable[[int], None], lost: Callable[[int], None],
                 ready: Callable[[], None], spawn: Callable[[Callable[[], None]], Any],
                 stopping: Callable[[], bool], settled: Callable[[], None] = lambda: None) -> None:
        self.meta = meta
        self.layers = layers
        self.verifier = verifier
        self.have = have
        self._manager = manager
        self._stored = stored
        self._lost = lost
        self._ready = ready
        self._spawn = spawn
        self._stopping = stopping
        self._settled = settled
        #: Files whose layer arrived and whose held pieces are being checked now (0: nothing pending).
        self.running = 0
        #: When a download complete on SHA-1 began to wait for the layers (monotonic), None if it did not.
        self.waiting_since: float | None = None
        #: The wait ran out (:data:`LAYER_WAIT`): completion no longer waits for the layers.
        self.gave_up = False
        #: Pieces checked here so far, and how many of them were found good (for logs and tests).
        self.checked = 0
        self.good = 0
        layers.on_file_layer = self.file_layer_arrived

    @property
    def settled(self) -> bool:
        """Every piece layer is known and every held piece was checked with it (nothing pending)."""
        return self.layers.complete and not self.running

    def holds_completion(self, now: float | None = None) -> bool:
        """Whether a download whose pieces all passed their hash must wait for the Merkle check before it is
        complete (layers missing or a re-check running, and the wait not over). Starts the wait's clock."""
        if self.settled or self.gave_up:
            return False
        if self.waiting_since is None:
            self.waiting_since = time.monotonic() if now is None else now
            self.layers.withhold = True  # not greeting as a seed: libtorrent's seeds would hang up
            log.info("download complete on SHA-1; waiting for piece layers", torrent=self.meta.name,
                     files_missing=len(self.meta.missing_layers()), rechecking=self.running, bound=LAYER_WAIT)
        return True

    def wait_expired(self, now: float) -> str | None:
        """Once, when the wait for the layers has lasted :data:`LAYER_WAIT`: the warning to give (completion
        stops waiting); None otherwise."""
        if self.waiting_since is None or self.gave_up or self.settled or now - self.waiting_since < LAYER_WAIT:
            return None
        self.gave_up = True
        self.layers.withhold = False
        missing = len(self.meta.missing_layers())
        if missing:
            return (f"piece layers for {missing} file(s) never arrived from peers: "
                    "those files were verified with SHA-1 only")
        return "the check of pieces with their piece layers did not finish: some were verified with SHA-1 only"

    def file_layer_arrived(self, f: FileEntry) -> None:
        """``f``'s layer was fetched and proved: check its held pieces in a greenlet, then make it ready."""
        self.running += 1
        self._spawn(lambda: self._recheck_counted(f))

    def _recheck_counted(self, f: FileEntry) -> None:
        try:
            self._recheck(f)
        finally:
            self.running -= 1
        if self.settled and not self._stopping():
            if self.waiting_since is not None and not self.gave_up:
                log.info("every piece checked with both hashes", torrent=self.meta.name, checked=self.checked,
                         failed=self.checked - self.good)
            self._settled()

    def _recheck(self, f: FileEntry) -> None:
        pieces = self.layers.file_pieces(f)
        for _ in range(WAIT_ROUNDS):
            verifying = self._manager().verifying
            if not any(i in verifying for i in pieces):
                break
            gevent.sleep(WAIT_STEP)
        verifier, have = self.verifier, self.have
        if self.meta.v2_only:
            todo = [i for i in pieces if i in verifier.held and not have[i]]
        else:
            todo = [i for i in pieces if have[i]]
        found = failed = 0
        for k in range(0, len(todo), BATCH):
            if self._stopping():
                return
            batch = todo[k : k + BATCH]
            verdicts = verifier.check_pieces(batch)
            if self._stopping():
                return  # the storage may be closing: mark nothing
            for index, good in zip(batch, verdicts):
                self.checked += 1
                verifier.held.discard(index)
                if good:
                    self.good += 1
                    found += 1
                    verifier.unconfirmed.discard(index)  # hashed now, with both hashes
                else:
                    failed += 1
                if self.meta.v2_only:
                    if good and not have[index]:
                        with verifier.disk_lock:
                            verifier.storage.mark_complete(index)
                        self._stored(index)
                elif not good and have[index]:
                    have.clear(index)
                    verifier.unconfirmed.discard(index)
                    with verifier.disk_lock:
                        verifier.storage.mark_incomplete(index)
                    self._lost(index)
        if todo:
            log.info("held pieces checked with their piece layer", torrent=self.meta.name, file="/".join(f.path),
                     checked=len(todo), found_good=found, failed=failed)
        self.layers.file_ready(f.root)
        self._ready()


__all__ = ["LayerRecheck", "BATCH", "LAYER_WAIT"]
