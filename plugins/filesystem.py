"""Storage on the local filesystem: pieces mapped onto the torrent's files.

* Files are created lazily, on the first write that touches them, and grow
  sparsely (``pwrite`` at offsets leaves holes where the filesystem allows).
  Zero-length files are created when the torrent completes; pad files are
  never written, symlink entries are never created.
* Paths come from :mod:`torrentcore.metainfo`, already made safe; this backend
  checks again that every file it opens resolves inside the download folder
  and never follows a symlink at a file's own path.
* A small JSON resume record (``.torrentcore-<infohash>.resume`` beside the data)
  lists the verified pieces together with each file's size and modification
  time. It is written on close and trusted only while every file still has
  that size and time; otherwise the engine re-hashes what is on disk.
"""

from __future__ import annotations

import argparse
import bisect
import errno
import json
import os
from collections import OrderedDict
from collections.abc import Iterable

from torrentcore.hookspec import FileEntry, Metainfo, Storage, StorageError, hookimpl

RESUME_VERSION = 1
#: A resume record is small (one bit per piece, two numbers per file); refuse to read more than this.
MAX_RESUME_BYTES = 64 * 1024 * 1024
#: Open file descriptors kept at most (least recently used are closed).
MAX_OPEN_FILES = 128


def resume_path(save_path: str, torrent: Metainfo) -> str:
    """Where the resume record of ``torrent`` lives."""
    return os.path.join(save_path, f".torrentcore-{torrent.info_hash_hex}.resume")


class FilesystemStorage:
    """A :class:`~torrentcore.hookspec.Storage` over ordinary files under ``save_path``."""

    def __init__(self, torrent: Metainfo, save_path: str) -> None:
        self.torrent = torrent
        self.save_path = os.path.abspath(save_path)
        try:
            os.makedirs(self.save_path, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create download folder {self.save_path}: {exc.strerror}") from None
        self._root = os.path.realpath(self.save_path)
        self._files = [f for f in torrent.files if f.length > 0 or not (f.pad or f.symlink)]
        self._starts = [f.offset for f in self._files]
        self._fds: OrderedDict[int, int] = OrderedDict()
        self._complete: set[int] = set()
        self._finalized = False
        self._checked_dirs: set[str] = set()

    # --- mapping ---------------------------------------------------------------------------------

    def _spans(self, piece: int, offset: int, length: int):
        """Yield ``(file_index, file_offset, start_in_data, size)`` covering the byte range."""
        pos = piece * self.torrent.piece_length + offset
        end = pos + length
        if offset < 0 or length < 0 or end > self.torrent.total_length:
            raise StorageError(f"range {piece}:{offset}+{length} lies outside the torrent")
        i = max(bisect.bisect_right(self._starts, pos) - 1, 0)
        done = 0
        while pos < end and i < len(self._files):
            f = self._files[i]
            f_end = f.offset + f.length
            if f_end > pos and f.length:
                n = min(end, f_end) - pos
                yield i, pos - f.offset, done, n
                pos += n
                done += n
            i += 1

    def _path(self, f: FileEntry) -> str:
        return os.path.join(self.save_path, *f.path)

    def _open(self, index: int, create: bool) -> int | None:
        fd = self._fds.get(index)
        if fd is not None:
            self._fds.move_to_end(index)
            return fd
        f = self._files[index]
        path = self._path(f)
        flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            folder = os.path.dirname(path)
            if create:
                flags |= os.O_CREAT
                if folder not in self._checked_dirs:
                    os.makedirs(folder, exist_ok=True)
            if folder not in self._checked_dirs:
                parent = os.path.realpath(folder)
                if parent != self._root and not parent.startswith(self._root + os.sep):
                    raise StorageError(f"refusing to write {f.relpath}: it resolves outside {self.save_path}")
                if create:
                    # Checked once per folder; a folder we created is not swapped for a symlink by the torrent.
                    self._checked_dirs.add(folder)
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:
            if create:
                raise StorageError(f"cannot create {path}") from None
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StorageError(f"refusing to follow a symlink at {path}") from None
            raise StorageError(f"cannot open {path}: {exc.strerror}") from None
        self._fds[index] = fd
        if len(self._fds) > MAX_OPEN_FILES:
            _, old = self._fds.popitem(last=False)
            os.close(old)
        return fd

    # --- Storage protocol ------------------------------------------------------------------------

    def read(self, piece: int, offset: int, length: int) -> bytes:
        """Read bytes of a piece; holes, pad files and missing files read as zeros."""
        out = bytearray(length)
        view = memoryview(out)
        for i, file_off, start, n in self._spans(piece, offset, length):
            if self._files[i].pad:
                continue
            fd = self._open(i, create=False)
            if fd is None:
                continue
            try:
                got = os.preadv(fd, [view[start : start + n]], file_off)
            except OSError as exc:
                raise StorageError(f"cannot read {self._files[i].relpath}: {exc.strerror}") from None
            # A short read (file shorter than expected) leaves zeros, which then fail the hash check.
            del got
        return bytes(out)

    def write(self, piece: int, offset: int, data: bytes | memoryview) -> None:
        """Write bytes of a piece into the files they belong to."""
        view = memoryview(data)
        for i, file_off, start, n in self._spans(piece, offset, len(view)):
            if self._files[i].pad:
                continue
            fd = self._open(i, create=True)
            chunk = view[start : start + n]
            try:
                while chunk:
                    written = os.pwrite(fd, chunk, file_off)
                    chunk = chunk[written:]
                    file_off += written
            except OSError as exc:
                what = "disk full" if exc.errno == errno.ENOSPC else exc.strerror
                raise StorageError(f"cannot write {self._path(self._files[i])}: {what}") from None

    def mark_complete(self, piece: int) -> None:
        """Remember the piece; when the last one arrives, finish the files."""
        self._complete.add(piece)
        if len(self._complete) == self.torrent.num_pieces and not self._finalized:
            self._finalize()

    def mark_incomplete(self, piece: int) -> None:
        """Forget a piece's completion."""
        self._complete.discard(piece)
        self._finalized = False

    def _finalize(self) -> None:
        """Create empty files and make every file exactly its length."""
        for i, f in enumerate(self._files):
            if f.pad or f.symlink:
                continue
            st = self._stat(f)
            if st is not None and st.st_size == f.length:
                continue  # the usual case: opening thousands of finished files again is slow
            fd = self._open(i, create=True)
            try:
                if os.fstat(fd).st_size != f.length:
                    os.ftruncate(fd, f.length)
            except OSError as exc:
                raise StorageError(f"cannot size {f.relpath}: {exc.strerror}") from None
        self._finalized = True

    def completed_pieces(self) -> set[int] | None:
        """The pieces of the resume record, if every file still matches it."""
        try:
            with open(resume_path(self.save_path, self.torrent), "rb") as fh:
                record = json.loads(fh.read(MAX_RESUME_BYTES))
            if record.get("version") != RESUME_VERSION or record.get("info_hash") != self.torrent.info_hash_hex:
                return None
            stats = record["files"]
            files = [f for f in self._files if not f.pad and not f.symlink]
            if len(stats) != len(files):
                return None
            for f, (size, mtime) in zip(files, stats):
                st = self._stat(f)
                current = (st.st_size, st.st_mtime_ns) if st else (-1, -1)
                if current != (size, mtime):
                    return None
            bits = bytes.fromhex(record["pieces"])
            n = self.torrent.num_pieces
            if len(bits) != (n + 7) // 8:
                return None
            return {i for i in range(n) if bits[i >> 3] & (0x80 >> (i & 7))}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def _stat(self, f: FileEntry) -> os.stat_result | None:
        try:
            return os.stat(self._path(f), follow_symlinks=False)
        except OSError:
            return None

    def pieces_with_data(self) -> Iterable[int]:
        """Pieces overlapping bytes that exist in files on disk."""
        plen = self.torrent.piece_length
        found: set[int] = set()
        for f in self._files:
            if f.pad or not f.length:
                continue
            st = self._stat(f)
            if st is None or st.st_size == 0:
                continue
            end = f.offset + min(st.st_size, f.length)
            found.update(range(f.offset // plen, (end - 1) // plen + 1))
        return sorted(found)

    def flush(self) -> None:
        """Nothing is buffered in user space: ``pwrite`` hands data to the OS at once."""

    def close(self) -> None:
        """Close every file and save the resume record."""
        while self._fds:
            _, fd = self._fds.popitem()
            try:
                os.close(fd)
            except OSError:
                pass
        self._save_resume()

    def _save_resume(self) -> None:
        files = [f for f in self._files if not f.pad and not f.symlink]
        stats = []
        for f in files:
            st = self._stat(f)
            stats.append([st.st_size, st.st_mtime_ns] if st else [-1, -1])
        n = self.torrent.num_pieces
        bits = bytearray((n + 7) // 8)
        for i in self._complete:
            bits[i >> 3] |= 0x80 >> (i & 7)
        record = {
            "version": RESUME_VERSION,
            "info_hash": self.torrent.info_hash_hex,
            "files": stats,
            "pieces": bits.hex(),
        }
        path = resume_path(self.save_path, self.torrent)
        tmp = path + ".tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(json.dumps(record, separators=(",", ":")).encode())
            os.replace(tmp, path)
        except OSError:
            # No resume record only means a re-check next time; never fail a finished download for it.
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _open_storage(torrent: Metainfo, save_path: str, options: argparse.Namespace) -> Storage:
    return FilesystemStorage(torrent, save_path)


@hookimpl
def torrentcore_storage_backends():
    """Offer the ``filesystem`` backend."""
    return {"filesystem": _open_storage}
