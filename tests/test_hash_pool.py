"""torrentcore.hash_pool: ``create``'s workers read and hash in parallel, in bounded memory, results in order.

The info-hashes themselves are checked against libtorrent in test_create.py and test_v2_metainfo.py; here
the jobs are made small so that pieces span files and jobs, and every thread count must give the same bytes.
"""

from __future__ import annotations

import hashlib
import os

import gevent
import gevent.monkey
import libtorrent as lt
import pytest
from realpeers import make_payload

from torrentcore import hash_pool
from torrentcore.create import create_torrent
from torrentcore.errors import BadInputError, TorrentcoreError

KiB = 1024
#: Pieces crossing file boundaries, files of less than a piece, empty files, a short last piece.
TREE = {"a.bin": 100_000, "b/c.bin": 5, "b/d.bin": 0, "b/e.bin": 300_001, "f.bin": 16 * KiB, "g.bin": 70_000}

get_ident = gevent.monkey.get_original("_thread", "get_ident")
real_sleep = gevent.monkey.get_original("time", "sleep")


def _pieces(path: str, count: int, size: int) -> list[hash_pool.Piece]:
    length = os.path.getsize(path)
    return [hash_pool.Piece((hash_pool.Segment(path, i * size, size, length),), size, i) for i in range(count)]


@pytest.mark.parametrize("kind", ["v1", "v2", "hybrid"])
def test_any_thread_count_gives_the_same_torrent(tmp_path, monkeypatch, kind):
    root = make_payload(tmp_path, TREE, seed=4)
    monkeypatch.setattr(hash_pool, "JOB_BYTES", 48 * KiB)  # 1-3 pieces per job: many jobs, out-of-order finishes
    made = {threads: create_torrent(root, [], piece_length=16 * KiB, kind=kind, threads=threads)[0]
            for threads in (1, 2, 5)}
    assert made[1] == made[2] == made[5]
    if kind == "hybrid":  # and it is still libtorrent's torrent
        ct = lt.create_torrent(lt.list_files(root), 16 * KiB)
        lt.set_piece_hashes(ct, str(tmp_path))
        theirs = lt.torrent_info(lt.bencode(ct.generate())).info_hashes()
        ours = lt.torrent_info(lt.bdecode(made[2])).info_hashes()
        assert ours.v1 == theirs.v1 and ours.v2 == theirs.v2


def test_workers_read_and_hash_at_the_same_time_off_the_hub_thread(tmp_path, monkeypatch):
    """Two workers must be inside ``digest`` at once (each waits, bounded, for the other), and the reads run
    in the workers too: if hashing or reading were serialised on one thread, this fails."""
    path = make_payload(tmp_path, 8 * 64 * KiB, seed=1)
    hub_thread = get_ident()
    readers: set[int] = set()
    real_preadv = os.preadv

    def recording_preadv(fd, buffers, offset):
        readers.add(get_ident())
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(hash_pool.os, "preadv", recording_preadv)
    monkeypatch.setattr(hash_pool, "JOB_BYTES", 64 * KiB)  # one piece per job
    arrived: list[int] = []

    def digest(piece, data):
        me = get_ident()
        if me not in arrived:
            arrived.append(me)
            for _ in range(2000):  # up to 20 s for the other worker to arrive
                if len(arrived) >= 2:
                    break
                real_sleep(0.01)
        return hashlib.sha1(data).digest()

    got = []
    hash_pool.hash_pieces(_pieces(path, 8, 64 * KiB), 64 * KiB, digest, lambda p, d: got.append((p.tag, d)), threads=2)
    assert len(set(arrived)) == 2 and hub_thread not in arrived
    assert readers and hub_thread not in readers
    with open(path, "rb") as fh:
        data = fh.read()
    assert got == [(i, hashlib.sha1(data[i * 64 * KiB : (i + 1) * 64 * KiB]).digest()) for i in range(8)]


@pytest.mark.parametrize("threads", [1, 3])
def test_buffers_in_flight_are_bounded(tmp_path, monkeypatch, threads):
    path = make_payload(tmp_path, 40 * 16 * KiB, seed=2)
    monkeypatch.setattr(hash_pool, "JOB_BYTES", 16 * KiB)
    allocated = []

    def counting_bytearray(size):
        allocated.append(size)
        return bytearray(size)

    monkeypatch.setattr(hash_pool, "bytearray", counting_bytearray, raising=False)
    done = []
    hash_pool.hash_pieces(_pieces(path, 40, 16 * KiB), 16 * KiB, lambda p, d: bytes(d[:1]),
                          lambda p, d: done.append(p.tag), threads=threads)
    assert done == list(range(40))
    assert 1 <= len(allocated) <= threads  # one buffer per worker, reused from job to job
    # Pieces so large that two would pass the memory bound: one buffer, one job at a time.
    allocated.clear()
    monkeypatch.setattr(hash_pool, "MEMORY", 32 * KiB)
    big = 4 * 16 * KiB
    hash_pool.hash_pieces(_pieces(path, 10, big), big, lambda p, d: b"", lambda p, d: None, threads=threads)
    assert allocated == [big]


def test_the_first_failing_piece_is_the_error_and_nothing_after_it_is_delivered(tmp_path, monkeypatch, capfd):
    path = make_payload(tmp_path, 10 * 16 * KiB, seed=3)
    monkeypatch.setattr(hash_pool, "JOB_BYTES", 16 * KiB)
    pieces = _pieces(path, 10, 16 * KiB)
    missing = str(tmp_path / "gone")
    pieces[4] = hash_pool.Piece((hash_pool.Segment(missing, 0, 16 * KiB, 16 * KiB),), 16 * KiB, 4)
    short = hash_pool.Segment(path, 9 * 16 * KiB, 32 * KiB, 11 * 16 * KiB)  # listed longer than it is
    pieces[7] = hash_pool.Piece((short,), 32 * KiB, 7)
    done = []
    with pytest.raises(BadInputError, match="cannot read .*gone: No such file"):
        hash_pool.hash_pieces(pieces, 32 * KiB, lambda p, d: b"", lambda p, d: done.append(p.tag), threads=3)
    assert done == [0, 1, 2, 3]
    del pieces[4]
    done.clear()
    with pytest.raises(TorrentcoreError, match="changed while hashing: it is shorter than its 180224 bytes"):
        hash_pool.hash_pieces(pieces, 32 * KiB, lambda p, d: b"", lambda p, d: done.append(p.tag), threads=3)
    assert done == [0, 1, 2, 3, 5, 6]
    gevent.sleep(0.05)  # bounded: anything the pool would print about a failed task is printed by now
    assert "Traceback" not in capfd.readouterr().err  # the error is raised here only, once


def test_a_failing_digest_is_raised_here_with_its_traceback(tmp_path, capfd):
    path = make_payload(tmp_path, 4 * 16 * KiB, seed=5)

    def broken(piece, data):
        if piece.tag == 2:
            raise ZeroDivisionError("a bug in digest")
        return b""

    with pytest.raises(ZeroDivisionError, match="a bug in digest") as info:
        hash_pool.hash_pieces(_pieces(path, 4, 16 * KiB), 16 * KiB, broken, lambda p, d: None, threads=2)
    assert any(entry.name == "broken" for entry in info.traceback)
    assert "Traceback" not in capfd.readouterr().err


def test_bad_thread_counts_are_refused(tmp_path):
    root = make_payload(tmp_path, 1000)
    for bad in (0, -1, True, 1.5):
        with pytest.raises(BadInputError, match="invalid number of threads"):
            create_torrent(root, [], threads=bad)
