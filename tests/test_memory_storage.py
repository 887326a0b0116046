"""``--storage memory``: download from libtorrent into RAM, then seed a libtorrent leecher from RAM.

The download folder given with ``-o`` is never created; torrents bigger than ``memory.max_bytes`` are refused
before anything starts (exit code 2).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from realpeers import (
    assert_same_tree,
    make_payload,
    make_torrent,
    peers_fixture,  # noqa: F401  (fixture "peers")
    wait_until,
)
from torrentcore_cli import run_cli, torrentcore_factory  # noqa: F401  (fixture "torrentcore")

from torrentcore import bencode
from torrentcore_plugins.memory import DEFAULT_MAX_BYTES, MemoryStorage

KiB = 1024
MiB = 1024 * KiB
TREE = {"a.bin": 1 * MiB + 17, "sub/b.bin": 2 * MiB + 4321, "sub/empty": 0, "z.bin": 70_001}


def test_download_into_memory_then_seed_a_libtorrent_leecher_from_it(tmp_path, peers, torrentcore):
    root = make_payload(tmp_path / "seed", TREE, seed=31)
    torrent = tmp_path / "t.torrent"
    make_torrent(root, [], piece_length=64 * KiB, out=torrent)
    seeder = peers.libtorrent("seeder")
    seeder.add_torrent(torrent, tmp_path / "seed", seed=True)
    out = tmp_path / "never"

    run = torrentcore.run(torrent, out, "--storage", "memory", "--seed-idle", "0", "--seed-ratio", "0",
                          no_seed=False, peers=[seeder.endpoint])
    assert run.wait_event("download complete", 30), run.describe() + peers.describe()
    assert run.returncode is None, run.describe()
    seeder.close()  # from now on the only copy of the data is in torrentcore's memory
    port = run.wait_listening()

    leecher = peers.libtorrent("leecher")
    leecher.add_torrent(torrent, tmp_path / "leech")
    leecher.connect_peer("127.0.0.1", port)
    assert leecher.wait_finished(timeout=30), peers.describe() + run.describe()
    assert_same_tree(root, tmp_path / "leech" / "payload", run.describe())
    assert not out.exists(), "the memory storage must not touch the download folder"
    assert run.stop() == 0, run.describe()  # the download was complete: stopping its seeding is success
    assert not out.exists()
    assert "Traceback" not in run.stderr
    summary = run.summary()
    assert summary is not None and summary["pieces_done"] == summary["num_pieces"], run.stdout
    # The leecher knew no other peer, and the libtorrent seeder was gone: every byte came from our memory.
    assert summary["uploaded_min"] >= 3 * MiB, run.stdout  # 3.07 MiB in all; printed with one decimal


def _huge_torrent(path: Path, length: int) -> None:
    """A syntactically valid torrent of ``length`` bytes (fake hashes: it is refused before any download)."""
    piece = 16 * MiB
    pieces = -(-length // piece)
    info = {b"name": b"huge.bin", b"length": length, b"piece length": piece, b"pieces": b"\x01" * 20 * pieces}
    path.write_bytes(bencode.encode({b"info": info}))


@pytest.mark.parametrize("case", ["default-cap", "small-cap", "bad-value"])
def test_a_torrent_bigger_than_the_cap_is_refused(tmp_path, case):
    out = tmp_path / "out"
    torrent = tmp_path / "t.torrent"
    extra: list[str] = []
    if case == "default-cap":
        _huge_torrent(torrent, DEFAULT_MAX_BYTES + 1)
    else:
        root = make_payload(tmp_path / "seed", 3 * MiB, seed=3)
        make_torrent(root, [], piece_length=64 * KiB, out=torrent)
        extra = ["--plugin-opt", "memory.max_bytes=" + ("1M" if case == "small-cap" else "lots")]
    done = run_cli(["run", str(torrent), "-o", str(out), "--storage", "memory", "--no-seed", "--port", "0", *extra])
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("torrentcore: error:"), done.stderr
    assert ("memory.max_bytes" in lines[0]) and "Traceback" not in done.stderr, lines
    assert not out.exists()


def test_a_larger_cap_admits_the_torrent(tmp_path, peers, torrentcore):
    root = make_payload(tmp_path / "seed", 3 * MiB, seed=4, name="one.bin")
    torrent = tmp_path / "t.torrent"
    make_torrent(root, [], piece_length=64 * KiB, out=torrent)
    seeder = peers.libtorrent("seeder")
    seeder.add_torrent(torrent, tmp_path / "seed", seed=True)
    for cap, code in (("2M", 2), ("4M", 0)):
        run = torrentcore.run(torrent, tmp_path / "out", "--storage", "memory", "--plugin-opt",
                              f"memory.max_bytes={cap}", peers=[seeder.endpoint])
        assert run.wait(30) == code, run.describe()
    assert wait_until(lambda: run.summary() is not None, 5) and run.summary()["verdict"] == "done", run.stdout
    assert not (tmp_path / "out").exists()


def test_memory_storage_contract():
    """Pieces are copied on write (the engine reuses its buffers), read back per range, and forgotten."""
    info = {b"name": b"x", b"length": 40_000, b"piece length": 16 * KiB, b"pieces": b"\x00" * 60}
    from torrentcore import metainfo

    meta = metainfo.parse(bencode.encode({b"info": info}))
    store = MemoryStorage(meta)
    assert store.completed_pieces() == set() and list(store.pieces_with_data()) == []
    buf = bytearray(hashlib.sha256(b"p").digest() * 512)[: 16 * KiB]
    store.write(1, 0, memoryview(buf))
    store.mark_complete(1)
    expected = bytes(buf)
    buf[:] = bytes(len(buf))
    assert store.read(1, 100, 50) == expected[100:150]
    assert store.read(0, 0, 10) == bytes(10)
    assert store.completed_pieces() == {1}
    store.mark_incomplete(1)
    assert store.completed_pieces() == set() and store.read(1, 0, 4) == bytes(4)
    with pytest.raises(Exception, match="outside"):
        store.read(2, 0, 40_000)


@pytest.mark.parametrize("strategy", ["sequential", "rarest-first"])
def test_single_file_to_standard_output(tmp_path, peers, torrentcore, strategy):
    root = make_payload(tmp_path / "seed", 3 * MiB + 999, seed=5, name="movie.bin")
    torrent = tmp_path / "t.torrent"
    make_torrent(root, [], piece_length=32 * KiB, out=torrent)
    seeder = peers.libtorrent("seeder")
    seeder.add_torrent(torrent, tmp_path / "seed", seed=True)
    run = torrentcore.run(torrent, "-", "--storage", "memory", "--strategy", strategy, peers=[seeder.endpoint])
    assert run.wait(30) == 0, run.stderr[-3000:]
    assert run.stdout_path.read_bytes() == Path(root).read_bytes()
    assert "done." in run.stderr, "the console moves to standard error"
    assert not (run.workdir / "-").exists()


@pytest.mark.parametrize("case", ["filesystem", "multi-file"])
def test_standard_output_needs_memory_storage_and_one_file(tmp_path, case):
    root = make_payload(tmp_path / "seed", {"a": 10, "b": 20} if case == "multi-file" else 1000, seed=6)
    torrent = tmp_path / "t.torrent"
    make_torrent(root, [], piece_length=16 * KiB, out=torrent)
    storage = ["--storage", "memory"] if case == "multi-file" else []
    done = run_cli(["run", str(torrent), "-o", "-", "--no-seed", "--port", "0", *storage], cwd=str(tmp_path))
    assert done.returncode == 2 and done.stdout == "", done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "-o -" in done.stderr, done.stderr
    assert not (tmp_path / "-").exists()


def test_standard_output_flows_in_order_while_rarest_first_downloads(tmp_path, peers, torrentcore):
    """``-o -`` reads through a streaming reader: its read-ahead window is urgent under any strategy, so the
    data reaches standard output in order long before a rarest-first download completes."""
    root = make_payload(tmp_path / "seed", 12 * MiB + 5, seed=8, name="movie.bin")
    expected = Path(root).read_bytes()
    torrent = tmp_path / "t.torrent"
    make_torrent(root, [], piece_length=64 * KiB, out=torrent)
    seeder = peers.libtorrent("seeder", ignore_limits_on_local_network=False, upload_rate_limit=1_500_000)
    seeder.add_torrent(torrent, tmp_path / "seed", seed=True)
    run = torrentcore.run(torrent, "-", "--storage", "memory", "--strategy", "rarest-first", peers=[seeder.endpoint])

    def written() -> int:
        return run.stdout_path.stat().st_size if run.stdout_path.exists() else 0

    assert wait_until(lambda: written() >= 3 * MiB or run.returncode is not None, 60), run.describe()
    completed_then = bool(run.events("download complete"))
    prefix = run.stdout_path.read_bytes()
    assert len(prefix) >= 3 * MiB and prefix == expected[: len(prefix)], "in order, from the first byte"
    assert not completed_then, "a quarter of the file was on standard output before the download completed"
    assert run.wait(60) == 0, run.stderr[-3000:]
    assert run.stdout_path.read_bytes() == expected
