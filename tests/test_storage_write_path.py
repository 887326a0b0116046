"""The filesystem storage's write path: files opened once (folders walked without mkdir), and fsyncs during the
download (plugins/_sync_ahead.py) that still keep the rule "no resume record unless every written file was
fsync'ed without error". Counts only, no timing."""

from __future__ import annotations

import gc
import os
import random
import threading

from test_storage_filesystem import make_meta

from torrentcore_plugins import _folders, _sync_ahead
from torrentcore_plugins import filesystem as fsmod
from torrentcore_plugins.filesystem import FilesystemStorage, resume_path


def write_in_order(storage, meta, blob, order, settle=False):
    """Write these pieces; ``settle``: let each background fsync batch end before the next write (so that the
    batches do not depend on the threads' timing)."""
    for i in order:
        start = i * meta.piece_length
        storage.write(i, 0, blob[start : start + meta.piece_size(i)])
        storage.mark_complete(i)
        if settle:
            storage._sync_ahead.wait()


def test_a_tree_of_200_files_written_extent_by_extent_opens_each_file_at_most_twice(tmp_path, monkeypatch):
    """swarm.py's tree has 200 files; rarest-first asks for pieces extent by extent (plugins/rarest_first.py), so
    that the storage's share of OPEN_FILES_BUDGET (all of it for one torrent) holds the files being written: a
    file is opened again only if it spans two extents. Folders are walked without a mkdir once they exist."""
    files = [([b"d%d" % (k % 7), b"s%d" % (k % 3), b"f%03d" % k], os.urandom(3000 + 7 * k)) for k in range(200)]
    meta, blob = make_meta(files, piece_length=16384)
    opened: list[str] = []
    mkdirs: list[str] = []
    real_open_file, real_mkdir = FilesystemStorage._open_file, os.mkdir

    def open_file(self, f, create):
        opened.append(f.relpath)
        return real_open_file(self, f, create)

    def mkdir(path, *a, **k):
        if k.get("dir_fd") is not None:  # the storage's own walks (not the state folder's makedirs)
            mkdirs.append(path)
        return real_mkdir(path, *a, **k)

    monkeypatch.setattr(FilesystemStorage, "_open_file", open_file)
    monkeypatch.setattr(fsmod.os, "mkdir", mkdir)
    st = FilesystemStorage(meta, str(tmp_path))
    extent = 3  # rarest_first.extent_pieces for these 49 pieces
    starts = list(range(0, meta.num_pieces, extent))
    random.Random(5).shuffle(starts)
    most_open = 0
    for s in starts:
        write_in_order(st, meta, blob, range(s, min(s + extent, meta.num_pieces)))
        most_open = max(most_open, len(st._fds))
    st.close()
    counts = {p: opened.count(p) for p in set(opened)}
    assert set(counts) == {f.relpath for f in meta.files} and max(counts.values()) <= 2, counts
    assert sum(counts.values()) <= len(meta.files) + len(starts), "only files across two extents again"
    assert most_open <= fsmod.OPEN_FILES_BUDGET
    # Only the first file of each of the 21 folders d*/s* walks its 3 folders creating (each open tried 3).
    assert len(mkdirs) == 3 * 21, mkdirs
    for f, (_, data) in zip(meta.files, files):
        assert (tmp_path / f.relpath).read_bytes() == data


def _descriptors(st: FilesystemStorage) -> int:
    """The descriptors a filesystem storage keeps open: its files and their folders."""
    return len(st._fds) + len(st._folders)


def test_the_storages_of_a_process_share_one_budget_of_open_files(tmp_path, monkeypatch):
    """OPEN_FILES_BUDGET is for every storage of the process together (the session's RESERVED_FDS), each keeping
    an equal share of its least recently used files and at least MIN_OPEN_FILES; a closed storage leaves the
    budget to the others. The descriptors of their folders (plugins/_folders.py) count in the same share. The
    data is written whole however often files are opened again."""
    gc.collect()  # storages of other tests that were never closed (a cycle through their SyncAhead) are gone
    monkeypatch.setattr(fsmod, "OPEN_FILES_BUDGET", 12)
    monkeypatch.setattr(fsmod, "MIN_OPEN_FILES", 2)
    files = [([b"f%02d" % k], os.urandom(5000 + k)) for k in range(30)]
    meta, blob = make_meta(files, piece_length=16384)
    folders = [tmp_path / f"t{k}" for k in range(8)]
    stores = [FilesystemStorage(meta, str(folder)) for folder in folders[:2]]
    order = list(range(meta.num_pieces))
    random.Random(3).shuffle(order)
    most = [0, 0]
    for i in order:
        for k, st in enumerate(stores):
            write_in_order(st, meta, blob, [i])
            most[k] = max(most[k], _descriptors(st))
    assert most == [6, 6], "two storages: half the budget each"
    stores[1].close()
    write_in_order(stores[0], meta, blob, order)  # the pieces again (the same bytes)
    assert _descriptors(stores[0]) == 12, "alone again: the whole budget"
    assert len(stores[0]._folders) == 1, "one folder (the download folder) in this flat torrent"
    stores[0].close()
    many = [FilesystemStorage(meta, str(folder)) for folder in folders]  # 8 storages: 12 // 8 < 2
    for st in many:
        write_in_order(st, meta, blob, order)
        assert _descriptors(st) == 2
    for st in many:
        st.close()
    for folder in folders:
        for f, (_, data) in zip(meta.files, files):
            assert (folder / f.relpath).read_bytes() == data
    assert FilesystemStorage(meta, str(folders[0])).completed_pieces() == set(range(meta.num_pieces))


def _fsyncs(monkeypatch, fail_first: set[int] | None = None):
    """Record (inode, thread) of every fsync; fail the first fsync of the inodes in ``fail_first``."""
    calls: list[tuple[int, int]] = []
    real = os.fsync
    failed: set[int] = set()

    def fsync(fd):
        ino = os.fstat(fd).st_ino
        calls.append((ino, threading.get_ident()))
        if fail_first and ino in fail_first and ino not in failed:
            failed.add(ino)
            raise OSError(5, "Input/output error")
        real(fd)

    monkeypatch.setattr(fsmod.os, "fsync", fsync)
    return calls


def test_finished_files_are_fsynced_during_the_download_and_once(tmp_path, monkeypatch):
    """Once the files handed over hold SYNC_AHEAD_BYTES, they are fsync'ed in other threads before close; close
    then syncs only the rest, and the record is written."""
    monkeypatch.setattr(fsmod, "settle_seconds", lambda: 0.0)  # fsync at once (settling: test_sync_settle.py)
    monkeypatch.setattr(_sync_ahead, "SYNC_AHEAD_BYTES", 64 << 10)
    monkeypatch.setattr(_sync_ahead, "SYNC_AHEAD_FILE_BYTES", 1 << 30)  # only finished files
    files = [([b"f%02d" % k], os.urandom(20000 + k)) for k in range(24)]
    meta, blob = make_meta(files)
    calls = _fsyncs(monkeypatch)
    st = FilesystemStorage(meta, str(tmp_path))
    write_in_order(st, meta, blob, range(meta.num_pieces), settle=True)  # files finish one after another
    inodes = {os.stat(tmp_path / "t" / p[0].decode()).st_ino for p, _ in files}
    before_close = [ino for ino, _ in calls if ino in inodes]
    assert len(before_close) >= len(inodes) - 4, "all but the last few synced during the download"
    assert threading.get_ident() not in {tid for _, tid in calls}
    st.close()
    ours = [ino for ino, _ in calls if ino in inodes]
    assert sorted(ours) == sorted(inodes), "each written file fsync'ed exactly once"
    assert FilesystemStorage(meta, str(tmp_path)).completed_pieces() == set(range(meta.num_pieces))


def test_a_big_file_is_fsynced_every_so_many_bytes_and_a_rewrite_is_synced_again(tmp_path, monkeypatch):
    monkeypatch.setattr(fsmod, "boot_id", lambda: None)  # a system that names no boot: close fsyncs
    monkeypatch.setattr(_sync_ahead, "SYNC_AHEAD_BYTES", 64 << 10)
    monkeypatch.setattr(_sync_ahead, "SYNC_AHEAD_FILE_BYTES", 64 << 10)
    meta, blob = make_meta([([b"big"], os.urandom(16384 * 40))])
    calls = _fsyncs(monkeypatch)
    st = FilesystemStorage(meta, str(tmp_path))
    write_in_order(st, meta, blob, range(meta.num_pieces), settle=True)
    ino = os.stat(tmp_path / "t" / "big").st_ino
    assert sum(1 for i, _ in calls if i == ino) == 10, "every 64 KiB written (640 KiB)"
    st.mark_incomplete(3)
    write_in_order(st, meta, blob, [3])  # a piece written again (lost, downloaded again): synced at close
    n = len(calls)
    st.close()
    assert any(i == ino for i, _ in calls[n:]), "the file written after its last sync is fsync'ed at close"
    assert FilesystemStorage(meta, str(tmp_path)).completed_pieces() == set(range(meta.num_pieces))


def test_a_failed_fsync_during_the_download_means_no_record(tmp_path, monkeypatch):
    """The file whose background fsync failed is not synced again at close (it was handed over), so only
    remembering the failure keeps the record from vouching for data that may not be on disk."""
    monkeypatch.setattr(fsmod, "settle_seconds", lambda: 0.0)  # fsync at once (settling: test_sync_settle.py)
    monkeypatch.setattr(_sync_ahead, "SYNC_AHEAD_BYTES", 64 << 10)
    monkeypatch.setattr(_sync_ahead, "SYNC_AHEAD_FILE_BYTES", 1 << 30)
    files = [([b"f%02d" % k], os.urandom(20000 + k)) for k in range(12)]
    meta, blob = make_meta(files)
    st = FilesystemStorage(meta, str(tmp_path))
    st.write(0, 0, blob[:16384])  # creates f00 (not finished yet)
    first = os.stat(tmp_path / "t" / "f00").st_ino
    calls = _fsyncs(monkeypatch, fail_first={first})
    write_in_order(st, meta, blob, range(meta.num_pieces), settle=True)
    assert [tid for ino, tid in calls if ino == first] and threading.get_ident() not in {t for _, t in calls}
    st.close()
    assert sum(1 for ino, _ in calls if ino == first) == 1, "handed over: not synced again at close"
    assert not os.path.exists(resume_path(str(tmp_path), meta)), "an fsync failed: no record"


def test_a_background_batch_duplicates_few_descriptors_and_still_syncs_every_file(tmp_path, monkeypatch):
    """Many small files finishing at once: only SYNC_AHEAD_DUPS descriptors are duplicated per batch (the
    others are opened again by path), and every file is fsync'ed once all the same."""
    monkeypatch.setattr(fsmod, "boot_id", lambda: None)  # a system that names no boot: close fsyncs
    monkeypatch.setattr(_sync_ahead, "SYNC_AHEAD_BYTES", 256 << 10)
    monkeypatch.setattr(_sync_ahead, "SYNC_AHEAD_FILE_BYTES", 1 << 30)
    monkeypatch.setattr(fsmod, "SYNC_AHEAD_DUPS", 2)
    files = [([b"f%02d" % k], os.urandom(9000 + k)) for k in range(40)]
    meta, blob = make_meta(files)
    dups: list[int] = []
    real_dup = os.dup

    def dup(fd):
        dups.append(fd)
        return real_dup(fd)

    monkeypatch.setattr(fsmod.os, "dup", dup)
    calls = _fsyncs(monkeypatch)
    st = FilesystemStorage(meta, str(tmp_path))
    batches = 0
    for i in range(meta.num_pieces):
        before = len(calls)
        write_in_order(st, meta, blob, [i], settle=True)
        batches += len(calls) > before
    assert batches >= 1 and len(dups) <= 2 * batches, (batches, len(dups))
    st.close()
    inodes = {os.stat(tmp_path / "t" / p[0].decode()).st_ino for p, _ in files}
    assert sorted(ino for ino, _ in calls if ino in inodes) == sorted(inodes)
    assert FilesystemStorage(meta, str(tmp_path)).completed_pieces() == set(range(meta.num_pieces))


def test_close_helps_a_running_background_batch_to_its_end(tmp_path, monkeypatch):
    """The batch's own thread is held in its first fsync until every other file of the batch was fsync'ed: only
    the threads wait() lends it can have done those (without them it would do all, 10 s later)."""
    paths = []
    for k in range(12):
        p = tmp_path / f"f{k}"
        p.write_bytes(b"x" * 100)
        paths.append(p)
    done: list[int] = []
    all_others = threading.Event()
    first_thread: list[int] = []
    real = os.fsync

    def fsync(fd):
        if not first_thread:
            first_thread.append(threading.get_ident())
            all_others.wait(10)  # bounded: a broken wait() only makes this test slow, then fail
        real(fd)
        done.append(threading.get_ident())
        if len(done) == len(paths) - 1 and not all_others.is_set():
            all_others.set()

    monkeypatch.setattr(_sync_ahead.os, "fsync", fsync)
    ahead = _sync_ahead.SyncAhead(lambda key: os.open(paths[key], os.O_RDONLY))
    ahead.start([(k, None) for k in range(len(paths))])
    assert ahead.wait(4)
    assert len(done) == len(paths)
    assert done.count(first_thread[0]) == 1, "the batch's thread synced only the file it was held in"


def _tree(k_files: int = 200):
    """swarm.py's tree: files in 21 folders ``d*/s*``, in path order (as libtorrent, qBittorrent and
    ``torrentcore create`` list them), so that the files of a folder come one after another."""
    files = [([b"d%d" % (k % 7), b"s%d" % (k % 3), b"f%03d" % k], os.urandom(3000 + 7 * k)) for k in range(k_files)]
    return sorted(files, key=lambda f: f[0])


def test_folders_are_walked_once_while_their_descriptors_are_kept(tmp_path, monkeypatch):
    """Opening a file walks its folders (an open and a close per component) only when the storage does not keep
    that folder's descriptor (plugins/_folders.py): swarm.py's tree of 200 files in 21 folders, written extent
    by extent, walks far fewer folders than it opens files, and its descriptors stay within the budget."""
    files = _tree()
    meta, blob = make_meta(files, piece_length=16384)
    walks: list[tuple] = []
    opens: list[str] = []
    real_walk, real_open_file = _folders.open_folder_under, FilesystemStorage._open_file

    def walk(root, parts, create):
        walks.append(tuple(parts))
        return real_walk(root, parts, create)

    def open_file(self, f, create):
        opens.append(f.relpath)
        return real_open_file(self, f, create)

    monkeypatch.setattr(_folders, "open_folder_under", walk)
    monkeypatch.setattr(FilesystemStorage, "_open_file", open_file)
    st = FilesystemStorage(meta, str(tmp_path))
    starts = list(range(0, meta.num_pieces, 3))
    random.Random(5).shuffle(starts)
    most = 0
    for s in starts:
        write_in_order(st, meta, blob, range(s, min(s + 3, meta.num_pieces)))
        most = max(most, len(st._fds) + len(st._folders))
    st.close()
    assert len(opens) >= len(files)
    assert len(set(walks)) == 21, "each of the 21 folders walked"
    # Two walks to create each folder (the first finds it missing), a few again once its descriptor was let go;
    # without kept folders every one of the 212 opens walked (here: 50 walks).
    assert len(walks) <= 3 * 21, (len(walks), len(opens))
    assert most <= fsmod.OPEN_FILES_BUDGET
    assert len(st._folders) == 0, "closed with the storage"
    for f, (_, data) in zip(meta.files, files):
        assert (tmp_path / f.relpath).read_bytes() == data


def test_a_kept_folder_deleted_and_made_again_by_another_program_is_walked_again(tmp_path, monkeypatch):
    """A folder whose descriptor the storage keeps, deleted (with its files) and created again behind its back:
    the next file opened there is looked up in the new folder, for writing and for reading, not reported missing
    from the deleted one."""
    monkeypatch.setattr(fsmod, "OPEN_FILES_BUDGET", 4)
    monkeypatch.setattr(fsmod, "MIN_OPEN_FILES", 4)
    files = [([b"sub", b"f%d" % k], os.urandom(16384)) for k in range(6)]
    meta, blob = make_meta(files, piece_length=16384)
    st = FilesystemStorage(meta, str(tmp_path))
    write_in_order(st, meta, blob, range(3))  # sub/f0..f2; "sub" kept open
    assert ("t", "sub") in st._folders._fds
    for fd in list(st._fds.values()):
        os.close(fd)
    st._fds.clear()
    for k in range(3):
        (tmp_path / "t" / "sub" / f"f{k}").unlink()
    (tmp_path / "t" / "sub").rmdir()
    (tmp_path / "t" / "sub").mkdir()
    write_in_order(st, meta, blob, range(3, 5))  # sub/f3, f4, in the new folder (not all: no final check)
    for k in range(3, 5):
        assert (tmp_path / "t" / "sub" / f"f{k}").read_bytes() == files[k][1]
    for fd in list(st._fds.values()):  # the files written last closed; their folder's descriptor kept
        os.close(fd)
    st._fds.clear()
    for k in range(3, 5):
        (tmp_path / "t" / "sub" / f"f{k}").unlink()
    (tmp_path / "t" / "sub").rmdir()
    (tmp_path / "t" / "sub").mkdir()
    (tmp_path / "t" / "sub" / "f0").write_bytes(files[0][1])  # put back by hand: readable through the storage
    assert st.read(0, 0, 16384) == files[0][1]
    assert ("t", "sub") in st._folders._fds, "the new folder kept in place of the deleted one"
    st.close()
