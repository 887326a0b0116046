"""The filesystem storage backend: piece-to-file mapping, laziness, path safety, resume record."""

from __future__ import annotations

import hashlib
import os

import pytest

from torrentcore import bencode, metainfo
from torrentcore.errors import StorageError
from torrentcore_plugins.filesystem import FilesystemStorage, resume_path


def make_meta(files, piece_length=16384, name=b"t"):
    """A torrent for the given ``[(path_components, data), ...]`` with correct piece hashes."""
    blob = b"".join(data for _, data in files)
    pieces = b"".join(
        hashlib.sha1(blob[i : i + piece_length]).digest() for i in range(0, len(blob), piece_length)
    )
    info = {
        b"name": name,
        b"piece length": piece_length,
        b"pieces": pieces,
        b"files": [{b"length": len(d), b"path": p} for p, d in files],
    }
    return metainfo.parse(bencode.encode({b"info": info})), blob


def write_all(storage, meta, blob):
    for i in range(meta.num_pieces):
        start = i * meta.piece_length
        storage.write(i, 0, blob[start : start + meta.piece_size(i)])
        storage.mark_complete(i)


def test_pieces_span_files_and_zero_length_files_appear_at_completion(tmp_path):
    files = [([b"a"], os.urandom(10000)), ([b"sub", b"empty"], b""), ([b"sub", b"b"], os.urandom(30000))]
    meta, blob = make_meta(files)
    st = FilesystemStorage(meta, str(tmp_path))
    assert not (tmp_path / "t").exists(), "files must be created lazily"
    st.write(1, 0, blob[16384:32768])
    assert (tmp_path / "t" / "sub" / "b").exists() and not (tmp_path / "t" / "sub" / "empty").exists()
    write_all(st, meta, blob)
    st.close()
    assert (tmp_path / "t" / "a").read_bytes() == files[0][1]
    assert (tmp_path / "t" / "sub" / "empty").read_bytes() == b""
    assert (tmp_path / "t" / "sub" / "b").read_bytes() == files[2][1]
    st2 = FilesystemStorage(meta, str(tmp_path))
    assert st2.read(0, 9990, 20) == blob[9990:10010]
    assert st2.read(meta.num_pieces - 1, 0, meta.piece_size(meta.num_pieces - 1)) == blob[32768:]


def test_sparse_file_only_grows_where_written(tmp_path):
    meta, blob = make_meta([([b"big"], os.urandom(16384 * 64))])
    st = FilesystemStorage(meta, str(tmp_path))
    st.write(63, 0, blob[-16384:])
    st.close()
    stat = os.stat(tmp_path / "t" / "big")
    assert stat.st_size == len(blob)
    assert stat.st_blocks * 512 < len(blob) // 2, "the file should be sparse"
    assert list(FilesystemStorage(meta, str(tmp_path)).pieces_with_data()) == list(range(64))


def test_missing_data_reads_as_zeros(tmp_path):
    meta, _ = make_meta([([b"x"], os.urandom(5000))])
    assert FilesystemStorage(meta, str(tmp_path)).read(0, 0, 5000) == bytes(5000)


def test_refuses_to_write_through_a_symlinked_folder(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dl = tmp_path / "dl"
    (dl / "t").mkdir(parents=True)
    os.symlink(outside, dl / "t" / "sub")
    meta, blob = make_meta([([b"sub", b"f"], os.urandom(100))])
    st = FilesystemStorage(meta, str(dl))
    with pytest.raises(StorageError, match="outside"):
        st.write(0, 0, blob)
    assert list(outside.iterdir()) == []


def test_refuses_to_follow_a_symlink_at_the_file_path(tmp_path):
    target = tmp_path / "victim"
    target.write_bytes(b"precious")
    dl = tmp_path / "dl"
    (dl / "t").mkdir(parents=True)
    os.symlink(target, dl / "t" / "f")
    meta, blob = make_meta([([b"f"], os.urandom(100))])
    with pytest.raises(StorageError, match="symlink"):
        FilesystemStorage(meta, str(dl)).write(0, 0, blob)
    assert target.read_bytes() == b"precious"


def test_out_of_range_is_refused(tmp_path):
    meta, _ = make_meta([([b"x"], os.urandom(100))])
    with pytest.raises(StorageError):
        FilesystemStorage(meta, str(tmp_path)).read(0, 50, 100)


def test_resume_record_trusted_only_while_files_are_unchanged(tmp_path):
    meta, blob = make_meta([([b"a"], os.urandom(40000)), ([b"b"], os.urandom(9000))])
    st = FilesystemStorage(meta, str(tmp_path))
    assert st.completed_pieces() is None
    st.write(0, 0, blob[:16384])
    st.mark_complete(0)
    st.close()
    assert os.path.exists(resume_path(str(tmp_path), meta))
    assert FilesystemStorage(meta, str(tmp_path)).completed_pieces() == {0}
    # Touch a file (a write by anyone): the record is stale.
    with open(tmp_path / "t" / "a", "r+b") as fh:
        fh.seek(20000)
        fh.write(b"x")
    assert FilesystemStorage(meta, str(tmp_path)).completed_pieces() is None
    # A damaged record is ignored, never an error.
    with open(resume_path(str(tmp_path), meta), "wb") as fh:
        fh.write(b"d7:versioni1e4:junk")
    assert FilesystemStorage(meta, str(tmp_path)).completed_pieces() is None


def test_pad_files_are_never_written(tmp_path):
    info = {
        b"name": b"t",
        b"piece length": 16384,
        b"files": [
            {b"length": 100, b"path": [b"a"]},
            {b"length": 16284, b"path": [b".pad", b"16284"], b"attr": b"p"},
            {b"length": 50, b"path": [b"b"]},
        ],
    }
    data_a, data_b = os.urandom(100), os.urandom(50)
    stream = data_a + bytes(16284) + data_b
    info[b"pieces"] = hashlib.sha1(stream[:16384]).digest() + hashlib.sha1(stream[16384:]).digest()
    meta = metainfo.parse(bencode.encode({b"info": info}))
    st = FilesystemStorage(meta, str(tmp_path))
    write_all(st, meta, stream)
    st.close()
    assert sorted(os.listdir(tmp_path / "t")) == ["a", "b"]
    assert st.read(0, 0, 16384) == stream[:16384]


def test_a_link_planted_above_a_deep_file_creates_nothing_beyond_it(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dl = tmp_path / "dl"
    dl.mkdir()
    os.symlink(outside, dl / "t")  # the torrent's own folder is a link to elsewhere
    meta, blob = make_meta([([b"a", b"b", b"c"], os.urandom(100))])
    with pytest.raises(StorageError, match="t is a symlink"):
        FilesystemStorage(meta, str(dl)).write(0, 0, blob)
    assert list(outside.iterdir()) == []  # one makedirs would have made outside/a/b before any check


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_something_else_than_a_file_at_a_files_path_is_refused_in_one_line(tmp_path, kind):
    dl = tmp_path / "dl"
    (dl / "t").mkdir(parents=True)
    os.mkfifo(dl / "t" / "f") if kind == "fifo" else (dl / "t" / "f").mkdir()
    meta, blob = make_meta([([b"f"], os.urandom(100))])
    st = FilesystemStorage(meta, str(dl))
    for attempt in (lambda: st.write(0, 0, blob), lambda: st.read(0, 0, 100)):  # neither blocks on the FIFO
        with pytest.raises(StorageError, match="not a regular file"):
            attempt()


@pytest.mark.parametrize(("pieces", "hashed"), [(16, 2), (80, 8)])
def test_a_resume_record_is_sampled_at_most_one_piece_in_eight(tmp_path, monkeypatch, pieces, hashed):
    """The first and the last claimed piece always, more only when there are many (RESUME_SAMPLE_ONE_IN)."""
    from torrentcore_plugins import _resume_record

    meta, blob = make_meta([([b"a"], os.urandom(pieces * 16384))])
    st = FilesystemStorage(meta, str(tmp_path))
    write_all(st, meta, blob)
    st.close()
    checked: list[int] = []
    real = type(meta).piece_ok
    monkeypatch.setattr(type(meta), "piece_ok", lambda self, i, data: checked.append(i) or real(self, i, data))
    assert FilesystemStorage(meta, str(tmp_path)).completed_pieces() == set(range(pieces))
    assert len(checked) == hashed == min(_resume_record.RESUME_SAMPLE, pieces // _resume_record.RESUME_SAMPLE_ONE_IN)
    assert {0, pieces - 1} <= set(checked)
    # The first piece damaged (same size, same time): the record is refused.
    path = tmp_path / "t" / "a"
    st_before = os.stat(path)
    with open(path, "r+b") as fh:
        fh.write(b"\0" * 16)
    os.utime(path, ns=(st_before.st_atime_ns, st_before.st_mtime_ns))
    assert FilesystemStorage(meta, str(tmp_path)).completed_pieces() is None


def test_close_fsyncs_every_written_file_in_os_threads_and_a_failed_one_means_no_record(tmp_path, monkeypatch):
    """Closing fsyncs each file written (several at once, in OS threads: SYNC_THREADS), files whose
    descriptor was closed meanwhile too; if one fsync fails no resume record vouches for the data."""
    import _thread

    from torrentcore_plugins import filesystem as fsmod

    monkeypatch.setattr(fsmod, "boot_id", lambda: None)  # a system that names no boot: close fsyncs
    monkeypatch.setattr(fsmod, "OPEN_FILES_BUDGET", 4)  # most files are no longer open at close: synced by path
    files = [([b"f%02d" % k], os.urandom(5000 + k)) for k in range(20)]
    meta, blob = make_meta(files)
    synced: list[tuple[int, int]] = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append((os.fstat(fd).st_ino, _thread.get_ident()))
        real_fsync(fd)

    monkeypatch.setattr(fsmod.os, "fsync", fsync)
    st = FilesystemStorage(meta, str(tmp_path))
    write_all(st, meta, blob)
    st.close()
    inodes = {os.stat(tmp_path / "t" / p[0].decode()).st_ino for p, _ in files}
    ours = [(ino, tid) for ino, tid in synced if ino in inodes]  # (the resume record is fsynced too)
    assert sorted(ino for ino, _ in ours) == sorted(inodes), "each written file once"
    assert len({tid for _, tid in ours}) > 1 and _thread.get_ident() not in {tid for _, tid in ours}
    assert FilesystemStorage(meta, str(tmp_path)).completed_pieces() == set(range(meta.num_pieces))

    calls = []

    def failing(fd):
        calls.append(fd)
        if len(calls) == 7:
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(fsmod.os, "fsync", failing)
    st = FilesystemStorage(meta, str(tmp_path))
    write_all(st, meta, blob)
    st.close()
    assert len(calls) == len(files)
    assert not os.path.exists(resume_path(str(tmp_path), meta)), "an fsync failed: no record"
