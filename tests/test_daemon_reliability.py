"""The daemon survives what long-running clients meet: kill -9 with five torrents downloading, SIGTERM,
a second daemon on the same folder, and a database that is corrupt, from a newer version, or not a file.

kill -9 test: five torrents download from a rate-limited libtorrent seeder (found through opentracker);
the daemon is killed mid-way, restarted on the same config folder, and every torrent comes back with its
settings; the pieces verified before the kill are still verified after the restart's check; the seeder
sends no more than what was missing plus what was in flight at the kill; every file ends byte-exact.
"""

from __future__ import annotations

import base64
import os
import sqlite3
import subprocess
import sys

import pytest
from daemon_harness import DaemonProcess
from opentracker_fixture import OpenTracker, opentracker_available
from realpeers import LibtorrentPeer, assert_same_tree, make_payload, make_torrent, wait_until
from torrentcore_cli import tracker_counts

pytestmark = pytest.mark.timeout(240)

PIECE = 32768
SIZE = 1_000_000
#: Seeder upload limit (bytes/s) for all five torrents: about five seconds of downloading in all.
SEED_RATE = 1_000_000


def _bits(b64: str) -> set[int]:
    data = base64.b64decode(b64)
    return {i for i in range(len(data) * 8) if data[i // 8] >> (7 - i % 8) & 1}


def test_kill_9_with_five_active_torrents_then_restart(tmp_path):
    if not opentracker_available():
        pytest.skip("opentracker is not installed")
    with OpenTracker(tmp_path / "tracker") as tracker, \
            LibtorrentPeer(name="seeder", upload_rate_limit=SEED_RATE, ignore_limits_on_local_network=False) as seeder:
        seeds = tmp_path / "seeds"
        names, hashes, handles = [f"t{i}" for i in range(5)], {}, {}
        for i, name in enumerate(names):
            path = make_payload(seeds, SIZE, seed=40 + i, name=name)
            data, ih = make_torrent(path, trackers=[tracker.http_url], piece_length=PIECE, out=tmp_path / f"{name}.t")
            tracker.add(ih)
            hashes[name] = ih
            handles[name] = seeder.add_torrent(data, seeds, seed=True)
        d = DaemonProcess(tmp_path / "d")
        try:
            ids = {}
            for name in names:
                ids[name] = d.rpc("torrent-add", filename=str(tmp_path / f"{name}.t"))["torrent-added"]["id"]
            d.rpc("torrent-set", ids=[ids["t0"]], labels=["films"], seedRatioMode=1, seedRatioLimit=3.5)
            d.rpc("torrent-set", ids=[ids["t1"]], downloadLimit=900, downloadLimited=True, **{"peer-limit": 7})
            fields = ["id", "haveValid", "pieces", "percentDone", "status", "labels", "seedRatioLimit",
                      "seedRatioMode", "downloadLimit", "downloadLimited", "peer-limit", "addedDate", "hashString"]

            def all_started():
                ts = d.rpc("torrent-get", fields=fields)["torrents"]
                return len(ts) == 5 and all(t["haveValid"] > 0 for t in ts) and sum(t["haveValid"] for t in ts) \
                    >= SIZE
            assert wait_until(all_started, 60, interval=0.1), d.rpc("torrent-get", fields=fields)
            before = {t["id"]: t for t in d.rpc("torrent-get", fields=fields)["torrents"]}
            d.kill()
            assert sum(1 for t in before.values() if t["percentDone"] < 1) >= 3, before
            sent_at_kill = {n: seeder.status(handles[n])["total_payload_upload"] for n in names}

            d.start()
            after = {t["id"]: t for t in d.rpc("torrent-get", fields=fields)["torrents"]}
            assert set(after) == set(before)
            for tid, t in after.items():
                for key in ("labels", "seedRatioLimit", "seedRatioMode", "downloadLimit", "downloadLimited",
                            "peer-limit", "addedDate", "hashString"):
                    assert t[key] == before[tid][key], (key, t, before[tid])
            # Once checked, every piece verified before the kill is verified still.
            for tid in before:
                t = d.wait_torrent(tid, lambda t: t["status"] in (4, 6) or t["percentDone"] == 1, 60, *fields[1:])
                assert _bits(before[tid]["pieces"]) <= _bits(t["pieces"]), tid
            for name in names:
                d.wait_torrent(ids[name], lambda t: t["percentDone"] == 1, 90, "percentDone")
                assert_same_tree(seeds / name, d.download_dir / name)
            for name in names:
                t = before[ids[name]]
                total = seeder.status(handles[name])["total_payload_upload"]
                in_flight = max(0, sent_at_kill[name] - t["haveValid"])
                # Nothing verified before the kill was fetched again: the seeder sent the torrent once, plus
                # what was in flight (unverified) when the daemon died.
                assert total <= SIZE + in_flight + 2 * PIECE, (name, total, in_flight, t["haveValid"])
            # SIGTERM: trackers are told "stopped" (the daemon leaves the swarm), state saved, exit 0. (A torrent
            # the killed daemon had not completed: the tracker still lists that one as a leecher, not a seeder.)
            ih = hashes[next(n for n in names if before[ids[n]]["percentDone"] < 1)]
            assert wait_until(lambda: tracker_counts(tracker, ih)[0] >= 2, 20)
            assert d.terminate() == 0, d.stderr()[-2000:]
            assert wait_until(lambda: tracker_counts(tracker, ih)[0] == 1, 15), \
                (tracker_counts(tracker, ih), d.stderr()[-3000:])
        finally:
            d.kill()


def _daemon_args(tmp_path, config):
    env = {**os.environ, "TORRENTCORE_STATE_DIR": str(tmp_path / "state")}
    return [sys.executable, "-m", "torrentcore", "daemon", "--config-dir", str(config), "--rpc-port", "0",
            "--peer-port", "0", "--no-dht"], env


def _daemons_once(tmp_path, configs, timeout=60):
    """Start a daemon on each config folder at once (they all should refuse to start); their results."""
    procs = []
    for config in configs:
        args, env = _daemon_args(tmp_path, config)
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return results


def _daemon_once(tmp_path, config, timeout=30):
    return _daemons_once(tmp_path, [config], timeout)[0]


def _one_line(res, *words):
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_bad_databases_are_refused_with_one_line_and_never_reset(tmp_path):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "torrents.db").write_bytes(b"this is not an SQLite database, but it is someone's data" * 100)

    newer = tmp_path / "newer"
    newer.mkdir()
    db = sqlite3.connect(newer / "torrents.db")
    db.execute("CREATE TABLE future (x)")
    db.execute("PRAGMA user_version=99")
    db.commit()
    db.close()

    linked = tmp_path / "linked"
    linked.mkdir()
    (tmp_path / "elsewhere.db").write_bytes(b"")
    os.symlink(tmp_path / "elsewhere.db", linked / "torrents.db")
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / "torrents.db")
    wal = tmp_path / "wal"
    wal.mkdir()
    os.symlink(tmp_path / "elsewhere.db", wal / "torrents.db-wal")

    results = _daemons_once(tmp_path, [corrupt, newer, linked, fifo, wal])
    for res, words in zip(results, ("cannot be read", "schema version 99", "symbolic link", "FIFO", "symbolic link")):
        _one_line(res, words)
    assert (corrupt / "torrents.db").read_bytes().startswith(b"this is not")
    assert sqlite3.connect(newer / "torrents.db").execute("PRAGMA user_version").fetchone()[0] == 99
    assert (tmp_path / "elsewhere.db").read_bytes() == b""


def test_old_schema_is_migrated(tmp_path):
    from torrentcore.daemon.database import MIGRATIONS, SCHEMA_VERSION, Database

    path = tmp_path / "torrents.db"
    db = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        db.execute(statement)
    db.execute("INSERT INTO torrents (info_hash, name, download_dir) VALUES ('ab', 'old', '/x')")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    migrated = Database(str(path))
    rows = migrated.torrents()
    migrated.close()
    assert [(r.name, r.activity_date) for r in rows] == [("old", 0)]
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_second_daemon_on_the_same_folder_refuses(tmp_path):
    first = DaemonProcess(tmp_path / "one")
    try:
        res = _daemon_once(tmp_path, first.config_dir)
        _one_line(res, "another torrentcore daemon", str(first.process.pid))
        assert first.returncode is None
        first.rpc("session-close")  # the RPC's way to stop it: exit 0, as SIGTERM
        assert first.process.wait(60) == 0
    finally:
        first.kill()
