"""The streaming reader (``torrentcore.reader``) on the real engine.

The proof is against a rate-limited libtorrent seeder: a reader that seeks to 60 % of a file still
downloading gets the right bytes while most of the file has not arrived (the read-ahead window is urgent for
the engine). The other tests run the engine without any network: io semantics on data already verified
(which must come from storage, not peers), file selection by opening, time-outs and stopping.

Every wait is bounded; nothing asserts how long something took.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import gevent
import pytest
from realpeers import make_payload, make_torrent, peers_fixture, wait_until  # noqa: F401  (fixture "peers")

from torrentcore import metainfo
from torrentcore.config import SessionConfig, TorrentConfig
from torrentcore.reader import ReaderSource, TorrentFile, TorrentStoppedError
from torrentcore.reader_source import TorrentReaderSource, open_reader, source_for
from torrentcore.session import Session
from torrentcore.torrent import Torrent

KiB = 1024
MiB = 1024 * KiB
#: Upload rate of the libtorrent seeder: the film takes about 25 s in all, a 1 MiB read about a second.
SEED_RATE = 1_000_000
#: Bound of every wait for data in these tests (seconds).
BOUND = 60


def _torrent(meta, save_path: Path, storage: str = "filesystem", **options) -> Torrent:
    """An engine torrent in a session of its own, paused until :func:`_start` (no listening port is used)."""
    session = Session(SessionConfig(listen_port=0, listen_hosts=("127.0.0.1",), dht=False))
    config = TorrentConfig(seed=not options.pop("no_seed", True), max_peers=10, storage=storage, paused=True,
                           peers=tuple(options.pop("peers", ())),
                           selected_files=tuple(options.pop("selected_files")) if "selected_files" in options else None,
                           **options)
    torrent = session.add_torrent(meta, str(save_path), config).torrent
    _sessions[torrent] = session
    return torrent


_sessions: dict = {}


def _start(torrent: Torrent) -> gevent.Greenlet:
    """Let the engine run; wait (bounded) for the data check."""
    torrent.resume()
    runner = torrent._main_greenlet
    assert wait_until(lambda: torrent.state not in ("checking", "paused", "queued") or runner.ready(), BOUND), \
        torrent.state
    return runner


def _stop(torrent: Torrent, runner: gevent.Greenlet) -> None:
    torrent.stop()
    runner.join(timeout=BOUND)
    assert runner.ready(), "the engine did not stop"
    _sessions.pop(torrent).close()


def _file_index(meta: metainfo.Metainfo, name: str) -> int:
    return next(i for i, f in enumerate(meta.data_files) if f.path[-1] == name)


def _pieces_of(meta: metainfo.Metainfo, file_index: int, pos: int, length: int) -> set[int]:
    f = meta.data_files[file_index]
    start = f.offset + pos
    return set(range(start // meta.piece_length, (start + length - 1) // meta.piece_length + 1))


# --------------------------------------------------------------------------------------------------
# Against libtorrent
# --------------------------------------------------------------------------------------------------


def test_seek_to_60_percent_of_a_film_still_downloading(tmp_path, peers):
    """Open an unselected film, seek to 60 %, read 1 MiB: the right bytes, while most pieces are missing."""
    tree = {"notes.txt": 300 * KiB, "film.bin": 24 * MiB + 12345}
    root = make_payload(tmp_path / "seed", tree, seed=11)
    torrent_path = tmp_path / "t.torrent"
    make_torrent(root, [], piece_length=256 * KiB, out=torrent_path)
    film = Path(root, "film.bin").read_bytes()
    seeder = peers.libtorrent("seeder", ignore_limits_on_local_network=False, upload_rate_limit=SEED_RATE)
    seeder.add_torrent(torrent_path, tmp_path / "seed", seed=True)

    meta = metainfo.load(str(torrent_path))
    notes, film_index = (_file_index(meta, name) for name in ("notes.txt", "film.bin"))
    t = _torrent(meta, tmp_path / "out", peers=[seeder.endpoint], selected_files=[notes])
    source = TorrentReaderSource(t)
    assert isinstance(source, ReaderSource)
    # Opened before the engine runs (its piece manager is replaced after the data check: the window moves over).
    reader = source.open(film_index, readahead=1 * MiB, timeout=BOUND)
    assert isinstance(reader, TorrentFile) and isinstance(reader, io.BufferedIOBase)
    assert reader.length == len(film)
    assert t.selected_files == sorted([notes, film_index]), "opening an unselected file selects it"
    runner = _start(t)
    try:
        pos = reader.seek(reader.length * 6 // 10)
        data = reader.read(1 * MiB)
        verified = set(t.have.indices())  # at the moment the read returned
        assert data == film[pos : pos + MiB]
        assert reader.tell() == pos + MiB
        under = _pieces_of(meta, film_index, pos, MiB)
        assert under <= verified, sorted(under - verified)
        assert len(verified) < 0.3 * meta.num_pieces, f"{len(verified)} of {meta.num_pieces} pieces verified"

        # Two more readers at once, each with its own window, read while the download goes on.
        def read_at(fraction: float, size: int) -> tuple[int, bytes]:
            with source.open(film_index, readahead=512 * KiB, timeout=BOUND) as r:
                at = r.seek(int(r.length * fraction))
                return at, r.read(size)

        jobs = [gevent.spawn(read_at, 0.2, 300 * KiB), gevent.spawn(read_at, 0.9, 300 * KiB)]
        gevent.joinall(jobs, timeout=BOUND)
        for job in jobs:
            assert job.successful(), job.exception
            at, got = job.value
            assert got == film[at : at + 300 * KiB]
        assert not t.have.complete, "the readers were served before the rest of the film arrived"
        reader.close()
        assert t.manager.urgent == [], "every reader closed: no urgent window is left"

        # The seeder pauses: a read of a missing piece waits, and raises when the torrent stops.
        seeder.pause()
        assert wait_until(lambda: not t.peers, BOUND), "libtorrent disconnects when paused"
        film_pieces = _pieces_of(meta, film_index, 0, len(film))
        missing = max(i for i in film_pieces - {min(film_pieces), max(film_pieces)} if not t.have[i])
        waiting = source.open(film_index, timeout=None)
        waiting.seek(missing * meta.piece_length - meta.data_files[film_index].offset)
        job = gevent.spawn(waiting.read, 1000)
        gevent.sleep(0.2)
        t.stop()
        job.join(timeout=BOUND)
        assert job.ready(), "a read waiting for a stopped torrent must not hang"
        assert isinstance(job.exception, TorrentStoppedError), (job.exception, job.value)
    finally:
        _stop(t, runner)


# --------------------------------------------------------------------------------------------------
# No network
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def complete_torrent(tmp_path):
    """A running engine (seeding, no peers, not listening) whose data is all on disk and verified."""
    tree = {"a.bin": 200 * KiB + 7, "lines.txt": 0, "b.bin": 100 * KiB}
    root = make_payload(tmp_path / "data", tree, seed=3)
    Path(root, "lines.txt").write_bytes(b"".join(b"line %d\n" % i for i in range(5000)))
    torrent_path = tmp_path / "t.torrent"
    make_torrent(root, [], piece_length=16 * KiB, out=torrent_path)
    meta = metainfo.load(str(torrent_path))
    t = _torrent(meta, tmp_path / "data", no_seed=False)
    runner = _start(t)
    assert t.have.complete and t.state == "seeding"
    try:
        yield t, root
    finally:
        _stop(t, runner)


def test_verified_data_comes_from_storage_with_io_semantics(complete_torrent):
    t, root = complete_torrent
    # handle.open's way in: open_reader on the engine's torrent (one shared ReaderSource per torrent).
    files = {name: _file_index(t.meta, name) for name in ("a.bin", "lines.txt", "b.bin")}
    expected = Path(root, "a.bin").read_bytes()
    with open_reader(t, files["a.bin"], timeout=5) as f:
        assert f.readable() and f.seekable() and not f.writable() and f.mode == "rb"
        assert f.name.endswith("a.bin") and f.length == len(expected)
        assert f.read(10) == expected[:10] and f.tell() == 10
        assert f.seek(100) == 100 and f.read(5) == expected[100:105]
        assert f.seek(-3, os.SEEK_CUR) == 102 and f.read(3) == expected[102:105]
        assert f.seek(-7, os.SEEK_END) == len(expected) - 7 and f.read() == expected[-7:]
        assert f.read() == b"" and f.read(10) == b"", "at the end: b''"
        assert f.seek(len(expected) + 1000) == len(expected) + 1000, "seeking past the end is allowed"
        assert f.read(1) == b"" and f.tell() == len(expected) + 1000
        with pytest.raises(ValueError):
            f.seek(-1)
        with pytest.raises(ValueError):
            f.seek(0, 3)
        f.seek(0)
        assert f.read() == expected, "a read across many pieces"
        f.seek(16 * KiB - 4)
        buf = bytearray(8)
        assert f.readinto(buf) == 8 and bytes(buf) == expected[16 * KiB - 4 : 16 * KiB + 4]
        assert f.peek(1)[:1] == expected[16 * KiB + 4 : 16 * KiB + 5]
        assert f.raw.window() == [], "everything under the window is verified: nothing urgent"
    assert f.closed
    with pytest.raises(ValueError):
        f.read(1)
    with open_reader(t, files["lines.txt"]) as f:
        lines = f.readlines()
        assert lines == Path(root, "lines.txt").read_bytes().splitlines(keepends=True)
        f.seek(0)
        assert next(iter(f)) == b"line 0\n"
    with open_reader(t, files["b.bin"]) as f:
        assert f.read() == Path(root, "b.bin").read_bytes()
    assert t.stats.downloaded == 0 and not t.peers and not t.manager.partial, "verified data never touches the network"
    assert t.manager.urgent == []
    assert source_for(t) is source_for(t), "one source per torrent"
    with pytest.raises(IndexError):
        open_reader(t, len(t.meta.data_files))


def test_opening_an_unselected_file_selects_it_and_reads_wait_bounded(tmp_path):
    tree = {"one.bin": 64 * KiB, "two.bin": 64 * KiB + 1, "three.bin": 20 * KiB}
    root = make_payload(tmp_path / "seed", tree, seed=5)
    torrent_path = tmp_path / "t.torrent"
    make_torrent(root, [], piece_length=16 * KiB, out=torrent_path)
    meta = metainfo.load(str(torrent_path))
    one, two = _file_index(meta, "one.bin"), _file_index(meta, "two.bin")
    plen, entry = meta.piece_length, meta.data_files[two]
    # On disk: the first 40 KiB of two.bin, zeros after; no peer, so nothing more will ever arrive.
    real = Path(root, "two.bin").read_bytes()
    on_disk = tmp_path / "out" / entry.relpath
    on_disk.parent.mkdir(parents=True)
    on_disk.write_bytes(real[: 40 * KiB] + bytes(len(real) - 40 * KiB))
    good = [p for p in range(meta.num_pieces) if p * plen >= entry.offset and (p + 1) * plen <= entry.offset + 40 * KiB]
    assert good
    t = _torrent(meta, tmp_path / "out", selected_files=[one])
    runner = _start(t)
    try:
        assert all(t.have[p] for p in good), "the check found the pieces on disk"
        source = TorrentReaderSource(t)
        pieces = _pieces_of(meta, two, 0, entry.length)
        assert not any(t.manager.wanted(i) for i in pieces - _pieces_of(meta, one, 0, 64 * KiB))
        f = source.open(two, readahead=32 * KiB, timeout=0.3)
        assert t.selected_files == sorted([one, two]), "opening an unselected file selects it"
        assert all(t.manager.wanted(i) for i in pieces if not t.have[i])
        assert t.snapshot().selected_files == 2 and t.snapshot().wanted_bytes >= 128 * KiB
        window = [i for i in sorted(_pieces_of(meta, two, 0, 32 * KiB)) if not t.have[i]]
        assert f.raw.window() == window and t.manager.urgent == window, "the window is urgent from the open"

        # A read that gets the verified pieces and then times out on the next one: the position stays put.
        start, end = good[0] * plen - entry.offset, (good[-1] + 1) * plen - entry.offset
        f.seek(start)
        with pytest.raises(TimeoutError):
            f.read(end - start + 100)
        assert f.tell() == start, "a failed read leaves the position where it was"
        assert f.read(end - start) == real[start:end], "the verified part, from storage"
        assert f.raw.window()[0] == good[-1] + 1, "the window follows the position"
        assert t.stats.downloaded == 0 and not t.peers

        f.timeout = None
        job = gevent.spawn(f.read, 100)
        gevent.sleep(0.3)
        assert not job.ready()
        source.detach()  # the torrent is removed while a read waits
        job.join(timeout=BOUND)
        assert isinstance(job.exception, TorrentStoppedError), job.exception
        f.close()
        assert t.manager.urgent == [], "closing the reader drops its window"
    finally:
        _stop(t, runner)
    with pytest.raises(TorrentStoppedError):
        TorrentReaderSource(t).wait_verified(min(pieces - set(good)), timeout=None)
