"""The daemon's download queue, seed ratio limit and watch folder, with a real libtorrent seeder and leecher.

One daemon (with ``--watch-dir``), one rate-limited libtorrent seeder and one opentracker for the module.
"""

from __future__ import annotations

import pytest
from daemon_harness import DaemonProcess
from opentracker_fixture import OpenTracker, opentracker_available
from realpeers import LOCALHOST, LibtorrentPeer, assert_same_tree, make_payload, make_torrent, wait_until

pytestmark = pytest.mark.timeout(240)
#: The tests build on each other's torrents (one daemon for the module): one shard runs them all, in order.
SHARD_WHOLE_MODULE = True

SIZE = 600_000
SEED_RATE = 1_000_000


class Swarm:
    def __init__(self, root):
        self.root = root
        self.tracker = OpenTracker(root / "tracker").start()
        self.seeds = root / "seeds"
        self.seeder = LibtorrentPeer(name="seeder", upload_rate_limit=SEED_RATE, ignore_limits_on_local_network=False)
        self.torrent, self.hash, self.data = {}, {}, {}
        for i, name in enumerate(("q1", "q2", "w1", "w2", "g1", "g2", "g3", "p1")):
            path = make_payload(self.seeds, SIZE, seed=70 + i, name=name)
            data, ih = make_torrent(path, trackers=[self.tracker.http_url], piece_length=32768,
                                    out=root / f"{name}.torrent")
            self.torrent[name], self.hash[name], self.data[name] = root / f"{name}.torrent", ih.hex(), data
            self.tracker.add(ih)
            self.seeder.add_torrent(data, self.seeds, seed=True)
        self.watch = root / "watch"
        self.daemon = DaemonProcess(root / "d", "--watch-dir", str(self.watch))

    def close(self):
        self.daemon.kill()
        self.seeder.close()
        self.tracker.stop()


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    if not opentracker_available():
        pytest.skip("opentracker is not installed")
    s = Swarm(tmp_path_factory.mktemp("daemon-queue"))
    try:
        yield s
    finally:
        s.close()


def test_download_queue_runs_in_queue_order(swarm):
    d = swarm.daemon
    d.rpc("session-set", **{"download-queue-size": 0})  # nothing may download yet
    q1 = d.rpc("torrent-add", filename=str(swarm.torrent["q1"]))["torrent-added"]["id"]
    q2 = d.rpc("torrent-add", filename=str(swarm.torrent["q2"]))["torrent-added"]["id"]
    for tid in (q1, q2):
        d.wait_torrent(tid, lambda t: t["status"] == 3, 20, "status")
    d.rpc("queue-move-top", ids=[q2])
    assert [t["queuePosition"] for t in d.rpc("torrent-get", ids=[q1, q2], fields=["queuePosition"])["torrents"]] \
        == [1, 0]
    d.rpc("session-set", **{"download-queue-size": 1})
    seen_waiting = 0

    def q2_done_first():
        nonlocal seen_waiting
        t1, t2 = d.rpc("torrent-get", ids=[q1, q2], fields=["status", "haveValid", "percentDone"])["torrents"]
        if t2["percentDone"] < 1:
            assert t1["status"] == 3 and t1["haveValid"] == 0, (t1, t2)  # q1 waits while q2 holds the slot
            seen_waiting += 1
        return t2["percentDone"] == 1

    assert wait_until(q2_done_first, 60, interval=0.1)
    assert seen_waiting >= 1
    d.wait_torrent(q1, lambda t: t["percentDone"] == 1, 60, "percentDone")
    for name in ("q1", "q2"):
        assert_same_tree(swarm.seeds / name, d.download_dir / name)
    d.rpc("session-set", **{"download-queue-size": 5})


def test_seed_ratio_limit_stops_seeding(swarm):
    d = swarm.daemon
    q1 = next(t["id"] for t in d.rpc("torrent-get", fields=["id", "name"])["torrents"] if t["name"] == "q1")
    d.rpc("torrent-set", ids=[q1], seedRatioMode=1, seedRatioLimit=0.25)
    swarm.seeder.pause(swarm.seeder._handles[0])  # the leecher must get q1 from the daemon
    with LibtorrentPeer(name="leecher") as leecher:
        leecher.add_torrent(swarm.data["q1"], swarm.root / "leech")
        leecher.connect_peer(LOCALHOST, d.peer_port())
        t = d.wait_torrent(q1, lambda t: t["status"] == 0 and t["isFinished"], 60, "status", "isFinished",
                           "uploadRatio", "uploadedEver")
    swarm.seeder.resume(swarm.seeder._handles[0])
    assert t["isFinished"] is True and t["uploadRatio"] >= 0.25 and t["uploadedEver"] > 0, t
    assert "Finished" in d.remote("-l")
    d.rpc("torrent-set", ids=[q1], seedRatioMode=2)  # unlimited: starting it again seeds on
    d.rpc("torrent-start", ids=[q1])
    d.wait_torrent(q1, lambda t: t["status"] == 6, 30, "status")


def test_watch_folder(swarm):
    d = swarm.daemon
    (swarm.watch / "w1.torrent").write_bytes(swarm.data["w1"])
    (swarm.watch / "broken.torrent").write_bytes(b"d4:info")
    (swarm.watch / "w2.magnet").write_text(f"magnet:?xt=urn:btih:{swarm.hash['w2']}&tr={swarm.tracker.http_url}\n")
    assert wait_until(lambda: (swarm.watch / "w1.torrent.added").exists() and
                      (swarm.watch / "broken.torrent.invalid").exists() and
                      (swarm.watch / "w2.magnet.added").exists(), 20), sorted(p.name for p in swarm.watch.iterdir())
    assert not (swarm.watch / "w1.torrent").exists()
    names = {t["hashString"]: t["id"] for t in d.rpc("torrent-get", fields=["id", "hashString"])["torrents"]}
    for name in ("w1", "w2"):
        d.wait_torrent(names[swarm.hash[name]], lambda t: t["percentDone"] == 1, 60, "percentDone")
        assert_same_tree(swarm.seeds / name, d.download_dir / name)
    assert "watch folder: invalid torrent file" in d.stderr()


def test_per_torrent_download_limit(swarm):
    """A torrent limited to 100 kB/s gets a small share of what an unlimited one beside it gets
    (the progress of both is compared when the unlimited one completes: a ratio, not a time)."""
    d = swarm.daemon
    for name in ("q1", "q2"):  # fetch both again from scratch
        tid = next(t["id"] for t in d.rpc("torrent-get", fields=["id", "name"])["torrents"] if t["name"] == name)
        d.rpc("torrent-remove", ids=[tid], **{"delete-local-data": True})
    assert wait_until(lambda: not (d.download_dir / "q1").exists() and not (d.download_dir / "q2").exists(), 20)
    slow = d.rpc("torrent-add", filename=str(swarm.torrent["q1"]), paused=True)["torrent-added"]["id"]
    fast = d.rpc("torrent-add", filename=str(swarm.torrent["q2"]), paused=True)["torrent-added"]["id"]
    d.rpc("torrent-set", ids=[slow], downloadLimit=100, downloadLimited=True)
    d.rpc("torrent-start", ids=[slow, fast])
    t = d.wait_torrent(fast, lambda t: t["percentDone"] == 1, 60, "percentDone")
    s = d.torrent(slow, "haveValid", "rateDownload")
    assert s["haveValid"] < 0.5 * SIZE, (s, t)
    d.rpc("torrent-set", ids=[slow], downloadLimited=False)
    d.wait_torrent(slow, lambda t: t["percentDone"] == 1, 60, "percentDone")
    assert_same_tree(swarm.seeds / "q1", d.download_dir / "q1")


def test_alternative_global_limit_and_a_torrent_that_ignores_it(swarm):
    """With the alternative speed limits on (100 kB/s down), a torrent gets a small share of what a
    libtorrent leecher gets from the same seeder at the same time, and of what a torrent beside it that does
    not honor the session's limits gets (compared when those complete: ratios, not times)."""
    d = swarm.daemon
    d.rpc("session-set", **{"alt-speed-down": 100, "alt-speed-enabled": True})
    try:
        limited = d.rpc("torrent-add", filename=str(swarm.torrent["g1"]), paused=True)["torrent-added"]["id"]
        free = d.rpc("torrent-add", filename=str(swarm.torrent["g3"]), paused=True)["torrent-added"]["id"]
        d.rpc("torrent-set", ids=[free], honorsSessionLimits=False)
        d.rpc("torrent-start", ids=[limited, free])
        with LibtorrentPeer(name="leecher2") as leecher:
            h = leecher.add_torrent(swarm.data["g2"], swarm.root / "leech2")
            leecher.connect_peer(*swarm.seeder.endpoint, handle=h)
            assert leecher.wait_finished(60, handle=h), leecher.describe()
            d.wait_torrent(free, lambda t: t["percentDone"] == 1, 60, "percentDone")
            t = d.torrent(limited, "haveValid")
        assert t["haveValid"] < 0.5 * SIZE, t
    finally:
        d.rpc("session-set", **{"alt-speed-enabled": False})
    d.wait_torrent(limited, lambda t: t["percentDone"] == 1, 60, "percentDone")
    for name in ("g1", "g3"):
        assert_same_tree(swarm.seeds / name, d.download_dir / name)


def test_per_torrent_peer_limit(swarm):
    """peer-limit 1 with two seeders in the swarm: never more than one peer connected, and it completes."""
    d = swarm.daemon
    with LibtorrentPeer(name="seeder2") as second:
        second.add_torrent(swarm.data["p1"], swarm.seeds, seed=True)
        tid = d.rpc("torrent-add", filename=str(swarm.torrent["p1"]), paused=True)["torrent-added"]["id"]
        # Slow enough (200 kB/s) that both seeders would be connected without the limit.
        d.rpc("torrent-set", ids=[tid], downloadLimit=200, downloadLimited=True, **{"peer-limit": 1})
        d.rpc("torrent-start", ids=[tid])
        most = 0

        def done():
            nonlocal most
            t = d.torrent(tid, "peersConnected", "percentDone")
            most = max(most, t["peersConnected"])
            return t["percentDone"] == 1

        assert wait_until(done, 60, interval=0.05)
        assert most == 1 and d.torrent(tid, "peer-limit")["peer-limit"] == 1
    assert_same_tree(swarm.seeds / "p1", d.download_dir / "p1")
