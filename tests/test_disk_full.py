"""A full disk: one clear line, exit code 1, no traceback, no piece marked done that is not on disk."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
import realpeers as rp
from conftest import mounted_tmpfs

from torrentcore import metainfo
from torrentcore_plugins.filesystem import FilesystemStorage


@pytest.fixture
def tiny_fs(tmp_path):
    """A 2 MiB tmpfs (needs root, as CI runs); skipped where mounting is not allowed."""
    with mounted_tmpfs(tmp_path / "tiny", "size=2m") as mnt:
        yield mnt


def test_disk_full_is_one_clear_line(tmp_path, tiny_fs):
    root = rp.make_payload(str(tmp_path / "seed"), 8 * 1024 * 1024, seed="full")
    torrent_path = str(tmp_path / "t.torrent")
    rp.make_torrent(root, [], piece_length=256 * 1024, out=torrent_path)
    with rp.LibtorrentPeer(name="seed") as seeder:
        seeder.add_torrent(torrent_path, os.path.dirname(root), seed=True)
        out = subprocess.run(
            [sys.executable, "-m", "torrentcore", "run", torrent_path, "-o", str(tiny_fs / "dl"), "--no-seed",
             "--quiet", "--port", str(rp.free_port()), "--peer", f"127.0.0.1:{seeder.port}"],
            capture_output=True, text=True, timeout=120,
        )
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert lines == [f"torrentcore: error: cannot write {tiny_fs}/dl/payload: disk full"]
    # Whatever the engine recorded as complete really is on disk and correct.
    meta = metainfo.load(torrent_path)
    st = FilesystemStorage(meta, str(tiny_fs / "dl"))
    good = {i for i in st.pieces_with_data()
            if hashlib.sha1(st.read(i, 0, meta.piece_size(i))).digest() == meta.piece_hash(i)}
    record = st.completed_pieces()
    # No record (it could not be saved on the full disk) means a re-check next time; a record must not lie.
    assert record is None or record <= good
