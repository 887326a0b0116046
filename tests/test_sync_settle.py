"""Settling (plugins/_sync_ahead.py): where the resume record names the boot, a file handed to the background
fsync waits until the kernel has had the time to write it by itself, and close fsyncs the finished files that
have settled, so that the record still vouches for them. A fake clock, counts and contents only, no timing."""

from __future__ import annotations

import json
import os

from test_storage_filesystem import make_meta
from test_unsynced_at_close import _data_fsyncs

from torrentcore_plugins import _sync_ahead
from torrentcore_plugins import filesystem as fsmod
from torrentcore_plugins.filesystem import FilesystemStorage, resume_path


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _names(paths: list[str]) -> list[str]:
    return sorted(os.path.basename(p) for p in paths)


def test_settle_seconds_follow_the_kernels_writeback_settings(tmp_path, monkeypatch):
    expire, period = tmp_path / "expire", tmp_path / "period"
    monkeypatch.setattr(_sync_ahead, "DIRTY_EXPIRE_PATH", str(expire))
    monkeypatch.setattr(_sync_ahead, "DIRTY_WRITEBACK_PATH", str(period))
    assert _sync_ahead.settle_seconds() == 0.0, "settings not readable: fsync at once"
    expire.write_text("3000\n")
    period.write_text("500\n")
    assert _sync_ahead.settle_seconds() == 30 + 5 + _sync_ahead.SETTLE_MARGIN
    period.write_text("0\n")
    assert _sync_ahead.settle_seconds() == 0.0, "no periodic writeback: the kernel writes nothing by itself"
    period.write_text("500\n")
    expire.write_text("360000\n")
    assert _sync_ahead.settle_seconds() == _sync_ahead.SETTLE_MOST
    expire.write_text("soon\n")
    assert _sync_ahead.settle_seconds() == 0.0


def test_a_hand_over_joins_a_batch_only_once_it_has_settled(monkeypatch):
    monkeypatch.setattr(_sync_ahead, "SYNC_AHEAD_BYTES", 100)
    monkeypatch.setattr(_sync_ahead, "SYNC_AHEAD_FILE_BYTES", 1000)
    clock = Clock()
    ahead = _sync_ahead.SyncAhead(lambda key: None, settle=40.0, clock=clock)
    assert not ahead.note("a", 200, finished=True), "finished, but not settled: no batch yet"
    assert ahead.ready() == []
    clock.now += 39.9
    assert not ahead.note("b", 10, finished=False)
    clock.now += 0.1
    assert ahead.note("b", 10, finished=False), "a settled: the next write starts its batch"
    assert ahead.ready() == ["a"], "b is neither finished nor SYNC_AHEAD_FILE_BYTES written"
    ahead.start([])
    assert ahead.ready() == []


def test_close_takes_only_finished_files_that_have_settled(monkeypatch):
    monkeypatch.setattr(_sync_ahead, "SYNC_AHEAD_BYTES", 1 << 40)  # no batch: only close syncs
    monkeypatch.setattr(_sync_ahead, "SYNC_AHEAD_FILE_BYTES", 100)
    clock = Clock()
    ahead = _sync_ahead.SyncAhead(lambda key: None, settle=40.0, clock=clock)
    ahead.note("big", 150, finished=False)  # handed over for its bytes, still being written
    ahead.note("old", 50, finished=True)
    clock.now += 30
    ahead.note("new", 50, finished=True)
    clock.now += 10
    assert ahead.settled_finished() == ["old"], "big is not finished, new has not settled"
    assert ahead.settled_finished() == [], "taken once"


def _storage(monkeypatch, tmp_path, files):
    """A storage in boot "boot-a" whose background fsync settles 40 s by a fake clock."""
    monkeypatch.setattr(fsmod, "boot_id", lambda: "boot-a")
    monkeypatch.setattr(fsmod, "settle_seconds", lambda: 40.0)
    meta, blob = make_meta(files)
    st = FilesystemStorage(meta, str(tmp_path))
    clock = Clock()
    st._sync_ahead._clock = clock
    return meta, blob, st, clock


def _write(st, meta, blob, pieces):
    for i in pieces:
        start = i * meta.piece_length
        st.write(i, 0, blob[start : start + meta.piece_size(i)])
        st.mark_complete(i)


def test_no_fsync_during_a_short_download_and_close_waits_for_none(tmp_path, monkeypatch):
    monkeypatch.setattr(_sync_ahead, "SYNC_AHEAD_BYTES", 1)  # every hand-over would start a batch at once
    files = [([b"f%d" % k], os.urandom(16384 * 2)) for k in range(4)]
    synced = _data_fsyncs(monkeypatch, tmp_path)
    meta, blob, st, clock = _storage(monkeypatch, tmp_path, files)
    _write(st, meta, blob, range(meta.num_pieces))
    clock.now += 39
    st.close()
    assert synced == [], "nothing settled: no fsync, during the download or at close"
    with open(resume_path(str(tmp_path), meta)) as f:
        assert json.load(f)["unsynced"] == [0, 1, 2, 3]


def test_files_settled_during_the_download_are_synced_in_the_background_once(tmp_path, monkeypatch):
    monkeypatch.setattr(_sync_ahead, "SYNC_AHEAD_BYTES", 1)
    files = [([b"f%d" % k], os.urandom(16384 * 2)) for k in range(4)]
    synced = _data_fsyncs(monkeypatch, tmp_path)
    meta, blob, st, clock = _storage(monkeypatch, tmp_path, files)
    _write(st, meta, blob, range(4))  # f0, f1 finished
    clock.now += 40
    _write(st, meta, blob, [4])  # f2 half: this write finds f0 and f1 settled
    st._sync_ahead.wait()
    assert _names(synced) == ["f0", "f1"]
    _write(st, meta, blob, range(5, meta.num_pieces))
    st.close()
    assert _names(synced) == ["f0", "f1"], "f2 and f3 have not settled: close waits for no fsync"
    with open(resume_path(str(tmp_path), meta)) as f:
        assert json.load(f)["unsynced"] == [2, 3]


def test_close_syncs_the_finished_files_that_settled_since_the_last_write(tmp_path, monkeypatch):
    """A download that ended long before close (a seeding session): its last files settled with no write to
    start their batch; close fsyncs them, and the record vouches for every file."""
    monkeypatch.setattr(_sync_ahead, "SYNC_AHEAD_BYTES", 1 << 40)
    files = [([b"f%d" % k], os.urandom(16384 * 2)) for k in range(3)]
    synced = _data_fsyncs(monkeypatch, tmp_path)
    monkeypatch.setattr(fsmod.os, "fsync", _sync_ahead.os.fsync)  # close's own fsyncs counted too
    meta, blob, st, clock = _storage(monkeypatch, tmp_path, files)
    _write(st, meta, blob, range(meta.num_pieces))
    assert synced == []
    clock.now += 3600
    st.close()
    assert _names(synced) == ["f0", "f1", "f2"]
    with open(resume_path(str(tmp_path), meta)) as f:
        assert json.load(f)["unsynced"] == []
    assert FilesystemStorage(meta, str(tmp_path)).completed_pieces() == set(range(meta.num_pieces))


def test_a_failed_fsync_at_close_means_no_record(tmp_path, monkeypatch):
    monkeypatch.setattr(_sync_ahead, "SYNC_AHEAD_BYTES", 1 << 40)
    files = [([b"f%d" % k], os.urandom(16384 * 2)) for k in range(2)]
    real = os.fsync

    def failing(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("/f1"):
            raise OSError(5, "Input/output error")
        real(fd)

    monkeypatch.setattr(fsmod.os, "fsync", failing)
    meta, blob, st, clock = _storage(monkeypatch, tmp_path, files)
    _write(st, meta, blob, range(meta.num_pieces))
    clock.now += 3600
    st.close()
    assert not os.path.exists(resume_path(str(tmp_path), meta)), "f1's fsync failed: no record"
