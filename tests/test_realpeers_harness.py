"""Self-tests of the real-peer harness (``tests/realpeers.py``): real clients only, no torrentcore engine.

Each test moves real data between real BitTorrent clients on 127.0.0.1 and checks it byte for byte, so a
broken harness (wrong libtorrent settings, aria2 flags, torrent layout, waits) fails here first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator

import pytest
from realpeers import (
    LOCALHOST,
    RealPeers,
    assert_same_tree,
    free_port,
    make_payload,
    make_torrent,
    tree_differences,
    wait_port_open,
    wait_until,
)

needs_aria2 = pytest.mark.skipif(shutil.which("aria2c") is None, reason="aria2c is not installed")
needs_opentracker = pytest.mark.skipif(
    shutil.which("opentracker") is None, reason="opentracker is not installed"
)

#: A tree with nested folders, an odd-sized file and zero-length files (also one in a subfolder).
TREE = {
    "a.bin": 1 << 20,
    "sub/b.bin": 3 << 20,
    "sub/deeper/c.bin": 123_457,
    "empty.txt": 0,
    "sub/deeper/zero": 0,
    "z.bin": 70_001,
}


@pytest.fixture
def peers(tmp_path) -> Iterator[RealPeers]:
    """Every real peer of the test, stopped at teardown; their diagnostics are printed there too."""
    with RealPeers(tmp_path / "peers") as pool:
        yield pool
        print(pool.describe())


@contextlib.contextmanager
def _opentracker(port: int, info_hashes: Iterable[bytes]) -> Iterator[str]:
    """Run Debian's opentracker on 127.0.0.1:``port`` serving ``info_hashes``; yield its HTTP announce URL.

    Minimal private helper for these self-tests (``opentracker_fixture.py`` is the shared one). The
    tracker chroots into its folder and drops to ``nobody``, so that folder lives in a world-readable
    temp dir (pytest's ``tmp_path`` parents are 0700).
    """
    folder = tempfile.mkdtemp(prefix="realpeers-ot-")
    os.chmod(folder, 0o755)
    with open(os.path.join(folder, "whitelist.txt"), "w") as f:
        f.writelines(h.hex() + "\n" for h in info_hashes)
    cmd = ["opentracker", "-i", LOCALHOST, "-p", str(port), "-P", str(port), "-d", folder,
           "-w", "/whitelist.txt", "-A", LOCALHOST]
    if os.geteuid() == 0:
        cmd += ["-u", "nobody"]
    with open(os.path.join(folder, "opentracker.log"), "wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_port_open(port, timeout=5), f"opentracker did not start: rc={proc.poll()}"
        yield f"http://{LOCALHOST}:{port}/announce"
    finally:
        proc.kill()
        proc.wait(timeout=5)
        shutil.rmtree(folder, ignore_errors=True)


def _total_size(root: str) -> int:
    if os.path.isfile(root):
        return os.path.getsize(root)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files)


def test_libtorrent_seeder_to_libtorrent_leecher_direct(tmp_path, peers):
    size = (4 << 20) + 12_345  # partial last piece
    root = make_payload(tmp_path / "seed", size, seed=11)
    torrent, info_hash = make_torrent(root, [], piece_length=64 * 1024)
    assert len(info_hash) == 20

    seeder = peers.libtorrent("seeder")
    seeder.add_torrent(torrent, tmp_path / "seed", seed=True)
    leecher = peers.libtorrent("leecher")
    leecher.add_torrent(torrent, tmp_path / "leech")
    assert leecher.status()["progress"] == 0.0

    started = time.monotonic()
    leecher.connect_peer(*seeder.endpoint)
    assert leecher.wait_finished(timeout=10), peers.describe()
    elapsed = time.monotonic() - started

    assert_same_tree(root, tmp_path / "leech" / "payload", peers.describe())
    # The seeder's per-peer upload count is exact: everything went to the leecher, identified by peer id.
    sent = seeder.transfers()
    assert [t["pid"][:8] for t in sent] == [b"-LT2110-"], sent
    assert sent[0]["uploaded"] >= size, sent
    assert leecher.status()["total_payload_download"] >= size
    print(f"libtorrent -> libtorrent: {size} bytes in {elapsed:.2f}s")


@needs_aria2
@needs_opentracker
def test_libtorrent_seeder_to_aria2_leecher_via_opentracker(tmp_path, peers):
    root = make_payload(tmp_path / "seed", TREE, seed=22)
    size = _total_size(root)
    tracker_port = free_port()
    url = f"http://{LOCALHOST}:{tracker_port}/announce"
    _, info_hash = make_torrent(root, [url], piece_length=32 * 1024, out=tmp_path / "tree.torrent")
    # The info-hash covers the info dict only: the same files give the same hash with other trackers.
    tiered = [["http://a/announce", "http://b/announce"], ["http://c/announce"]]
    assert make_torrent(root, tiered, piece_length=32 * 1024)[1] == info_hash

    with _opentracker(tracker_port, [info_hash]):
        seeder = peers.libtorrent("seeder")
        seeder.add_torrent(tmp_path / "tree.torrent", tmp_path / "seed", seed=True)
        # aria2 learns about the seeder only from the tracker: the seeder must be registered first.
        assert seeder.wait_announced(timeout=5), peers.describe()

        started = time.monotonic()
        leecher = peers.aria2(tmp_path / "tree.torrent", tmp_path / "leech")
        rc = leecher.wait(timeout=15)
        elapsed = time.monotonic() - started
        assert rc == 0, peers.describe()

    assert_same_tree(root, tmp_path / "leech" / "payload", peers.describe())
    sent = seeder.transfers()
    assert [t["pid"][:3] for t in sent] == [b"A2-"], sent
    assert sent[0]["uploaded"] >= size, sent
    print(f"libtorrent -> aria2 via opentracker: {size} bytes, aria2 exited after {elapsed:.2f}s")


@needs_aria2
@needs_opentracker
def test_aria2_seeder_to_libtorrent_leecher_via_opentracker(tmp_path, peers):
    size = (3 << 20) + 777
    root = make_payload(tmp_path / "seed", size, seed=33, name="single.bin")
    tracker_port = free_port()
    url = f"http://{LOCALHOST}:{tracker_port}/announce"
    torrent, info_hash = make_torrent(root, [url])

    with _opentracker(tracker_port, [info_hash]):
        started = time.monotonic()
        seeder = peers.aria2(torrent, tmp_path / "seed", seed=True)
        assert seeder.wait_listening(timeout=10), peers.describe()  # after its hash check
        assert seeder.wait_announced(timeout=10), peers.describe()

        leecher = peers.libtorrent("leecher")
        leecher.add_torrent(torrent, tmp_path / "leech")
        assert leecher.wait_finished(timeout=10), peers.describe()
        elapsed = time.monotonic() - started
        assert seeder.returncode is None, "the aria2 seeder must keep running until killed"

    assert_same_tree(root, tmp_path / "leech" / "single.bin", peers.describe())
    received = leecher.transfers()
    assert {t["pid"][:3] for t in received} == {b"A2-"}, received
    assert leecher.status()["total_payload_download"] >= size
    print(f"aria2 -> libtorrent via opentracker: {size} bytes in {elapsed:.2f}s (aria2 start included)")


def test_seeder_pause_and_resume_mid_transfer(tmp_path, peers):
    size = 8 << 20
    root = make_payload(tmp_path / "seed", size, seed=44)
    torrent, _ = make_torrent(root, [], piece_length=64 * 1024)
    seeder = peers.libtorrent("seeder")
    seeder.add_torrent(torrent, tmp_path / "seed", seed=True)
    # Loopback is far too fast to pause mid-transfer: throttle this leecher (local peers are exempt from
    # rate limits unless ignore_limits_on_local_network is off).
    leecher = peers.libtorrent("leecher", ignore_limits_on_local_network=False, download_rate_limit=4_000_000)
    leecher.add_torrent(torrent, tmp_path / "leech")
    leecher.connect_peer(*seeder.endpoint)
    assert wait_until(lambda: leecher.status()["progress"] > 0.05, 10), peers.describe()

    seeder.pause()  # the seeder "disappears": its connections close
    assert seeder.status()["paused"]
    assert wait_until(lambda: leecher.status()["num_peers"] == 0, 5), peers.describe()
    time.sleep(0.3)  # data already in the leecher's socket buffer is still read before the EOF
    stalled = leecher.status()["progress"]
    time.sleep(1.0)
    assert leecher.status()["progress"] == stalled < 1.0, peers.describe()

    started = time.monotonic()
    seeder.resume()  # ... and comes back: one side re-dials the other (min_reconnect_time is 1 s)
    assert leecher.wait_finished(timeout=10), peers.describe()
    elapsed = time.monotonic() - started
    assert_same_tree(root, tmp_path / "leech" / "payload", peers.describe())
    assert sum(t["uploaded"] for t in seeder.transfers()) >= size
    print(f"paused at {stalled:.0%}, finished {elapsed:.2f}s after resume")


def test_make_payload_is_deterministic_and_fast(tmp_path):
    started = time.monotonic()
    big = make_payload(tmp_path / "big", 64 << 20, seed=5)
    elapsed = time.monotonic() - started
    assert os.path.getsize(big) == 64 << 20
    assert elapsed < 2.0, f"64 MiB payload took {elapsed:.2f}s"

    first = make_payload(tmp_path / "one", TREE, seed=7)
    again = make_payload(tmp_path / "two", TREE, seed=7)
    other = make_payload(tmp_path / "three", TREE, seed=8)
    assert_same_tree(first, again)
    differing = tree_differences(first, other)  # another seed changes every non-empty file
    assert len(differing) == sum(1 for size in TREE.values() if size), differing
    assert all(p.startswith("content differs") for p in differing), differing
    for rel, size in TREE.items():
        assert os.path.getsize(os.path.join(first, *rel.split("/"))) == size
    print(f"64 MiB payload in {elapsed:.2f}s")


@needs_aria2
def test_real_peers_are_stopped_even_when_the_test_fails(tmp_path):
    root = make_payload(tmp_path / "seed", 1 << 20, seed=6)
    torrent, _ = make_torrent(root, [])
    with pytest.raises(RuntimeError, match="boom"), RealPeers(tmp_path / "pool") as pool:
        session = pool.libtorrent("lt")
        session.add_torrent(torrent, tmp_path / "seed", seed=True)
        aria2 = pool.aria2(torrent, tmp_path / "seed", seed=True)
        assert aria2.wait_listening(timeout=10), pool.describe()
        assert wait_port_open(session.port, timeout=5)
        raise RuntimeError("boom")
    assert aria2.returncode is not None, "aria2c still running"
    with pytest.raises(RuntimeError, match="closed"):
        _ = session.session
    assert not wait_port_open(session.port, timeout=0.2), "libtorrent still listening"
    assert not wait_port_open(aria2.port, timeout=0.2), "aria2c still listening"
