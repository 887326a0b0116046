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
"""

from __future__ import annotations

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


class LayerRecheck:
    """Checks one torrent's held pieces as their files' layers arrive (see the module docstring).

    ``manager()`` is the torrent's current piece manager (a re-check replaces it); ``stored(index)``: a held
    piece matched and is marked complete in the storage (the torrent counts it, announces it); ``lost(index)``:
    a hybrid piece failed its Merkle hash (``have`` and the storage's record are cleared already); ``ready()``:
    a file's pieces may be requested now; ``spawn(fn)`` runs ``fn`` in a greenlet whose errors are the
    torrent's; ``stopping()``: the torrent is shutting down.
    """

    def __init__(self, meta: Metainfo, layers: PieceLayers, verifier: Verifier, have: Bitfield,
                 manager: Callable[[], Any], stored: Callable[[int], None], lost: Callable[[int], None],
                 ready: Callable[[], None], spawn: Callable[[Callable[[], None]], Any],
                 stopping: Callable[[], bool]) -> None:
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
        #: Pieces checked here so far, and how many of them were found good (for logs and tests).
        self.checked = 0
        self.good = 0
        layers.on_file_layer = self.file_layer_arrived

    def file_layer_arrived(self, f: FileEntry) -> None:
        """``f``'s layer was fetched and proved: check its held pieces in a greenlet, then make it ready."""
        self._spawn(lambda: self._recheck(f))

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


__all__ = ["LayerRecheck", "BATCH"]
