"""Storage in memory: every piece kept in RAM, nothing written to disk (``--storage memory``).

Useful for tests, for piping, and for short-lived seeders. The download
folder (``-o``) is never touched: no folder is created, no resume record
written. Completion state is kept per piece; a piece's bytes are stored when
the engine writes it (after its hash matched) and served from memory while
seeding. Everything is gone when the process exits, so a restarted download
starts from nothing.

Size cap: a torrent larger than ``memory.max_bytes`` (default
:data:`DEFAULT_MAX_BYTES`, 1 GiB; set it with ``--plugin-opt
memory.max_bytes=4G``, suffixes k/M/G, powers of 1024) is refused before
anything starts, with exit code 2. The cap applies to the whole torrent, also
with ``--only``/``--skip`` (pieces are stored per piece, so a selection uses
less, but the check does not depend on it).

Standard output: with ``run -o -`` (a single-file torrent; the CLI checks)
the data is also written to standard output in order, each piece as soon as
it and every piece before it are verified -- with ``--strategy sequential``
it flows while the download runs. The console then prints to standard error.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import BinaryIO

import gevent

from torrentcore.errors import BadInputError
from torrentcore.hookspec import Metainfo, Setting, Storage, StorageError, TorrentConfig, hookimpl

from ._sizes import parse_size

#: Largest torrent the memory backend accepts unless ``memory.max_bytes`` says otherwise.
DEFAULT_MAX_BYTES = 1024**3
#: Pieces handed to the writer thread at once when streaming to standard output.
STREAM_BATCH = 64


class MemoryStorage:
    """A :class:`~torrentcore.hookspec.Storage` holding each verified piece as ``bytes``."""

    def __init__(self, torrent: Metainfo, max_bytes: int = DEFAULT_MAX_BYTES, stream: BinaryIO | None = None) -> None:
        """``stream``: also write the data there, in order, as pieces complete (``run -o -``)."""
        if torrent.total_length > max_bytes:
            raise BadInputError(
                f"{torrent.name} is {torrent.total_length} bytes, more than the memory storage's cap of "
                f"{max_bytes} bytes (raise it with --plugin-opt memory.max_bytes=SIZE, or use the "
                f"filesystem storage)"
            )
        self.torrent = torrent
        self.max_bytes = max_bytes
        self._pieces: dict[int, bytearray] = {}
        self._complete: set[int] = set()
        self._stream = stream
        self._streamed = 0  # pieces before this one are written to the stream
        self._writing = False  # one greenlet writes at a time, so the stream stays in order

    def _check(self, piece: int, offset: int, length: int) -> None:
        if not 0 <= piece < self.torrent.num_pieces or offset < 0 or length < 0 \
                or offset + length > self.torrent.piece_size(piece):
            raise StorageError(f"range {piece}:{offset}+{length} lies outside the torrent")

    def read(self, piece: int, offset: int, length: int) -> bytes:
        """Bytes of a piece held in memory (zeros where nothing was written)."""
        self._check(piece, offset, length)
        data = self._pieces.get(piece)
        if data is None:
            return bytes(length)
        return bytes(data[offset : offset + length])

    def write(self, piece: int, offset: int, data: bytes | memoryview) -> None:
        """Copy ``data`` into the piece (the engine reuses its buffer after the call)."""
        view = memoryview(data)
        self._check(piece, offset, len(view))
        buf = self._pieces.get(piece)
        if buf is None:
            buf = self._pieces[piece] = bytearray(self.torrent.piece_size(piece))
        buf[offset : offset + len(view)] = view

    def mark_complete(self, piece: int) -> None:
        """Record the piece as verified (and stream what is now complete from the start, if streaming)."""
        self._complete.add(piece)
        if self._stream is not None:
            self._write_stream()

    def _write_stream(self) -> None:
        if self._writing:
            return  # the greenlet that is writing picks this piece up when its write returns
        self._writing = True
        try:
            while self._streamed in self._complete:
                chunks: list[bytes | bytearray] = []
                while self._streamed in self._complete and len(chunks) < STREAM_BATCH:
                    i = self._streamed
                    chunks.append(self._pieces.get(i) or bytes(self.torrent.piece_size(i)))
                    self._streamed += 1
                # In gevent's thread pool: a slow reader of the pipe blocks this greenlet only, not the peers.
                # (A complete piece's buffer is never modified again, so the thread may read it.)
                try:
                    gevent.get_hub().threadpool.apply(_write_all, (self._stream, chunks))
                except OSError as exc:
                    raise StorageError(f"cannot write to standard output: {exc.strerror or exc}") from None
        finally:
            self._writing = False

    def mark_incomplete(self, piece: int) -> None:
        """Forget the piece's completion (its bytes are dropped too)."""
        self._complete.discard(piece)
        self._pieces.pop(piece, None)

    def completed_pieces(self) -> set[int] | None:
        """The pieces verified in this process (nothing survives a restart: an empty set at start)."""
        return set(self._complete)

    def pieces_with_data(self) -> Iterable[int]:
        """Pieces holding written bytes."""
        return sorted(self._pieces)

    def flush(self) -> None:
        """Nothing to flush."""

    def close(self) -> None:
        """Release the memory."""
        self._pieces.clear()


def _write_all(stream: BinaryIO, chunks: list[bytes | bytearray]) -> None:
    for chunk in chunks:
        stream.write(chunk)
    stream.flush()


def _max_bytes(options: TorrentConfig) -> int:
    settings = getattr(options, "plugin_settings", None) or {}
    value = (settings.get("memory") or {}).get("max_bytes")
    return DEFAULT_MAX_BYTES if value in (None, "") else parse_size(value, "memory.max_bytes")


def _open_storage(torrent: Metainfo, save_path: str, options: TorrentConfig) -> Storage:
    stream = sys.stdout.buffer if save_path == "-" else None
    return MemoryStorage(torrent, _max_bytes(options), stream)


@hookimpl
def torrentcore_storage_backends():
    """Offer the ``memory`` backend."""
    return {"memory": _open_storage}


@hookimpl
def torrentcore_plugin_settings():
    """``memory.max_bytes``: the largest torrent kept in memory."""
    return {
        "memory": {
            "max_bytes": Setting(str, "1G", "largest torrent the memory storage accepts, e.g. 512M or 4G"),
        }
    }
