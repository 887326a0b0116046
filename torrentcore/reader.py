"""Streaming reads of a torrent's files while it downloads: ``handle.open(file_index)``.

:func:`open_file` returns a :class:`TorrentFile`, a seekable, buffered binary file object
(:class:`io.BufferedReader` over :class:`TorrentFileIO`, an :class:`io.RawIOBase`) over one file of the
torrent, usable wherever Python expects a file opened with ``"rb"`` (``shutil.copyfileobj``, a media
player's demuxer, ``zipfile``)::

    with handle.open(0, readahead=8 << 20, timeout=60) as f:
        f.seek(f.length * 6 // 10)
        chunk = f.read(1 << 20)   # waits until the pieces under these bytes are verified

What a reader does:

* A read blocks until the pieces it covers are verified; data already verified is read from storage at
  once (never from the network). Each wait for a piece is bounded by the reader's ``timeout`` (``None``:
  wait as long as the torrent runs) and raises :class:`TimeoutError`; when the torrent stops, fails or is
  removed while a read waits, the read raises :class:`TorrentStoppedError` instead of hanging.
  A read that fails leaves the position where it was.
* Its **read-ahead window** (``readahead`` bytes from the read position, at least the piece under it and
  every piece the current read covers) is the engine's *urgent* pieces: they are requested before
  whatever the torrent's strategy would pick, in order, under every strategy plugin (see
  :meth:`torrentcore.piecemanager.PieceManager.set_urgent`). The window follows the position on every read
  and seek, so a player that seeks into the middle of a film still downloading gets those bytes next.
  Several readers (each with its own window) may be open at once; closing one drops its window.
* Opening a file that is not selected (``--only``/``--skip``) selects it.

Readers run on the engine's gevent hub (call them from a greenlet, never from another OS thread). One
reader is one position: use one reader per greenlet (``io.BufferedReader`` refuses re-entrant calls).

The reader talks to the torrent only through :class:`ReaderSource`, so any engine that offers those few
methods can serve readers; :mod:`torrentcore.reader_source`
adapts :class:`torrentcore.torrent.Torrent` (and has :func:`~torrentcore.reader_source.open_reader`).
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Hashable, Sequence
from typing import BinaryIO, Protocol, runtime_checkable

from .errors import TorrentcoreError
from .metainfo import FileEntry, Metainfo

#: Default read-ahead window in bytes (rounded up to whole pieces by the window's ends).
DEFAULT_READAHEAD = 8 * 1024 * 1024
#: Default size of the :class:`io.BufferedReader` buffer (small reads are served from it).
DEFAULT_BUFFER_SIZE = 128 * 1024
#: Bytes :func:`stream_to_stdout` asks for at once (it writes whatever is verified, up to this).
STREAM_CHUNK = 1024 * 1024

_reader_ids = itertools.count(1)


class ReaderError(TorrentcoreError, OSError):
    """A reader could not deliver data (an :class:`OSError`, as file objects raise)."""


class TorrentStoppedError(ReaderError):
    """The torrent stopped, failed or was removed while a read waited for its data."""


@runtime_checkable
class ReaderSource(Protocol):
    """What a reader needs from the torrent it reads (the engine side of :func:`open_file`).

    Every method is called on the engine's gevent hub, from the reader's greenlet.
    """

    #: The torrent's metainfo (files, piece length).
    meta: Metainfo

    def is_verified(self, index: int) -> bool:
        """True if piece ``index`` passed its hash check and is stored (so :meth:`read_piece_range` works)."""

    def wait_verified(self, index: int, timeout: float | None) -> None:
        """Return once piece ``index`` is verified (at once if it is).

        Raises :class:`TimeoutError` after ``timeout`` seconds (``None``: no limit), and
        :class:`TorrentStoppedError` as soon as the torrent stops, fails or is removed while waiting.
        """

    def read_piece_range(self, index: int, begin: int, length: int) -> bytes:
        """``length`` bytes at ``begin`` in verified piece ``index``: a storage read (under the engine's
        disk lock), never the network. Raises :class:`ReaderError` (or a subclass) when it cannot."""

    def set_urgent(self, reader_id: Hashable, pieces: Sequence[int]) -> None:
        """Make ``pieces`` (in order) the urgent window of reader ``reader_id``, replacing its last one."""

    def clear_urgent(self, reader_id: Hashable) -> None:
        """Drop the urgent window of reader ``reader_id`` (it closed)."""

    def select_file(self, file_index: int) -> None:
        """Make sure file ``file_index`` (of ``meta.data_files``) is wanted: add it to the file selection."""


class TorrentFileIO(io.RawIOBase):
    """Unbuffered reads of one file of a torrent (see the module docstring); wrapped by :class:`TorrentFile`.

    ``readinto`` waits for the piece under the position, then copies from it and from the verified pieces
    that follow it, so it may return fewer bytes than asked (never zero before the end of the file).
    """

    def __init__(self, source: ReaderSource, file_index: int, readahead: int = DEFAULT_READAHEAD,
                 timeout: float | None = None) -> None:
        files = source.meta.data_files
        if not 0 <= file_index < len(files):
            raise IndexError(f"file {file_index} of a torrent with files 0 to {len(files) - 1}")
        if readahead < 0:
            raise ValueError(f"readahead must be at least 0 bytes, not {readahead}")
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be at least 0 seconds or None, not {timeout}")
        super().__init__()
        self.source = source
        self.meta = source.meta
        self.file_index = file_index
        self.file: FileEntry = files[file_index]
        #: The file's size in bytes.
        self.length = self.file.length
        self.readahead = readahead
        #: Seconds one read may wait for one piece (``None``: as long as the torrent runs).
        self.timeout = timeout
        #: The key of this reader's urgent window.
        self.reader_id: Hashable = ("reader", next(_reader_ids), file_index)
        self._pos = 0
        self._window: list[int] = []

    # --- io.RawIOBase --------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The file's path as ``torrentcore info`` shows it."""
        return self.file.relpath

    @property
    def mode(self) -> str:
        """Always ``"rb"``."""
        return "rb"

    def readable(self) -> bool:
        """True."""
        self._checkClosed()
        return True

    def seekable(self) -> bool:
        """True."""
        self._checkClosed()
        return True

    def tell(self) -> int:
        """The position in the file."""
        self._checkClosed()
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move to ``offset`` (from the start, the position or the end); beyond the end is allowed (reads
        then return ``b""``). The read-ahead window moves with it."""
        self._checkClosed()
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            pos = self.length + offset
        else:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        self._update_window(0)
        return pos

    def readinto(self, buffer) -> int:  # noqa: ANN001 - any writable buffer
        """Read up to ``len(buffer)`` bytes at the position (see the class docstring); 0 at the end."""
        self._checkClosed()
        view = memoryview(buffer).cast("B")
        want = min(len(view), self.length - self._pos)
        if want <= 0:
            return 0
        source, meta = self.source, self.meta
        plen = meta.piece_length
        start = self.file.offset + self._pos
        self._update_window(want)
        first = start // plen
        source.wait_verified(first, self.timeout)
        done = 0
        while done < want:
            at = start + done
            index = at // plen
            if done and not source.is_verified(index):
                break  # return what is here; the next read waits for this piece
            begin = at - index * plen
            take = min(want - done, meta.piece_size(index) - begin)
            data = source.read_piece_range(index, begin, take)
            if len(data) != take:
                raise ReaderError(f"storage returned {len(data)} bytes of piece {index} instead of {take}")
            view[done : done + take] = data
            done += take
        self._pos += done
        self._update_window(0)
        return done

    def close(self) -> None:
        """Close the reader and drop its read-ahead window."""
        if not self.closed:
            try:
                self._window = []
                source = getattr(self, "source", None)  # None: __init__ refused its arguments
                if source is not None:
                    source.clear_urgent(self.reader_id)
            finally:
                super().close()

    # --- the read-ahead window -----------------------------------------------------------------------

    def set_readahead(self, readahead: int) -> None:
        """Change the read-ahead window (bytes from the position; 0: only the piece under it)."""
        if readahead < 0:
            raise ValueError(f"readahead must be at least 0 bytes, not {readahead}")
        self.readahead = readahead
        if not self.closed:
            self._update_window(0)

    def window(self) -> list[int]:
        """The pieces of the current read-ahead window that were not verified when it last moved."""
        return list(self._window)

    def _update_window(self, reading: int) -> None:
        """Point the urgent window at ``[position, position + max(readahead, reading))`` of the file."""
        pos, length = self._pos, self.length
        pieces: list[int] = []
        if pos < length:
            plen = self.meta.piece_length
            start = self.file.offset + pos
            end = self.file.offset + min(length, pos + max(self.readahead, reading, 1))
            is_verified = self.source.is_verified
            pieces = [i for i in range(start // plen, (end - 1) // plen + 1) if not is_verified(i)]
        if pieces == self._window:
            return
        self._window = pieces
        if pieces:
            self.source.set_urgent(self.reader_id, pieces)
        else:
            self.source.clear_urgent(self.reader_id)


class TorrentFile(io.BufferedReader):
    """A buffered, seekable binary file over one file of a torrent (what :func:`open_file` returns).

    Everything :class:`io.BufferedReader` offers, plus ``length``, ``file_index``, ``file``, ``timeout``,
    ``readahead`` and :meth:`set_readahead`. A read that fails (time-out, torrent stopped) leaves the
    position where it was before the call.
    """

    raw: TorrentFileIO

    def __init__(self, raw: TorrentFileIO, buffer_size: int = DEFAULT_BUFFER_SIZE) -> None:
        super().__init__(raw, buffer_size)

    @property
    def length(self) -> int:
        """The file's size in bytes."""
        return self.raw.length

    @property
    def file_index(self) -> int:
        """The file's index in ``meta.data_files``."""
        return self.raw.file_index

    @property
    def file(self) -> FileEntry:
        """The file's entry in the torrent."""
        return self.raw.file

    @property
    def timeout(self) -> float | None:
        """Seconds one read may wait for one piece (``None``: as long as the torrent runs)."""
        return self.raw.timeout

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        if value is not None and value < 0:
            raise ValueError(f"timeout must be at least 0 seconds or None, not {value}")
        self.raw.timeout = value

    @property
    def readahead(self) -> int:
        """The read-ahead window in bytes."""
        return self.raw.readahead

    def set_readahead(self, readahead: int) -> None:
        """Change the read-ahead window (like anacrolix's ``Reader.SetReadahead``)."""
        self.raw.set_readahead(readahead)

    # A read may consume data from the raw file and then fail (a later piece timed out): put the position
    # back, so that the bytes are read again by the next call instead of being lost.

    def read(self, size: int | None = -1) -> bytes:
        """Read up to ``size`` bytes (all to the end with -1), waiting for their pieces."""
        before = self.tell()
        try:
            return super().read(size)
        except BaseException:
            self._restore(before)
            raise

    def readinto(self, buffer) -> int:  # noqa: ANN001 - any writable buffer
        """Fill ``buffer`` (fewer bytes only at the end of the file), waiting for the pieces."""
        before = self.tell()
        try:
            return super().readinto(buffer)
        except BaseException:
            self._restore(before)
            raise

    def readline(self, size: int | None = -1) -> bytes:
        """Read one line (up to ``size`` bytes), waiting for its pieces."""
        before = self.tell()
        try:
            return super().readline(size)
        except BaseException:
            self._restore(before)
            raise

    def _restore(self, position: int) -> None:
        if not self.closed:
            self.seek(position)


def open_file(source: ReaderSource, file_index: int, *, readahead: int = DEFAULT_READAHEAD,
              timeout: float | None = None, buffer_size: int = DEFAULT_BUFFER_SIZE) -> TorrentFile:
    """Open file ``file_index`` (of ``source.meta.data_files``, numbered as ``torrentcore info`` lists them)
    for reading while the torrent downloads (see the module docstring).

    The file is selected if it was not, and its read-ahead window starts at position 0 at once.
    """
    raw = TorrentFileIO(source, file_index, readahead, timeout)
    source.select_file(file_index)
    raw._update_window(0)
    return TorrentFile(raw, buffer_size)


def stream_to_stdout(reader: BinaryIO, out: BinaryIO, chunk: int = STREAM_CHUNK) -> int:
    """Copy ``reader`` from its position to the end into ``out`` (standard output), in order, as the data
    is verified; return the bytes written.

    Each write runs in gevent's thread pool, so a slow consumer of a pipe blocks this greenlet only, never
    the peers. Raises what the reader raises (:class:`TorrentStoppedError`) and :class:`OSError` for a
    failed write.
    """
    import gevent

    pool = gevent.get_hub().threadpool
    read = getattr(reader, "read1", reader.read)
    written = 0
    while True:
        data = read(chunk)
        if not data:
            return written
        error = pool.apply(_write_all, (out, data))
        if error is not None:
            raise error  # here, on the hub: gevent prints a traceback for errors leaving its thread pool
        written += len(data)


def _write_all(out: BinaryIO, data: bytes) -> OSError | None:
    """In a worker thread: write and flush; a failure is returned, not raised."""
    try:
        out.write(data)
        out.flush()
    except OSError as exc:
        return exc
    return None


__all__ = [
    "DEFAULT_READAHEAD",
    "ReaderError",
    "ReaderSource",
    "TorrentFile",
    "TorrentFileIO",
    "TorrentStoppedError",
    "open_file",
    "stream_to_stdout",
]
