"""The :class:`~torrentcore.reader.ReaderSource` of an engine torrent, :class:`torrentcore.torrent.Torrent`.

:class:`TorrentReaderSource` is the only code that knows both the reader and the engine's insides: it
answers the reader's questions from ``Torrent.have``, ``Torrent.read_block`` (a storage read of a verified
piece under the engine's disk lock), ``Torrent.manager`` (urgent windows, wanted pieces) and the torrent's
events (``PieceVerified`` and ``Finished`` wake waiting reads).

:func:`run_streaming` is ``torrentcore run --storage memory -o -``: it runs the torrent while a reader
copies its single file to standard output in order.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Hashable, Iterable, Sequence
from typing import TYPE_CHECKING, BinaryIO

import gevent
import gevent.event

from .errors import EXIT_OK, EXIT_RUNTIME
from .events import Event, Finished, PieceVerified
from .reader import (
    DEFAULT_BUFFER_SIZE,
    DEFAULT_READAHEAD,
    ReaderError,
    ReaderSource,
    TorrentFile,
    TorrentStoppedError,
    open_file,
    stream_to_stdout,
)
from .selection import wanted_pieces

if TYPE_CHECKING:
    from .piecemanager import PieceManager
    from .torrent import Torrent

#: A waiting read looks at the torrent's state at least this often (seconds), even if no hook woke it.
WAIT_SLICE = 0.25


class TorrentReaderSource:
    """A :class:`~torrentcore.reader.ReaderSource` over a :class:`torrentcore.session.Torrent`.

    Create it once per torrent (before or after ``run()`` started; urgent windows set before the data
    check are carried over to the engine's piece manager once it exists) and :meth:`detach` it when the
    torrent is removed: reads waiting then raise :class:`~torrentcore.reader.TorrentStoppedError`.
    """

    def __init__(self, torrent: Torrent) -> None:
        self.torrent = torrent
        self.meta = torrent.meta
        self._waiters: dict[int, gevent.event.Event] = {}
        self._windows: dict[Hashable, list[int]] = {}
        self._manager: PieceManager | None = None
        self._detached = False
        torrent.reporter.listeners.append(self._on_event)

    def open(self, file_index: int, *, readahead: int = DEFAULT_READAHEAD, timeout: float | None = None):
        """:func:`~torrentcore.reader.open_file` on this torrent (what ``handle.open`` will be)."""
        return open_file(self, file_index, readahead=readahead, timeout=timeout)

    def detach(self) -> None:
        """The torrent is removed: waiting reads raise, later ones too; the hooks are unregistered."""
        if self._detached:
            return
        self._detached = True
        self._wake_all()
        self._unregister()
        if _sources.get(self.torrent) is self:
            del _sources[self.torrent]

    def _on_event(self, event: Event) -> None:
        """Wake the reads waiting for a verified piece; when the torrent is gone, every waiting read."""
        if isinstance(event, PieceVerified):
            self._wake(event.index)
        elif isinstance(event, Finished):
            self._wake_all()

    def _unregister(self) -> None:
        listeners = self.torrent.reporter.listeners
        if self._on_event in listeners:
            listeners.remove(self._on_event)

    # --- ReaderSource -------------------------------------------------------------------------------

    def is_verified(self, index: int) -> bool:
        """Piece ``index`` is in the torrent's verified bitfield."""
        return self.torrent.have[index]

    def wait_verified(self, index: int, timeout: float | None) -> None:
        """Wait (bounded by ``timeout`` and by the torrent's life) until piece ``index`` is verified."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.torrent.have[index]:
            reason = self._stopped()
            if reason is not None:
                raise TorrentStoppedError(f"piece {index} of {self.meta.name} will not arrive: {reason}")
            self._sync_manager()
            wait = WAIT_SLICE
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"piece {index} of {self.meta.name} was not verified within {timeout:g} s")
                wait = min(wait, left)
            event = self._waiters.get(index)
            if event is None:
                event = self._waiters[index] = gevent.event.Event()
            event.wait(wait)

    def read_piece_range(self, index: int, begin: int, length: int) -> bytes:
        """A storage read of verified piece ``index`` through ``Torrent.read_block`` (under the disk lock)."""
        t = self.torrent
        if self._detached:
            raise TorrentStoppedError(f"{self.meta.name} was removed")
        if t.verifier.storage_closed and not getattr(t.verifier.storage, "readable_after_close", False):
            raise TorrentStoppedError(f"{self.meta.name} stopped: its storage is closed")
        data = t.read_block(index, begin, length)
        if data is None:
            if not t.have[index]:
                raise ReaderError(f"piece {index} of {self.meta.name} is not verified")
            raise ReaderError(f"cannot read piece {index} of {self.meta.name}: {t.error or 'storage error'}")
        return data

    def set_urgent(self, reader_id: Hashable, pieces: Sequence[int]) -> None:
        """The reader's window becomes urgent in the piece manager; idle peers are asked to request now."""
        self._windows[reader_id] = list(pieces)
        manager = self._sync_manager()
        manager.set_urgent(reader_id, pieces)
        self._wake_requesters()

    def clear_urgent(self, reader_id: Hashable) -> None:
        """Drop the reader's window."""
        self._windows.pop(reader_id, None)
        self._sync_manager().clear_urgent(reader_id)

    def select_file(self, file_index: int) -> None:
        """Add the file to the torrent's selection (nothing when every file is selected)."""
        t = self.torrent
        if t.selected_files is None or file_index in t.selected_files:
            return
        files = sorted({*t.selected_files, file_index})
        selected = wanted_pieces(self.meta, files)
        manager = self._sync_manager()
        manager.set_wanted(selected)
        t.selected_files = files
        t.selected = manager.selected  # the engine's own copy (in-flight pieces kept): snapshot, tracker
        if manager.complete or t.exit_code is not None:
            return
        if t.completed_at is not None and t.state == "seeding":
            t.completed_at = None  # complete again later: _on_complete runs once more
            t.state = "downloading"
        for peer in list(t.peers.values()):
            if not peer.am_interested and manager.interesting(peer.has):
                peer.set_interested(True)
        t.swarm.connect_now.set()  # the connector idles while a torrent is complete
        self._wake_requesters()

    # --- internals ----------------------------------------------------------------------------------

    def _stopped(self) -> str | None:
        """Why no more piece will be verified, or None while the torrent runs."""
        t = self.torrent
        if self._detached:
            return "the torrent was removed"
        if t.error:
            return f"the torrent failed: {t.error}"
        if t.exit_code is not None or t.state in ("done", "error"):
            return "the torrent stopped"
        return None

    def _sync_manager(self) -> PieceManager:
        """The torrent's piece manager; the windows are carried over when the engine made a new one (the
        data check at start replaces it)."""
        manager = self.torrent.manager
        if manager is not self._manager:
            self._manager = manager
            for reader_id, pieces in self._windows.items():
                manager.set_urgent(reader_id, pieces)
            if self._windows:
                self._wake_requesters()
        return manager

    def _wake_requesters(self) -> None:
        """Let every peer top up its requests now (each checks choking, interest and room itself), not
        only the idle ones ``Torrent.wake_requesters`` serves: a new window should go out at once."""
        for peer in list(self.torrent.peers.values()):
            peer.fill_requests()

    def _wake(self, index: int) -> None:
        event = self._waiters.pop(index, None)
        if event is not None:
            event.set()

    def _wake_all(self) -> None:
        waiters, self._waiters = self._waiters, {}
        for event in waiters.values():
            event.set()


_sources: weakref.WeakKeyDictionary[object, TorrentReaderSource] = weakref.WeakKeyDictionary()


def source_for(torrent: Torrent) -> TorrentReaderSource:
    """The one :class:`TorrentReaderSource` of ``torrent`` (made on first use; every reader shares it)."""
    source = _sources.get(torrent)
    if source is None or source._detached:
        source = _sources[torrent] = TorrentReaderSource(torrent)
    return source


def open_reader(torrent: object, file_index: int, *, readahead: int | None = None, timeout: float | None = None,
                buffer_size: int = DEFAULT_BUFFER_SIZE) -> TorrentFile:
    """``handle.open(file_index)``: :func:`open_file` on ``torrent``, a :class:`ReaderSource` or an engine
    torrent (adapted once per torrent by :func:`torrentcore.reader_source.source_for`).

    ``readahead`` ``None`` is :data:`DEFAULT_READAHEAD`.
    """
    if not isinstance(torrent, ReaderSource):
        torrent = source_for(torrent)
    return open_file(torrent, file_index, readahead=DEFAULT_READAHEAD if readahead is None else readahead,
                     timeout=timeout, buffer_size=buffer_size)



class HeldStorage:
    """A :class:`~torrentcore.hookspec.Storage` whose ``close()`` waits for :meth:`release`.

    The engine closes its storage when the torrent stops; a reader still copying verified data (standard
    output slower than the download) reads on until it releases the storage.
    """

    def __init__(self, inner) -> None:  # noqa: ANN001 - any Storage
        self.inner = inner
        self._held = True
        self._close_wanted = False
        if hasattr(inner, "thread_safe_writes"):
            self.thread_safe_writes = inner.thread_safe_writes

    @property
    def readable_after_close(self) -> bool:
        """True while held: the data stays readable after the engine closed it."""
        return self._held

    def read(self, piece: int, offset: int, length: int) -> bytes:
        """The inner storage's read."""
        return self.inner.read(piece, offset, length)

    def write(self, piece: int, offset: int, data: bytes | memoryview) -> None:
        """The inner storage's write."""
        self.inner.write(piece, offset, data)

    def mark_complete(self, piece: int) -> None:
        """The inner storage's mark_complete."""
        self.inner.mark_complete(piece)

    def mark_incomplete(self, piece: int) -> None:
        """The inner storage's mark_incomplete."""
        self.inner.mark_incomplete(piece)

    def completed_pieces(self) -> set[int] | None:
        """The inner storage's completion record."""
        return self.inner.completed_pieces()

    def pieces_with_data(self) -> Iterable[int]:
        """The inner storage's pieces with data."""
        return self.inner.pieces_with_data()

    def check_finished(self) -> None:
        """The inner storage's optional check_finished (see hookspec.Storage), if it has one."""
        finish = getattr(self.inner, "check_finished", None)
        if finish is not None:
            finish()

    def flush(self) -> None:
        """The inner storage's flush."""
        self.inner.flush()

    def close(self) -> None:
        """Close the inner storage now, or at :meth:`release` while held."""
        self._close_wanted = True
        if not self._held:
            self.inner.close()

    def release(self) -> None:
        """No reader needs the data any more: close the inner storage if the engine asked to."""
        if self._held:
            self._held = False
            if self._close_wanted:
                self.inner.close()


def run_streaming(torrent: Torrent, out: BinaryIO, readahead: int = DEFAULT_READAHEAD) -> int:
    """Run ``torrent`` (a single-file torrent) while a reader copies its file to ``out`` in order, as the
    pieces are verified (``run --storage memory -o -``); return the exit code.

    The reader's read-ahead window makes the data flow in order under any strategy. When the download
    completes, ``out`` still gets the rest (the consumer sets the pace) before the storage is closed. A
    failed write to ``out`` fails the torrent with one line (exit code 1).
    """
    held = HeldStorage(torrent.verifier.storage)
    torrent.storage = torrent.verifier.storage = held
    source = source_for(torrent)
    failed: list[str] = []

    def pump() -> None:
        try:
            with source.open(0, readahead=readahead) as reader:
                stream_to_stdout(reader, out)
        except TorrentStoppedError:
            pass  # the torrent's own exit code says why
        except ReaderError as exc:
            failed.append(str(exc))
            torrent.fail(str(exc))
        except OSError as exc:
            message = f"cannot write to standard output: {exc.strerror or exc}"
            failed.append(message)
            torrent.fail(message)

    streamer = gevent.spawn(pump)
    try:
        torrent.start()
        torrent.wait()
        code = torrent.exit_code if torrent.exit_code is not None else EXIT_RUNTIME
        if code == EXIT_OK:
            streamer.join()  # the rest of the data: unbounded on purpose, the reading side sets the pace
        else:
            streamer.kill(block=True, timeout=5)
    finally:
        streamer.kill(block=False)
        source.detach()
        held.release()
    if failed and code == EXIT_OK:
        torrent.error = failed[0]
        return EXIT_RUNTIME
    return code


__all__ = ["TorrentReaderSource", "HeldStorage", "run_streaming", "source_for"]
