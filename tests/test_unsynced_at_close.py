"""Closing without waiting for the disk (plugins/_boot.py): the resume record names the boot and the files not
fsync-ed yet; in the same boot they are trusted as the page cache holds them, after a new boot their pieces are
hashed first and the lost ones dropped. Counts and contents only, no timing."""

from __future__ import annotations

import json
import os

import pytest
from test_storage_filesystem import make_meta, write_all

from torrentcore_plugins import _boot, _sync_ahead
from torrentcore_plugins import filesystem as fsmod
from torrentcore_plugins.filesystem import FilesystemStorage, resume_path


def _data_fsyncs(monkeypatch, folder) -> list[str]:
    """Record the paths of the data files (under ``folder``) that are fsync'ed from now on."""
    seen: list[str] = []
    real = os.fsync

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if path.startswith(str(folder)):
            seen.append(path)
        real(fd)

    monkeypatch.setattr(_sync_ahead.os, "fsync", fsync)
    return seen


def _boot_is(monkeypatch, value):
    monkeypatch.setattr(fsmod, "boot_id", lambda: value)


def _corrupt(path, offset: int) -> None:
    """Change one byte in place, keeping the file's size and times (as a lost page read back from disk would)."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_this_system_names_its_boot():
    if not os.path.exists(_boot.BOOT_ID_PATH):
        pytest.skip("no boot id on this system")
    assert isinstance(_boot.boot_id(), str) and len(_boot.boot_id()) >= 8


def test_close_waits_for_no_fsync_and_the_same_boot_trusts_the_record(tmp_path, monkeypatch):
    monkeypatch.setattr(_sync_ahead, "SYNC_AHEAD_BYTES", 1 << 40)  # no background batch: nothing synced at all
    _boot_is(monkeypatch, "boot-a")
    files = [([b"f%d" % k], os.urandom(40000 + k)) for k in range(3)]
    meta, blob = make_meta(files)
    synced = _data_fsyncs(monkeypatch, tmp_path)
    monkeypatch.setattr(fsmod.os, "fsync", _sync_ahead.os.fsync)
    st = FilesystemStorage(meta, str(tmp_path))
    write_all(st, meta, blob)
    st.close()
    assert synced == [], "close waited for the disk"
    with open(resume_path(str(tmp_path), meta)) as f:
        record = json.load(f)
    assert record["version"] == 3 and record["boot"] == "boot-a" and record["unsynced"] == [0, 1, 2]
    again = FilesystemStorage(meta, str(tmp_path))
    assert again.completed_pieces() == set(range(meta.num_pieces))
    again.close()  # nothing written in this run: the files are still not known to be on the disk
    with open(resume_path(str(tmp_path), meta)) as f:
        assert json.load(f)["unsynced"] == [0, 1, 2], "carried over to the next record"


def test_after_a_new_boot_the_unsynced_files_are_hashed_and_lost_pieces_dropped(tmp_path, monkeypatch):
    """f0 is synced in the background during the download, f1 is not: after a new boot only f1's pieces are
    hashed, and its piece whose bytes did not survive is no longer claimed."""
    monkeypatch.setattr(fsmod, "settle_seconds", lambda: 0.0)  # fsync at once (settling: test_sync_settle.py)
    monkeypatch.setattr(_sync_ahead, "SYNC_AHEAD_BYTES", 1)
    monkeypatch.setattr(_sync_ahead, "SYNC_AHEAD_FILE_BYTES", 1 << 30)
    _boot_is(monkeypatch, "boot-a")
    files = [([b"f0"], os.urandom(16384 * 8)), ([b"f1"], os.urandom(16384 * 12))]
    meta, blob = make_meta(files)
    st = FilesystemStorage(meta, str(tmp_path))
    for i in range(8):  # f0 whole: handed over, and synced before f1 is written
        st.write(i, 0, blob[i * 16384 : (i + 1) * 16384])
        st.mark_complete(i)
    st._sync_ahead.wait()
    monkeypatch.setattr(_sync_ahead, "SYNC_AHEAD_BYTES", 1 << 40)  # f1: never handed over
    for i in range(8, meta.num_pieces):
        st.write(i, 0, blob[i * 16384 : (i + 1) * 16384])
        st.mark_complete(i)
    st.close()
    with open(resume_path(str(tmp_path), meta)) as f:
        assert json.load(f)["unsynced"] == [1]
    _corrupt(tmp_path / "t" / "f1", 5 * 16384 + 7)  # piece 13 (f1 starts at piece 8)
    _corrupt(tmp_path / "t" / "f0", 3 * 16384 + 1)  # piece 3: synced, so trusted without hashing
    assert FilesystemStorage(meta, str(tmp_path)).completed_pieces() == set(range(meta.num_pieces)), \
        "the same boot trusts the record (the sample hashes only the first and the last piece)"

    checked: list[int] = []
    real_ok = meta.piece_ok
    monkeypatch.setattr(meta, "piece_ok", lambda i, data: checked.append(i) or real_ok(i, data))
    _boot_is(monkeypatch, "boot-b")
    claimed = FilesystemStorage(meta, str(tmp_path)).completed_pieces()
    assert claimed == set(range(meta.num_pieces)) - {13}
    assert set(range(8, 20)) <= set(checked) <= set(range(8, 20)) | {0}, "f1's pieces (and the sample's first)"


def _one_file_record(tmp_path, monkeypatch, change):
    """Download a one-file torrent in boot "boot-a", then ``change(record)`` in its resume record on disk."""
    _boot_is(monkeypatch, "boot-a")
    meta, blob = make_meta([([b"a"], os.urandom(50000))])
    st = FilesystemStorage(meta, str(tmp_path))
    write_all(st, meta, blob)
    st.close()
    path = resume_path(str(tmp_path), meta)
    with open(path) as f:
        record = json.load(f)
    change(record)
    with open(path, "w") as f:
        json.dump(record, f)
    return meta


def test_a_version_2_record_is_still_trusted(tmp_path, monkeypatch):
    """Records of earlier versions were written after every file was fsync'ed: only the sample is hashed."""

    def to_version_2(record):
        record["version"] = 2
        del record["boot"], record["unsynced"]

    meta = _one_file_record(tmp_path, monkeypatch, to_version_2)
    checked: list[int] = []
    real_ok = meta.piece_ok
    monkeypatch.setattr(meta, "piece_ok", lambda i, data: checked.append(i) or real_ok(i, data))
    _boot_is(monkeypatch, "boot-b")
    assert FilesystemStorage(meta, str(tmp_path)).completed_pieces() == set(range(meta.num_pieces))
    assert sorted(checked) == [0, meta.num_pieces - 1], "the sample only (the first and the last piece)"


@pytest.mark.parametrize("field, value", [("unsynced", [5]), ("unsynced", "0"), ("unsynced", [True]),
                                          ("boot", 7)])
def test_a_record_with_a_malformed_unsynced_list_is_ignored(tmp_path, monkeypatch, field, value):
    meta = _one_file_record(tmp_path, monkeypatch, lambda record: record.__setitem__(field, value))
    assert FilesystemStorage(meta, str(tmp_path)).completed_pieces() is None


def test_a_failed_background_fsync_means_no_record_even_without_waiting(tmp_path, monkeypatch):
    monkeypatch.setattr(fsmod, "settle_seconds", lambda: 0.0)  # fsync at once (settling: test_sync_settle.py)
    monkeypatch.setattr(_sync_ahead, "SYNC_AHEAD_BYTES", 1)
    _boot_is(monkeypatch, "boot-a")
    meta, blob = make_meta([([b"f%d" % k], os.urandom(20000)) for k in range(3)])
    real = os.fsync
    failed: list[int] = []

    def failing(fd):  # the data files' fsyncs fail; the record's own (in the state folder) would succeed
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path)):
            failed.append(fd)
            raise OSError(5, "Input/output error")
        real(fd)

    monkeypatch.setattr(_sync_ahead.os, "fsync", failing)
    st = FilesystemStorage(meta, str(tmp_path))
    for i in range(meta.num_pieces):
        st.write(i, 0, blob[i * meta.piece_length : i * meta.piece_length + meta.piece_size(i)])
        st.mark_complete(i)
        st._sync_ahead.wait()
    st.close()
    assert failed, "the background batch fsync-ed a data file during the download"
    assert not os.path.exists(resume_path(str(tmp_path), meta)), "an fsync failed: no record"
