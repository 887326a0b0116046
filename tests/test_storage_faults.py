"""Storage faults under ``torrentcore run``: a read-only download folder, files deleted or truncated while
the download runs.

Each fault must give one clear line on stderr, a non-zero exit code and no traceback; a restart on the same
folder must keep every piece still on disk (it is re-hashed, not downloaded again), never trust a piece
that is no longer there, and end with files byte for byte equal to the payload. Real libtorrent seeders
on 127.0.0.1, rate-limited so that the download lasts the few seconds the fault needs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import mounted_tmpfs
from realpeers import (
    RealPeers,
    assert_same_tree,
    make_payload,
    make_torrent,
    peers_fixture,  # noqa: F401  (fixture "peers")
    wait_until,
)
from torrentcore_cli import TorrentcoreProcess, resume_record, torrentcore_factory  # noqa: F401  (fixture "torrentcore")

from torrentcore import metainfo
from torrentcore_plugins.filesystem import resume_path

PIECE_LENGTH = 64 * 1024
SIZE = 8 << 20
#: The seeder's upload cap while the fault is injected (bytes/s): the download takes about 4 s.
SLOW = 2_000_000
#: The seeder's rate while a test changes the files under the download (bytes/s): slowed to it as soon as the
#: test's moment comes, so that the download cannot finish before the change (at SLOW the rest took ~2 s, and a
#: loaded machine once let the test see its moment only after the last block had been sent).
TRICKLE = 16_000
RUN_TIMEOUT = 40


def _seeder(peers: RealPeers, torrent: Path, data: Path, limit: int = SLOW):
    seeder = peers.libtorrent("seeder", ignore_limits_on_local_network=False, upload_rate_limit=limit)
    seeder.add_torrent(torrent, data, seed=True)
    return seeder


def _uploaded(seeder) -> int:
    return sum(t["uploaded"] for t in seeder.transfers() if t["pid"].startswith(b"-TC"))


def _moment(seeder, run, reached):
    """A ``wait_until`` predicate: true once ``reached()`` is (the seeder then slows to TRICKLE at once) or the
    run ended. Check afterwards that the seeder had blocks left to send (:func:`_resume_seeder`)."""
    def ready() -> bool:
        if run.returncode is not None:
            return True
        if reached():
            seeder.session.apply_settings({"upload_rate_limit": TRICKLE})
            return True
        return False
    return ready


def _resume_seeder(seeder, run) -> None:
    """The files were changed: the seeder sends the rest at SLOW again (it had some left: the download is still
    running, so a write comes after the change)."""
    assert _uploaded(seeder) < SIZE and run.returncode is None, run.describe()
    seeder.session.apply_settings({"upload_rate_limit": SLOW})


def _error_lines(run: TorrentcoreProcess) -> list[str]:
    """stderr lines that are not JSON logs (the user-facing error lines)."""
    return [ln for ln in run.stderr.splitlines() if ln.strip() and not ln.startswith("{")]


def _assert_one_error(run: TorrentcoreProcess, rc: int | None, *needles: str) -> str:
    context = run.describe()
    assert rc == 1, context
    assert "Traceback" not in run.stderr, context
    lines = _error_lines(run)
    assert len(lines) == 1 and lines[0].startswith("torrentcore: error: "), context
    assert all(n in lines[0] for n in needles), context
    return lines[0]


def _finish(run: TorrentcoreProcess, root: Path, target: Path) -> dict:
    rc = run.wait(RUN_TIMEOUT)
    assert rc == 0, run.describe()
    assert "Traceback" not in run.stderr, run.describe()
    assert_same_tree(root, target, run.describe())
    summary = run.summary()
    assert summary is not None and summary["verdict"] == "done", run.describe()
    return summary


# -- read-only download folder ---------------------------------------------------------------------


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A read-only tmpfs (root ignores permission bits, so ``chmod`` would prove nothing); skipped where
    mounting is not allowed."""
    with mounted_tmpfs(tmp_path / "ro", "ro,size=1m") as mnt:
        yield mnt


def test_read_only_download_folder(tmp_path, peers, torrentcore, read_only_dir):
    root = make_payload(tmp_path / "seed", 1 << 20, seed=5, name="ro.bin")
    torrent = tmp_path / "ro.torrent"
    make_torrent(root, [], piece_length=PIECE_LENGTH, out=torrent)
    seeder = _seeder(peers, torrent, tmp_path / "seed", limit=0)

    # The folder exists but nothing can be written in it: the first piece fails to be stored.
    run = torrentcore.run(torrent, read_only_dir, peers=[seeder.endpoint])
    _assert_one_error(run, run.wait(RUN_TIMEOUT), f"cannot open {read_only_dir}/ro.bin", "Read-only file system")
    # A folder to create inside it: refused before any network activity.
    run = torrentcore.run(torrent, read_only_dir / "sub", peers=[seeder.endpoint])
    _assert_one_error(run, run.wait(RUN_TIMEOUT), f"cannot create download folder {read_only_dir}/sub",
                      "Read-only file system")
    assert not run.events("peer connected"), run.describe()  # refused before talking to any peer
    assert os.listdir(read_only_dir) == []


# -- files changed under a running download --------------------------------------------------------


def _start_slow(tmp_path: Path, peers: RealPeers, torrentcore, files: dict[str, int] | None = None):
    if files is None:
        root = Path(make_payload(tmp_path / "seed", SIZE, seed=11, name="fault.bin"))
    else:
        root = Path(make_payload(tmp_path / "seed", files, seed=11, name="fault"))
    torrent = tmp_path / "fault.torrent"
    make_torrent(root, [], piece_length=PIECE_LENGTH, out=torrent)
    seeder = _seeder(peers, torrent, tmp_path / "seed")
    out = tmp_path / "out"
    return root, torrent, seeder, out


def _restart(torrentcore, torrent: Path, out: Path, seeder) -> TorrentcoreProcess:
    seeder.session.apply_settings({"upload_rate_limit": 0})
    return torrentcore.run(torrent, out, peers=[seeder.endpoint])


def test_file_deleted_under_a_running_download(tmp_path, peers, torrentcore):
    root, torrent, seeder, out = _start_slow(tmp_path, peers, torrentcore)
    run = torrentcore.run(torrent, out, peers=[seeder.endpoint])
    target = out / "fault.bin"
    assert wait_until(_moment(seeder, run, lambda: _uploaded(seeder) >= SIZE // 3), 20), run.describe()
    assert target.is_file() and run.returncode is None, run.describe()
    target.unlink()
    _resume_seeder(seeder, run)
    # Reported at the next write into the (now nameless) file: the run stops, it does not "finish".
    _assert_one_error(run, run.wait(RUN_TIMEOUT), f"{target} was deleted during the download")
    assert not target.exists(), "the engine must not bring the file back with pieces it no longer has"
    assert not resume_record(torrentcore.state_dir, out, metainfo.load(str(torrent))).exists(), os.listdir(out)

    second = _restart(torrentcore, torrent, out, seeder)
    summary = _finish(second, root, target)
    assert not second.events("resume record trusted"), second.describe()
    assert summary["downloaded_min"] >= SIZE * 0.9, second.describe()  # everything was gone: fetched again


def test_file_truncated_under_a_running_download(tmp_path, peers, torrentcore):
    root, torrent, seeder, out = _start_slow(tmp_path, peers, torrentcore)
    run = torrentcore.run(torrent, out, "--strategy", "sequential", peers=[seeder.endpoint])
    target = out / "fault.bin"
    assert wait_until(_moment(seeder, run, lambda: _uploaded(seeder) >= SIZE // 2), 20), run.describe()
    assert run.returncode is None, run.describe()
    keep = SIZE // 4  # sequential: the first quarter is verified and on disk by now
    os.truncate(target, keep)
    _resume_seeder(seeder, run)
    _assert_one_error(run, run.wait(RUN_TIMEOUT), f"{target} was truncated during the download")
    assert not resume_record(torrentcore.state_dir, out, metainfo.load(str(torrent))).exists(), os.listdir(out)

    second = _restart(torrentcore, torrent, out, seeder)
    summary = _finish(second, root, target)
    assert not second.events("resume record trusted"), second.describe()
    checked = second.events("checking existing data")
    assert checked and checked[0]["candidates"] > 0, second.describe()
    # The pieces left in the truncated file were kept (re-hashed), only the rest was downloaded again.
    assert summary["downloaded_max"] <= SIZE - keep + 4 * PIECE_LENGTH, second.describe()


def test_finished_file_deleted_while_others_download(tmp_path, peers, torrentcore):
    """A file completed early and then deleted is noticed before the torrent is called complete."""
    files = {"a.bin": 1 << 20, "b.bin": SIZE}
    root, torrent, seeder, out = _start_slow(tmp_path, peers, torrentcore, files)
    run = torrentcore.run(torrent, out, "--strategy", "sequential", peers=[seeder.endpoint])
    first, second_file = out / "fault" / "a.bin", out / "fault" / "b.bin"

    def _past_first_file() -> bool:
        try:
            return second_file.stat().st_size >= 2 << 20
        except OSError:
            return False

    assert wait_until(_moment(seeder, run, _past_first_file), 20), run.describe()
    assert run.returncode is None, run.describe()
    first.unlink()
    _resume_seeder(seeder, run)
    _assert_one_error(run, run.wait(RUN_TIMEOUT), f"{first} was deleted during the download")
    assert not run.summary() or run.summary()["verdict"] != "done", run.describe()

    again = _restart(torrentcore, torrent, out, seeder)
    summary = _finish(again, root, out / "fault")
    # b.bin's verified pieces (2 MiB and more were written) were kept: at least 1 MiB less than the whole
    # torrent (a.bin + b.bin) came again.
    assert summary["downloaded_max"] < SIZE, again.describe()


# -- the storage backend alone ---------------------------------------------------------------------


def _storage(tmp_path: Path, data: bytes):
    import hashlib

    from torrentcore import bencode
    from torrentcore_plugins.filesystem import FilesystemStorage

    plen = 16384
    pieces = b"".join(hashlib.sha1(data[i : i + plen]).digest() for i in range(0, len(data), plen))
    info = {b"name": b"u", b"files": [{b"length": len(data) // 2, b"path": [b"a"]},
                                      {b"length": len(data) - len(data) // 2, b"path": [b"b"]}],
            b"piece length": plen, b"pieces": pieces}
    meta = metainfo.parse(bencode.encode({b"info": info}))
    return meta, FilesystemStorage(meta, str(tmp_path)), FilesystemStorage


@pytest.mark.parametrize("change", ["delete", "truncate", "rewrite", "replace"])
def test_change_after_the_last_write_means_no_resume_record(tmp_path, change):
    from torrentcore.errors import StorageError

    data = os.urandom(16384 * 8)
    meta, st, storage_class = _storage(tmp_path, data)
    for i in range(4):  # file a only
        st.write(i, 0, data[i * 16384 : (i + 1) * 16384])
        st.mark_complete(i)
    path = tmp_path / "u" / "a"
    if change == "delete":
        path.unlink()
    elif change == "truncate":
        os.truncate(path, 16384)
    elif change == "rewrite":
        with open(path, "r+b") as fh:
            fh.write(b"\0" * 10)
    else:
        path.rename(tmp_path / "moved")
        path.write_bytes(data[: len(data) // 2])
    st.close()
    assert not os.path.exists(resume_path(str(tmp_path), meta)), change
    assert storage_class(meta, str(tmp_path)).completed_pieces() is None
    if change == "replace":
        return  # the old file (renamed) is still ours and intact: a replacement is seen by path, as above
    # A change noticed at the next write is an error there (the download stops).
    meta, st, _ = _storage(tmp_path / "again", data)
    st.write(0, 0, data[:16384])
    target = tmp_path / "again" / "u" / "a"
    if change == "delete":
        target.unlink()
    elif change == "truncate":
        os.truncate(target, 100)
    else:
        with open(target, "r+b") as fh:
            fh.write(b"x" * 16385)
    with pytest.raises(StorageError, match={"delete": "was deleted", "truncate": "was truncated",
                                            "rewrite": "modified by another program"}[change]):
        st.write(1, 0, data[16384:32768])
