"""Storage on the local filesystem: pieces mapped onto the torrent's files.

* Files are created lazily, on the first write that touches them, and grow
  sparsely (``pwrite`` at offsets leaves holes where the filesystem allows).
  Zero-length files are created when the torrent completes; pad files are
  never written, symlink entries are never created.
* Paths come from :mod:`torrentcore.metainfo`, already made safe; this backend
  checks again that every file it opens resolves inside the download folder
  and never follows a symlink at a file's own path.
* Folders are created one component at a time relative to their parent's
  descriptor (:func:`torrentcore.statefile.open_folder_under`): a symlink or a file
  planted where a folder belongs is refused before anything is created beyond it.
  Data files are opened relative to their folder with ``O_NOFOLLOW`` and must be
  regular files (a FIFO or device planted at a file's path is refused).
* A small JSON resume record lists the verified pieces together with each file's
  size and modification time. It lives in the state directory
  (:func:`torrentcore.statefile.state_dir`, ``resume/<sha1 of info-hash and
  folder>.resume``), never beside the user's data, and is written on close
  (:func:`torrentcore.statefile.write_atomic`; its form: :mod:`._resume_record`). Files are ``fsync``-ed during the
  download by :mod:`._sync_ahead`, each once it is finished. Close waits for no
  ``fsync`` where the system names its boot (:mod:`._boot`); there each file's ``fsync`` also
  waits until the kernel has written it by itself (about 40 s: :func:`._sync_ahead.settle_seconds`), and
  close ``fsync``-s the finished files that have settled. The record names the boot
  and lists the files not known to be on the disk yet; in the same boot the page cache
  holds their data, after a new boot their claimed pieces are hashed first and the bad
  ones dropped. Elsewhere close ``fsync``-s the rest before it writes the record. It is
  trusted only while every file still has that size and time, every claimed
  piece lies inside its files, and a sample of the claimed pieces hashes
  correctly; otherwise the engine re-hashes what is on disk. A
  record that is not a regular file, malformed, or of the wrong shape is ignored
  with one warning. Old-style records beside the data
  (``.torrentcore-<infohash>.resume``, written by earlier versions) are ignored: the data is
  checked again once.
* While the engine checks data found at start, the record on disk is left as it
  was: an interrupted check writes no record (the next start checks again) and
  only :meth:`FilesystemStorage.check_finished` allows a new one.
* Each write of a piece goes out whole, or 32 KiB per ``pwrite`` while whole writes cost much more CPU per
  byte (a VM's page-cache penalty), as :mod:`._write_size` measures.
* Files changed behind our back during a run (deleted, truncated, rewritten by
  another program: seen by comparing each file's inode, size and modification
  time with what they were after our own last write) stop the download with a
  clear error, and no resume record is written for data we no longer vouch for.
"""

from __future__ import annotations

import bisect
import errno
import os
import stat
import weakref
from collections import OrderedDict
from collections.abc import Iterable

import structlog

from torrentcore.hookspec import (
    FileEntry,
    Metainfo,
    Storage,
    StorageError,
    TorrentConfig,
    UnsafePath,
    UnsafeStateFile,
    close_fd,
    decode_json,
    hookimpl,
    read_state,
    remove_state,
    write_atomic,
)

from . import _resume_record as record_format
from ._boot import boot_id
from ._folders import OpenFolders
from ._resume_record import Record, max_record_bytes, resume_path
from ._sync_ahead import SyncAhead, settle_seconds
from ._sync_ahead import in_threads as _in_threads
from ._write_size import WriteSize

log = structlog.get_logger(__name__)

#: Data files kept open by all the filesystem storages of the process together (each keeps its own least
#: recently used ones: OPEN_FILES_BUDGET divided by the storages open, at least MIN_OPEN_FILES), as libtorrent
#: keeps one file pool of 40 for its session: these descriptors come out of the session's RESERVED_FDS
#: (torrentcore/session.py), which the connections leave free. It was 256 per torrent, so that a 200-file
#: tree written in random piece order opened each file once (with 128: a file opened on every other piece,
#: each open walking its folders). Pieces now come in 4 MiB extents (plugins/rarest_first.py), a few files at
#: a time: benchmarks/storage_write.py, swarm.py's tree (512 MiB, 200 files) in extent order, os.open calls
#: per piece (folders and files): 0.53 with 256, 0.72 with 64, 0.78 with 32, 0.84 with 16 (in random piece
#: order 0.53 / 2.95 / 4.16 / 4.82). The folders' descriptors are kept too (plugins/_folders.py), within the same
#: share: with 32, 0.62-0.67 instead of 0.79-0.80 (`storage_write.py --extent 16 --rounds 2 --baseline-python`,
#: the writing thread's CPU the same within the noise: 0.54 against 0.55 s per GiB, gevent not patched there).
OPEN_FILES_BUDGET = 32
MIN_OPEN_FILES = 4
#: The filesystem storages not closed yet (their number divides OPEN_FILES_BUDGET).
_LIVE: weakref.WeakSet = weakref.WeakSet()
#: Files fsync'ed at once when the storage closes (each in an OS thread: ext4 commits concurrent fsyncs
#: together). 200 files of 2.5 MiB just written (the size of benchmarks/swarm.py's tree): one after another
#: 0.83-0.91 s, which was most of the second between "download complete" and exit; 4 at once 0.39 s, 8 0.27 s,
#: 16 0.27 s.
SYNC_THREADS = 8
#: Descriptors duplicated at most for one background fsync batch (plugins/_sync_ahead.py); the batch opens the
#: other files again by path, one at a time. (A batch of 32 MiB holds about 13 files of swarm.py's tree.)
SYNC_AHEAD_DUPS = 16
class FilesystemStorage:
    """A :class:`~torrentcore.hookspec.Storage` over ordinary files under ``save_path``.

    About 480 lines: the Storage protocol's nine methods plus the safety of every path (folders walked one
    component at a time, no link followed), the files changed behind our back, and what of a resume record
    to trust (its form and sampling: :mod:`._resume_record`).
    """

    #: The engine may call ``read``, ``write`` and ``mark_complete`` from worker threads (one call at a
    #: time, never during another call of this object): nothing here touches gevent or the event loop.
    thread_safe_writes = True

    def __init__(self, torrent: Metainfo, save_path: str) -> None:
        self.torrent = torrent
        self.save_path = os.path.abspath(save_path)
        try:
            os.makedirs(self.save_path, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create download folder {self.save_path}: {exc.strerror}") from None
        self._files = [f for f in torrent.files if f.length > 0 or not (f.pad or f.symlink)]
        self._starts = [f.offset for f in self._files]
        self._fds: OrderedDict[int, int] = OrderedDict()  # least recently used first (see OPEN_FILES_BUDGET)
        self._folders = OpenFolders(self.save_path)  # their folders' descriptors, within the same budget
        _LIVE.add(self)
        self._complete: set[int] = set()
        self._finalized = False
        # pieces_with_data() starts a check of the data on disk; until check_finished() says it ran to the
        # end, close() writes no record (an interrupted check must not make unchecked pieces look absent).
        self._check_pending = False
        # File index -> (inode, size, mtime_ns) as last seen by us: after our own writes, or when the data was
        # checked. A file that no longer looks like this was changed by someone else.
        self._seen: dict[int, tuple[int, int, int]] = {}
        self._unsynced: set[int] = set()  # files written since the last fsync (started)
        # fsyncs during the download; where the record names the boot nothing waits for them, so each settles
        # first (see _sync_ahead.settle_seconds)
        self._sync_ahead = SyncAhead(self._open_for_sync, settle=settle_seconds() if boot_id() is not None else 0.0)
        self._write_size = WriteSize()  # bytes per pwrite, from what the writes cost (see _write_size)
        self._written: dict[int, int] = {}  # bytes written to each file (to know when it is finished)
        self._changed: str | None = None  # what changed behind our back, if anything

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
        fd = self._open_file(f, create)
        if fd is None:
            return None
        self._fds[index] = fd
        limit = max(MIN_OPEN_FILES, OPEN_FILES_BUDGET // max(1, len(_LIVE)))
        self._folders.trim(max(1, limit // 4))  # files and folders together within the limit
        while len(self._fds) + len(self._folders) > limit:
            _, old = self._fds.popitem(last=False)
            close_fd(old)
        return fd

    def _open_file(self, f: FileEntry, create: bool) -> int | None:
        """Open ``f`` read-write relative to its folder, never through a link (``None``: it does not exist).

        Its folder's descriptor comes from :class:`._folders.OpenFolders` (walked one component at a time by
        :func:`open_folder_under`, and created if ``create``); the file is opened with ``O_NOFOLLOW`` and
        must be a regular file. A folder kept from an earlier open where the file is missing is walked again
        (it may have been moved or deleted since).
        """
        path = self._path(f)
        verb = "write" if create else "read"
        for _attempt in range(2):
            try:
                folder, kept = self._folders.get(f.path[:-1], create)
            except UnsafePath as exc:
                raise StorageError(f"refusing to {verb} {f.relpath}: {exc} (it could lead outside "
                                   f"{self.save_path})") from None
            except OSError as exc:
                if not create and exc.errno == errno.ENOENT:
                    return None
                raise StorageError(f"cannot open {path}: {exc.strerror}") from None
            if folder is None:
                return None
            fd = self._open_in(folder, f.path[-1], create, path)
            if fd is not None or not kept:
                break
            self._folders.forget(f.path[:-1])
        if fd is None and create:
            raise StorageError(f"cannot create {path}")
        return fd

    def _open_in(self, folder: int, name: str, create: bool, path: str) -> int | None:
        """Open the regular file ``name`` of the folder ``folder`` (``None``: it does not exist, or the
        folder no longer does)."""
        flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            try:
                st = os.stat(name, dir_fd=folder, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is not None and stat.S_ISLNK(st.st_mode):
                raise StorageError(f"refusing to follow a symlink at {path}")
            if st is not None and not stat.S_ISREG(st.st_mode):
                raise StorageError(f"refusing to use {path}: it is not a regular file")
            if st is None and not create:
                return None
            fd = os.open(name, flags | (os.O_CREAT if create else 0), 0o644, dir_fd=folder)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StorageError(f"refusing to follow a symlink at {path}") from None
            raise StorageError(f"cannot open {path}: {exc.strerror}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped in between the two calls above
            close_fd(fd)
            raise StorageError(f"refusing to use {path}: it is not a regular file")
        return fd

    # --- Storage protocol ------------------------------------------------------------------------

    def read(self, piece: int, offset: int, length: int) -> bytes:
        """Read bytes of a piece; holes, pad files and missing files read as zeros."""
        spans = list(self._spans(piece, offset, length))
        if len(spans) == 1 and spans[0][3] == length and not self._files[spans[0][0]].pad:
            # One file holds it all (most reads): one allocation, no zero-filled buffer copied. Two 256 KiB
            # buffers per read were malloc'ed fresh (mmap, page faults) each time: 0.3 CPU s of 500 torrents'
            # resume checks (cProfile, benchmarks/many_torrents.py), depending on what the process had freed.
            i, file_off, _, n = spans[0]
            fd = self._open(i, create=False)
            if fd is not None:
                try:
                    data = os.pread(fd, n, file_off)
                except OSError as exc:
                    raise StorageError(f"cannot read {self._files[i].relpath}: {exc.strerror}") from None
                # A short read (file shorter than expected) leaves zeros, which then fail the hash check.
                return data if len(data) == n else data + bytes(n - len(data))
        out = bytearray(length)
        view = memoryview(out)
        for i, file_off, start, n in spans:
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
            size, measure = self._write_size.chunk(n)
            try:
                self._check_unchanged(i, os.fstat(fd))
                try:
                    began = self._write_size.clock() if measure else 0.0
                    while chunk:
                        written = os.pwrite(fd, chunk[:size], file_off)
                        chunk = chunk[written:]
                        file_off += written
                    if measure:
                        self._write_size.measured(size, n, self._write_size.clock() - began)
                finally:
                    self._note(i, os.fstat(fd))  # our own write, even a partial one, changes the file
            except OSError as exc:
                what = "disk full" if exc.errno == errno.ENOSPC else exc.strerror
                raise StorageError(f"cannot write {self._path(self._files[i])}: {what}") from None
            self._unsynced.add(i)
            done = self._written[i] = self._written.get(i, 0) + n
            if self._sync_ahead.note(i, n, done >= self._files[i].length):
                self._start_sync_ahead()

    def _start_sync_ahead(self) -> None:
        """Hand the files written since the last hand-over to the background fsync (see SyncAhead)."""
        items: list[tuple[object, int | None]] = []
        for i in self._sync_ahead.ready():
            if i not in self._unsynced:
                continue
            self._unsynced.discard(i)
            fd = self._fds.get(i)
            try:
                # Files not open, and those beyond SYNC_AHEAD_DUPS (descriptors are counted), are opened again
                # by path for their fsync, one at a time.
                dup = None if fd is None or len(items) >= SYNC_AHEAD_DUPS else os.dup(fd)
            except OSError:  # no descriptor to spare
                dup = None
            items.append((i, dup))
        self._sync_ahead.start(items)

    # --- noticing changes made by others -----------------------------------------------------------

    def _note(self, index: int, st: os.stat_result) -> None:
        self._seen[index] = (st.st_ino, st.st_size, st.st_mtime_ns)

    def _check_unchanged(self, index: int, st: os.stat_result | None, by_path: bool = False) -> None:
        """Raise :class:`StorageError` if file ``index`` is not as we last saw it (deleted, truncated, rewritten)."""
        seen = self._seen.get(index)
        deleted = st is None or (not by_path and st.st_nlink == 0)
        if not deleted and (seen is None or (st.st_ino, st.st_size, st.st_mtime_ns) == seen):
            return
        path = self._path(self._files[index])  # joined only for the error (it was, once per write: 1.4 % of the
        # GIL's samples, benchmarks/piecepath.py)
        if deleted:
            problem = f"{path} was deleted during the download"
        elif st.st_ino != seen[0]:
            problem = f"{path} was replaced by another file during the download"
        elif st.st_size < seen[1]:
            problem = f"{path} was truncated during the download ({st.st_size} of {seen[1]} bytes left)"
        else:
            problem = f"{path} was modified by another program during the download"
        self._changed = problem
        raise StorageError(problem)

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
            if i in self._seen:
                self._check_unchanged(i, st, by_path=True)
            if st is not None and st.st_size == f.length:
                continue  # the usual case: opening thousands of finished files again is slow
            fd = self._open(i, create=True)
            try:
                if os.fstat(fd).st_size != f.length:
                    os.ftruncate(fd, f.length)
                    self._unsynced.add(i)
                self._note(i, os.fstat(fd))
            except OSError as exc:
                raise StorageError(f"cannot size {f.relpath}: {exc.strerror}") from None
        self._finalized = True

    def completed_pieces(self) -> set[int] | None:
        """The pieces of the resume record, if every file still matches it (``None``: check the data)."""
        path = resume_path(self.save_path, self.torrent)
        listed = self._listed_files()
        try:
            raw = read_state(path, max_record_bytes(self.torrent))
            if raw is None:
                return None
            record = record_format.decode(decode_json(raw), self.torrent, self.save_path, len(listed))
        except (UnsafeStateFile, ValueError) as exc:
            log.warning("ignoring the resume record; checking the data again", path=path, reason=str(exc))
            return None
        current = self._unchanged_since(record, listed)
        if current is None:
            return None  # a record of other files or times: stale, not hostile
        claimed, unsynced = record.claimed, {listed[k] for k in record.unsynced}
        # The files it lists were not on the disk yet when it was written: unless this is still the boot it
        # names (then the page cache holds what the disk may not: see plugins/_boot.py), hash their pieces.
        same_boot = record.boot is not None and record.boot == boot_id()
        try:
            if unsynced and not same_boot:
                self._check_after_restart(claimed, unsynced)
            if not self._record_matches_data(claimed, current):
                return None
        except StorageError:
            return None
        for i, st in current.items():
            self._note(i, st)
        if same_boot:
            self._unsynced |= unsynced  # still not known to be on the disk: listed again by the next record
        return claimed

    def _listed_files(self) -> list[int]:
        """The files a resume record lists (all but pad files and symlinks), in order."""
        return [i for i, f in enumerate(self._files) if not f.pad and not f.symlink]

    def _unchanged_since(self, record: Record, listed: list[int]) -> dict[int, os.stat_result] | None:
        """The listed files' current stats, if each still has the record's size and time (else ``None``)."""
        current: dict[int, os.stat_result] = {}
        for i, (size, mtime) in zip(listed, record.stats):
            st = self._stat(self._files[i])
            if st is not None and not stat.S_ISREG(st.st_mode):
                return None
            if ((st.st_size, st.st_mtime_ns) if st else (-1, -1)) != (size, mtime):
                return None
            if st is not None:
                current[i] = st
        return current

    def _check_after_restart(self, claimed: set[int], suspect: set[int]) -> None:  # (in place)
        """The machine started again since the record was written: hash the claimed pieces of the files it
        listed as not on the disk yet (they may have been lost with the page cache), and drop the bad ones."""
        pieces = sorted(p for p in claimed
                        if any(i in suspect for i, *_ in self._spans(p, 0, self.torrent.piece_size(p))))
        bad = [p for p in pieces if not self.torrent.piece_ok(p, self.read(p, 0, self.torrent.piece_size(p)))]
        claimed.difference_update(bad)
        log.info("checked the pieces not yet on the disk when the machine stopped", checked=len(pieces),
                 lost=len(bad))

    def _record_matches_data(self, claimed: set[int], current: dict[int, os.stat_result]) -> bool:
        """Whether the claimed pieces can be what is on disk: inside existing files, and a sample hashes right.

        Sizes and times only show that nothing changed since the record was written; this also refuses a
        record that never described this data (copied from elsewhere, crafted). A few wrong pieces among many
        right ones are not caught here: they fail when uploaded peers hash them, as with any client.
        """
        for piece in claimed:
            for i, file_off, _, n in self._spans(piece, 0, self.torrent.piece_size(piece)):
                if self._files[i].pad:
                    continue
                st = current.get(i)
                if st is None or st.st_size < file_off + n:
                    return False
        for piece in record_format.sample(claimed):
            size = self.torrent.piece_size(piece)
            if not self.torrent.piece_ok(piece, self.read(piece, 0, size)):
                log.warning("resume record does not match the data; checking it again", piece=piece)
                return False
        return True

    def _stat(self, f: FileEntry) -> os.stat_result | None:
        try:
            return os.stat(self._path(f), follow_symlinks=False)
        except OSError:
            return None

    def pieces_with_data(self) -> Iterable[int]:
        """Pieces overlapping bytes that exist in files on disk (a check of them starts: see check_finished).

        Completions recorded before are forgotten: the check marks every good piece again (a re-check must
        not leave pieces it found bad in the record).
        """
        self._check_pending = True
        self._complete.clear()
        self._finalized = False
        plen = self.torrent.piece_length
        found: set[int] = set()
        for i, f in enumerate(self._files):
            if f.pad or not f.length:
                continue
            st = self._stat(f)
            if st is None or st.st_size == 0:
                continue  # (anything but a regular file here is refused with one line when it is read)
            self._note(i, st)
            end = f.offset + min(st.st_size, f.length)
            found.update(range(f.offset // plen, (end - 1) // plen + 1))
        return sorted(found)

    def check_finished(self) -> None:
        """The engine hashed every piece :meth:`pieces_with_data` listed: the record may be written again."""
        self._check_pending = False

    def flush(self) -> None:
        """Nothing is buffered in user space: ``pwrite`` hands data to the OS at once."""

    def close(self) -> None:
        """Close every file and save the resume record (if it can be trusted).

        Where the system names its boot (:func:`._boot.boot_id`), the data handed to the kernel outlives this
        process: close waits for no ``fsync``, and the record lists the files not known to be on the disk yet,
        whose pieces are hashed at the next start if the machine has started again since. Elsewhere every file
        written is ``fsync``-ed first, and the record written only if all went well.
        """
        boot = boot_id()
        if boot is None:
            synced = self._sync()  # the rest, while the background batch (other files) may still run...
            synced = self._sync_ahead.wait(SYNC_THREADS) and synced  # ...helped to its end (and all went well)
            not_durable: set[int] = set()
        else:
            # The kernel writes the rest within about 30 s; waiting for it here was most of the time between
            # "download complete" and exit (benchmarks/swarm.py's tree: 0.2-0.9 s, libtorrent's whole tail 0.13 s).
            self._sync_ahead.abandon()
            synced = self._sync_settled() and not self._sync_ahead.failed
            not_durable = self._unsynced | self._sync_ahead.not_synced()
        _LIVE.discard(self)
        while self._fds:
            _, fd = self._fds.popitem()
            try:
                close_fd(fd)
            except OSError:
                pass
        self._folders.close()
        if not synced:  # data that may not have reached the disk must not be vouched for
            remove_state(resume_path(self.save_path, self.torrent))
            return
        if self._check_pending:
            # Stopped during the check at start: the pieces not hashed yet are unknown, not absent. No record
            # (the old one was not trusted, or there would have been no check): the next start checks again.
            log.info("no resume record: the check of the data was interrupted")
            remove_state(resume_path(self.save_path, self.torrent))
            return
        self._save_resume(boot, not_durable)

    def _sync(self) -> bool:
        """``fsync`` every file written since the last time (so the record never gets ahead of the data),
        up to SYNC_THREADS files at once."""
        ok = all(_in_threads(self._sync_file, sorted(self._unsynced), SYNC_THREADS))
        self._unsynced.clear()
        return ok

    def _sync_settled(self) -> bool:
        """At a close that waits for no disk: ``fsync`` the finished files that have settled (the kernel wrote
        their pages meanwhile, so this is quick), so that the record vouches for them; False if one failed."""
        files = [i for i in self._sync_ahead.settled_finished() if i in self._unsynced]
        ok = _in_threads(self._sync_file, files, SYNC_THREADS)
        for i, good in zip(files, ok):
            if good:
                self._unsynced.discard(i)
        return all(ok)

    def _sync_file(self, i: int) -> bool:
        """``fsync`` file ``i`` (in a thread of its own: see :func:`_in_threads`); False if that failed."""
        fd = self._fds.get(i)
        try:
            if fd is not None:
                os.fsync(fd)
            else:
                tmp = self._open_for_sync(i)
                try:
                    os.fsync(tmp)
                finally:
                    close_fd(tmp)
        except OSError:
            return False
        return True

    def _open_for_sync(self, i: int) -> int:
        """A new read-only descriptor of file ``i`` for its ``fsync`` (OSError if it cannot be opened): never
        through a link, and never blocking on a FIFO swapped in since the write."""
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        return os.open(self._path(self._files[i]), flags)

    def _changed_behind_our_back(self, files: list[int]) -> str | None:
        """What changed in our files since we last saw them (before the record is written), if anything."""
        if self._changed:
            return self._changed
        for i in files:
            if i in self._seen:
                try:
                    self._check_unchanged(i, self._stat(self._files[i]), by_path=True)
                except StorageError as exc:
                    return str(exc)
        return None

    def _save_resume(self, boot: str | None, not_durable: set[int]) -> None:
        """Write the record: verified pieces, each file's size and time, and (``boot``) the boot and the files
        of ``not_durable`` (not ``fsync``-ed yet)."""
        path = resume_path(self.save_path, self.torrent)
        listed = self._listed_files()
        reported = self._changed
        changed = self._changed_behind_our_back(listed)
        if changed:
            # The verified pieces may no longer be on disk: no record, so the next run hashes the data again.
            # (A change already reported as a write error is not reported twice.)
            report = log.info if reported else log.warning
            report("no resume record: files changed during the run", reason=changed)
            remove_state(path)
            return
        stats = []
        for i in listed:
            st = self._stat(self._files[i])
            stats.append((st.st_size, st.st_mtime_ns) if st else (-1, -1))
        unsynced = [k for k, i in enumerate(listed) if i in not_durable]
        try:
            write_atomic(path, record_format.encode(self.torrent, self.save_path, stats, self._complete, boot,
                                                    unsynced))
        except OSError as exc:
            # No new record only means a re-check next time (the old one no longer matches the files); never
            # fail a finished download for it.
            log.warning("cannot save the resume record", path=path, error=exc.strerror or str(exc))


def _open_storage(torrent: Metainfo, save_path: str, options: TorrentConfig) -> Storage:
    return FilesystemStorage(torrent, save_path)


@hookimpl
def torrentcore_storage_backends():
    """Offer the ``filesystem`` backend."""
    return {"filesystem": _open_storage}
