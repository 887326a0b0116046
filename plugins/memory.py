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

Standard output: ``run -o -`` (a single-file torrent; the CLI checks) needs
this storage; the CLI then reads the file through a streaming reader
(:func:`torrentcore.reader_source.run_streaming`) and writes it to standard
output in order as pieces are verified, under any strategy (the reader's
read-ahead window is urgent for every strategy). The console then prints to
standard error. This backend itself never writes anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable

from torrentcore.hookspec import BadInputError, Metainfo, Setting, Storage, StorageError, TorrentConfig, hookimpl

from ._sizes import parse_size

#: Largest torrent the memory backend accepts unless ``memory.max_bytes`` says otherwise.
DEFAULT_MAX_BYTES = 1024**3


class MemoryStorage:
    """A :class:`~torrentcore.hookspec.Storage` holding each verified piece as ``bytes``."""

    def __init__(self, torrent: Metainfo, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
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
        """Record the piece as verified."""
        self._complete.add(piece)

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


def _max_bytes(options: TorrentConfig) -> int:
    settings = options.plugin_settings
    value = (settings.get("memory") or {}).get("max_bytes")
    return DEFAULT_MAX_BYTES if value in (None, "") else parse_size(value, "memory.max_bytes")


def _open_storage(torrent: Metainfo, save_path: str, options: TorrentConfig) -> Storage:
    return MemoryStorage(torrent, _max_bytes(options))


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
