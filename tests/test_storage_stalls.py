"""Stalls of a download by its storage: the time peers waited because complete pieces queued for their hash
check and write faster than the storage took them (:meth:`Verifier.acquire_slot`). It is counted, timed once
however many peers wait at once, logged with "download complete" (``storage_stalled``, ``storage_stalls``) and
reported in :class:`~torrentcore.handle.TorrentStatus` (``storage_stalled``).
"""

from __future__ import annotations

import os
import textwrap
import time

import gevent
import pytest
from realpeers import (
    assert_same_tree,
    make_payload,
    make_torrent,
    peers_fixture,  # noqa: F401  (fixture "peers")
)
from test_api import run_script
from torrentcore_cli import torrentcore_factory  # noqa: F401  (fixture "torrentcore")

from torrentcore.verifier import VERIFY_QUEUE_BYTES, Verifier

MiB = 1024 * 1024


def _verifier_with_two_slots(release_after: float) -> Verifier:
    class _Meta:
        piece_length = VERIFY_QUEUE_BYTES // 2
        pieces, info_hash_v2 = b"", None

    verifier = Verifier(_Meta(), object(), None, None, lambda: False, lambda i: None)  # room for 2 pieces
    # A slow hash-and-write: each slot comes back release_after seconds after its piece was handed over.
    verifier.submit = lambda piece, on_verdict: gevent.spawn_later(release_after, verifier.release_slot)
    return verifier


def test_free_slots_are_no_stall():
    verifier = _verifier_with_two_slots(0.01)
    verifier.acquire_slot()
    verifier.submit(None, None)
    verifier.acquire_slot()
    assert verifier.slots.stalls == 0
    assert verifier.slots.stalled_seconds == 0.0


def test_waits_for_a_slot_are_counted_and_timed_once_however_many_peers_wait():
    verifier = _verifier_with_two_slots(0.05)
    handed = []

    def reader(name: str) -> None:
        for k in range(3):
            verifier.acquire_slot()
            verifier.submit(k, None)
            handed.append((name, k))

    began = time.monotonic()
    readers = [gevent.spawn(reader, "a"), gevent.spawn(reader, "b")]
    gevent.sleep(0.01)
    assert 0 < verifier.slots.stalled_seconds  # a stall still going on counts up to now
    gevent.joinall(readers, timeout=10)
    wall = time.monotonic() - began
    assert len(handed) == 6
    # 6 pieces, 2 slots free at first; both readers waited at once at first (a slot freed while one waits may
    # go to the other reader before the waiter runs, so 3 or 4 waits in all).
    assert 2 <= verifier.slots.stalls <= 4
    # Both readers waited nearly all the time: summed, their waits would be about twice the wall time.
    assert 0 < verifier.slots.stalled_seconds <= wall


@pytest.fixture
def slow_disk(tmp_path, peers, monkeypatch):
    """32 MiB in 4 MiB pieces (4 verify slots) on a libtorrent seeder, and the ``slow-filesystem`` storage of
    ``tests/tc_slow_storage.py`` (0.3 s per write) importable by a torrentcore process: (root, torrent, seeder)."""
    root = make_payload(tmp_path / "seed", 32 * MiB, seed=61, name="big.bin")
    torrent = tmp_path / "t.torrent"
    make_torrent(root, [], piece_length=4 * MiB, out=torrent)
    seeder = peers.libtorrent("seeder")
    seeder.add_torrent(torrent, tmp_path / "seed", seed=True)
    tests = os.path.dirname(os.path.abspath(__file__))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("TC_WRITE_DELAY", "0.3")
    return root, torrent, seeder


def test_a_download_to_a_slow_disk_reports_its_storage_stalls(tmp_path, slow_disk, peers, torrentcore):
    """A real libtorrent seeder and a storage whose writes take 0.3 s each: the queue of 4 pieces of 4 MiB
    (VERIFY_QUEUE_BYTES) fills, and the download says it waited for its disk; the bytes are intact."""
    root, torrent, seeder = slow_disk
    out = tmp_path / "out"
    run = torrentcore.run(torrent, out, "--plugin", "tc_slow_storage", "--storage", "slow-filesystem",
                          peers=[seeder.endpoint])
    assert run.wait(120) == 0, run.describe() + peers.describe()
    assert_same_tree(root, out / "big.bin", run.describe())
    (done,) = run.events("download complete")
    assert done["storage_stalls"] >= 1, done
    assert done["storage_stalled"] > 0, done


def test_the_api_status_reports_the_stalls_of_a_slow_disk(tmp_path, slow_disk):
    """``TorrentHandle.status().storage_stalled``, through the public API (a script in its own process)."""
    root, torrent, seeder = slow_disk
    out = tmp_path / "out"
    code = textwrap.dedent(f"""
        import json, time
        import torrentcore
        torrentcore.patch()
        from torrentcore import Session, SessionConfig, TorrentConfig

        config = SessionConfig(listen_port=0, listen_hosts=("127.0.0.1",), dht=False, plugins=("tc_slow_storage",))
        with Session(config) as session:
            handle = session.add_torrent({str(torrent)!r}, {str(out)!r}, TorrentConfig(
                peers=({seeder.endpoint!r},), seed=False, storage="slow-filesystem"))
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not handle.status().complete:
                time.sleep(0.1)
            status = handle.status()
            print(json.dumps({{"complete": status.complete, "stalled": status.storage_stalled}}))
    """)
    result = run_script(code)
    assert result["complete"], result
    assert result["stalled"] > 0, result
    assert_same_tree(root, out / "big.bin", "api download")
