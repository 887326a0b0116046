"""``torrentcore daemon`` driven by real Transmission clients while it downloads from a real libtorrent seeder.

One daemon, one libtorrent seeder and one opentracker for the whole module (the tests run in order and
build on each other's torrents): Debian's ``transmission-remote`` adds by file and by magnet link, lists,
shows info and files, stops and starts, selects files (-G/-g), sets limits (-d/-u, per torrent, -as),
moves data, removes (with and without the data); PyPI's ``transmission-rpc`` reads every field and gets
a malformed torrent refused with an RPC error, never an HTTP 500.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import pytest
from daemon_harness import DaemonProcess, require_transmission_remote
from opentracker_fixture import OpenTracker, opentracker_available
from realpeers import LibtorrentPeer, assert_same_tree, make_payload, make_torrent, wait_until

pytestmark = pytest.mark.timeout(240)
#: The tests build on each other's torrents (one daemon for the module): one shard runs them all, in order.
SHARD_WHOLE_MODULE = True

#: Seeder upload limit (bytes/s): slow enough that a download is seen in progress, fast enough for CI.
SEED_RATE = 4_000_000


class Swarm:
    """The module's tracker, seeder, payloads and daemon."""

    def __init__(self, root):
        self.root = root
        self.tracker = OpenTracker(root / "tracker").start()
        seeds = root / "seeds"
        specs = {"multi": {"a.bin": 300_000, "sub/b.bin": 600_000, "c.bin": 200_000},
                 "single": 1_000_000, "magnetic": 500_000}
        self.payload = {}
        self.torrent = {}
        self.hash = {}
        self.seeder = LibtorrentPeer(name="seeder", upload_rate_limit=SEED_RATE, ignore_limits_on_local_network=False)
        for i, (name, spec) in enumerate(specs.items()):
            self.payload[name] = make_payload(seeds, spec, seed=i, name=name)
            path = root / f"{name}.torrent"
            data, ih = make_torrent(self.payload[name], trackers=[self.tracker.http_url], piece_length=32768, out=path)
            self.torrent[name] = path
            self.hash[name] = ih.hex()
            self.tracker.add(ih)
            self.seeder.add_torrent(data, seeds, seed=True)
        self.daemon = DaemonProcess(root / "d")

    def close(self):
        self.daemon.kill()
        self.seeder.close()
        self.tracker.stop()


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    require_transmission_remote()
    if not opentracker_available():
        pytest.skip("opentracker is not installed")
    s = Swarm(tmp_path_factory.mktemp("daemon-remote"))
    try:
        yield s
    finally:
        s.close()


def _ids(listing: str) -> dict[str, int]:
    """Name -> id from ``transmission-remote -l``."""
    out = {}
    for line in listing.splitlines()[1:-1]:
        m = re.match(r"\s*(\d+)\*?\s+.*\s(\S+)$", line)
        if m:
            out[m.group(2)] = int(m.group(1))
    return out


def _done(t: dict) -> bool:
    return t["percentDone"] == 1 and t["status"] in (5, 6)


def test_session_id_handshake(swarm):
    import requests

    r = requests.post(swarm.daemon.url, data='{"method":"session-get"}', timeout=10)
    assert r.status_code == 409 and r.headers["X-Transmission-Session-Id"]
    r2 = requests.post(swarm.daemon.url, data='{"method":"session-get"}', timeout=10,
                       headers={"X-Transmission-Session-Id": "wrong"})
    assert r2.status_code == 409
    answer = swarm.daemon.post({"method": "no-such-method"}).json()
    assert answer["result"] == "method name not recognized"
    assert swarm.daemon.rpc("session-get")["rpc-version"] == 17


def test_hostile_torrent_add(swarm):
    """A FIFO, a missing file, garbage metainfo: an RPC error result each, at once (a FIFO is never opened)."""
    fifo = swarm.root / "pipe.torrent"
    os.mkfifo(fifo)
    for args, words in (({"filename": str(fifo)}, "FIFO"), ({"filename": str(swarm.root / "none")}, "does not exist"),
                        ({"metainfo": "!!!not base64"}, "invalid or corrupt"),
                        ({"metainfo": base64.b64encode(b"x" * 1000).decode()}, "invalid or corrupt"),
                        ({"filename": "magnet:?xt=urn:btih:nothex"}, "invalid or corrupt"), ({}, "no filename")):
        r = swarm.daemon.post({"method": "torrent-add", "arguments": args})
        assert r.status_code == 200
        result = r.json()["result"]
        assert result != "success" and words in result, (args, result)
    assert swarm.daemon.rpc("torrent-get", fields=["id"])["torrents"] == []


def test_add_by_file_and_by_magnet_then_list(swarm):
    d = swarm.daemon
    d.remote("-a", str(swarm.torrent["single"]))
    magnet = f"magnet:?xt=urn:btih:{swarm.hash['magnetic']}&dn=magnetic&tr={swarm.tracker.http_url}"
    d.remote("-a", magnet)
    ids = _ids(d.remote("-l"))
    assert set(ids) >= {"single", "magnetic"}, ids
    for name in ("single", "magnetic"):
        d.wait_torrent(ids[name], _done, 90, "percentDone", "status")
    assert_same_tree(swarm.payload["single"], d.download_dir / "single")
    assert_same_tree(swarm.payload["magnetic"], d.download_dir / "magnetic")
    listing = d.remote("-l")
    assert re.search(r"100%.*(Seeding|Idle).*single", listing), listing
    info = d.remote("-t", str(ids["magnetic"]), "-i")
    assert swarm.hash["magnetic"] in info and "Percent Done: 100%" in info, info
    assert f"Location: {d.download_dir}" in info


def test_file_selection_with_G_and_g(swarm):
    d = swarm.daemon
    # Added stopped (paused) so that file 1 can be deselected before anything is fetched.
    data = base64.b64encode(swarm.torrent["multi"].read_bytes()).decode()
    tid = d.rpc("torrent-add", metainfo=data, paused=True)["torrent-added"]["id"]
    files = d.remote("-t", str(tid), "-f")
    assert "multi/sub/b.bin" in files and "3 files" in files, files
    names = [f["name"] for f in d.torrent(tid, "files")["files"]]
    skipped = names.index("multi/sub/b.bin")
    d.remote("-t", str(tid), "-G", str(skipped))
    assert d.torrent(tid, "wanted")["wanted"][skipped] == 0
    d.remote("-t", str(tid), "-s")
    t = d.wait_torrent(tid, _done, 90, "percentDone", "status", "sizeWhenDone", "totalSize", "fileStats")
    assert t["sizeWhenDone"] < t["totalSize"]
    assert t["fileStats"][skipped]["wanted"] is False
    for rel in ("a.bin", "c.bin"):
        assert (d.download_dir / "multi" / rel).read_bytes() == (swarm.root / "seeds" / "multi" / rel).read_bytes()
    assert t["fileStats"][skipped]["bytesCompleted"] < 600_000
    d.remote("-t", str(tid), "-g", str(skipped))
    d.wait_torrent(tid, lambda t: _done(t) and t["sizeWhenDone"] == t["totalSize"], 90, "percentDone", "status",
                   "sizeWhenDone", "totalSize")
    assert_same_tree(swarm.payload["multi"], d.download_dir / "multi")


def test_stop_and_start(swarm):
    d = swarm.daemon
    tid = _ids(d.remote("-l"))["single"]
    d.remote("-t", str(tid), "-S")
    d.wait_torrent(tid, lambda t: t["status"] == 0, 20, "status")
    listing = d.remote("-l")
    assert re.search(r"Stopped\s+single", listing), listing
    d.remote("-t", str(tid), "-s")
    d.wait_torrent(tid, lambda t: t["status"] == 6, 30, "status")


def test_verify(swarm):
    d = swarm.daemon
    tid = _ids(d.remote("-l"))["single"]

    def checks() -> int:
        return sum(1 for line in d.stderr().splitlines()
                   if '"checking existing data"' in line and '"torrent": "single"' in line)

    before = checks()
    d.remote("-t", str(tid), "-v")
    # The data is hashed again (the resume record is not trusted), then it seeds on.
    assert wait_until(lambda: checks() > before, 30)
    d.wait_torrent(tid, lambda t: t["status"] == 6 and t["percentDone"] == 1, 60, "status", "percentDone")


def test_limits_alt_speed_and_per_torrent(swarm):
    d = swarm.daemon
    d.remote("-d", "300", "-u", "150")
    s = d.rpc("session-get")
    assert (s["speed-limit-down"], s["speed-limit-down-enabled"], s["speed-limit-up"], s["speed-limit-up-enabled"]) \
        == (300, True, 150, True)
    d.remote("-as")
    assert d.rpc("session-get")["alt-speed-enabled"] is True
    d.remote("-AS", "-D", "-U")
    s = d.rpc("session-get")
    assert (s["alt-speed-enabled"], s["speed-limit-down-enabled"], s["speed-limit-up-enabled"]) == (False,) * 3
    tid = _ids(d.remote("-l"))["single"]
    d.remote("-t", str(tid), "-d", "200", "-u", "100")
    t = d.torrent(tid, "downloadLimit", "downloadLimited", "uploadLimit", "uploadLimited")
    assert t == {"id": tid, "downloadLimit": 200, "downloadLimited": True, "uploadLimit": 100, "uploadLimited": True}
    assert "Download Limit: 200" in d.remote("-t", str(tid), "-i")


def test_move_data(swarm):
    d = swarm.daemon
    tid = _ids(d.remote("-l"))["magnetic"]
    target = swarm.root / "moved"
    d.remote("-t", str(tid), "--move", str(target))
    t = d.wait_torrent(tid, lambda t: t["downloadDir"] == str(target) and _done(t), 60, "downloadDir", "percentDone",
                       "status")
    assert_same_tree(swarm.payload["magnetic"], target / "magnetic")
    assert not (d.download_dir / "magnetic").exists()
    assert t["downloadDir"] == str(target)
    # The metadata the engine saved beside the data (magnetic.torrent) moved with it.
    assert (target / "magnetic.torrent").exists() and not (d.download_dir / "magnetic.torrent").exists()


def test_a_move_that_fails_half_way_puts_the_files_back(swarm):
    d = swarm.daemon
    tid = _ids(d.remote("-l"))["multi"]
    names = [f["name"] for f in d.torrent(tid, "files")["files"]]
    target = swarm.root / "occupied"
    (target / names[-1]).parent.mkdir(parents=True)
    (target / names[-1]).write_bytes(b"the user's own file")  # the last file cannot be moved there
    r = d.post({"method": "torrent-set-location", "arguments": {"ids": [tid], "location": str(target), "move": True}})
    assert "already exists" in r.json()["result"]
    t = d.wait_torrent(tid, _done, 60, "percentDone", "status", "downloadDir")
    assert t["downloadDir"] == str(d.download_dir)
    assert_same_tree(swarm.payload["multi"], d.download_dir / "multi")
    assert (target / names[-1]).read_bytes() == b"the user's own file"
    assert [p.name for p in (target / "multi").rglob("*") if p.is_file()] == [os.path.basename(names[-1])]


def test_rename_path_on_disk_then_verify_and_hostile_names_refused(swarm):
    """torrent-rename-path from PyPI's transmission-rpc (Debian's transmission-remote 3.00 has no --rename):
    a folder and a file renamed on disk, byte-exact, shown by transmission-remote -f, verified and seeding
    after; names with a separator or "..", and a path through a planted link, are refused, nothing moved."""
    transmission_rpc = pytest.importorskip("transmission_rpc")
    d = swarm.daemon
    tid = _ids(d.remote("-l"))["multi"]
    d.wait_torrent(tid, _done, 60, "percentDone", "status")
    client = transmission_rpc.Client(host="127.0.0.1", port=d.port, timeout=30)
    assert client.rename_torrent_path(tid, "multi/sub", "renamed") == ("multi/sub", "renamed")
    r = d.post({"method": "torrent-rename-path", "arguments": {"ids": [tid], "path": "multi/c.bin", "name": "c2.bin"}})
    assert r.json() == {"result": "success", "arguments": {"path": "multi/c.bin", "name": "c2.bin", "id": tid}}
    top, seeds = d.download_dir / "multi", Path(swarm.payload["multi"])
    assert (top / "renamed" / "b.bin").read_bytes() == (seeds / "sub" / "b.bin").read_bytes()
    assert (top / "c2.bin").read_bytes() == (seeds / "c.bin").read_bytes()
    assert not (top / "sub").exists() and not (top / "c.bin").exists()
    files = d.remote("-t", str(tid), "-f")
    assert "multi/renamed/b.bin" in files and "multi/c2.bin" in files and "multi/sub" not in files, files
    assert sorted(f["name"] for f in d.torrent(tid, "files")["files"]) == \
        ["multi/a.bin", "multi/c2.bin", "multi/renamed/b.bin"]
    d.wait_torrent(tid, _done, 60, "percentDone", "status")
    d.remote("-t", str(tid), "-v")  # every piece hashed again from the renamed files
    t = d.wait_torrent(tid, lambda t: _done(t) and t["status"] == 6, 60, "percentDone", "status", "haveValid")
    assert t["haveValid"] == 1_100_000
    # It seeds from the renamed files: a libtorrent leecher, with no tracker, told only of the daemon.
    data, ih = make_torrent(str(seeds), trackers=[], piece_length=32768)
    assert ih.hex() == swarm.hash["multi"]
    with LibtorrentPeer(name="leecher") as leecher:
        leecher.add_torrent(data, swarm.root / "leech")
        leecher.connect_peer("127.0.0.1", d.peer_port())
        assert leecher.wait_finished(60), leecher.describe()
        served = {t["port"]: t["downloaded"] for t in leecher.transfers()}
        assert served.get(d.peer_port(), 0) > 0 and set(served) == {d.peer_port()}, served
    assert_same_tree(seeds, swarm.root / "leech" / "multi")

    for path, name in [("multi/a.bin", "../evil"), ("multi/a.bin", "x/y"), ("multi/a.bin", ".."),
                       ("multi/a.bin", "c2.bin"), ("multi/nothing", "z"), ("multi", "")]:
        r = d.post({"method": "torrent-rename-path", "arguments": {"ids": [tid], "path": path, "name": name}})
        assert r.status_code == 200 and r.json()["result"] != "success", (path, name, r.text)
    assert not (swarm.root / "evil").exists() and (top / "a.bin").is_file()
    # A link we did not create where the torrent's folder was: the rename through it is refused.
    (top / "renamed").rename(top / "real")
    (top / "renamed").symlink_to(top / "real")
    r = d.post({"method": "torrent-rename-path", "arguments": {"ids": [tid], "path": "multi/renamed/b.bin",
                                                               "name": "x.bin"}})
    assert "is a symlink" in r.json()["result"] or "link" in r.json()["result"], r.text
    assert (top / "real" / "b.bin").is_file() and not (top / "real" / "x.bin").exists()
    (top / "renamed").unlink()
    (top / "real").rename(top / "renamed")
    d.remote("-t", str(tid), "-v")
    d.wait_torrent(tid, _done, 60, "percentDone", "status")
    # The renames are kept: a new daemon on the same config has the new names and finds the data there.
    assert d.terminate() == 0, d.stderr()[-2000:]
    d.start()
    assert sorted(f["name"] for f in d.torrent(tid, "files")["files"]) == \
        ["multi/a.bin", "multi/c2.bin", "multi/renamed/b.bin"]
    d.wait_torrent(tid, _done, 60, "percentDone", "status")
    # Put the names back, so that the tests after this one find the torrent as the seeder has it.
    assert client.rename_torrent_path(tid, "multi/renamed", "sub") == ("multi/renamed", "sub")
    assert client.rename_torrent_path(tid, "multi/c2.bin", "c.bin") == ("multi/c2.bin", "c.bin")
    d.wait_torrent(tid, _done, 60, "percentDone", "status")
    assert_same_tree(seeds, top)


def test_transmission_rpc_client_reads_everything_and_malformed_is_refused(swarm):
    transmission_rpc = pytest.importorskip("transmission_rpc")
    client = transmission_rpc.Client(host="127.0.0.1", port=swarm.daemon.port, timeout=30)
    torrents = {t.name: t for t in client.get_torrents()}
    assert set(torrents) >= {"single", "magnetic", "multi"}
    multi = client.get_torrent(torrents["multi"].id)
    assert multi.hash_string == swarm.hash["multi"]
    assert multi.progress == 100.0 and multi.total_size == 1_100_000
    assert len(multi.get_files()) == 3 and multi.piece_count == len(base64.b64decode(multi.fields["pieces"])) * 8 \
        - (-multi.piece_count % 8)
    assert multi.tracker_stats and multi.trackers[0].announce == swarm.tracker.http_url
    assert multi.magnet_link.startswith(f"magnet:?xt=urn:btih:{swarm.hash['multi']}")
    session = client.get_session()
    assert session.rpc_version == 17
    with pytest.raises(transmission_rpc.TransmissionError) as info:
        client.add_torrent(b"d4:infod4:name1:xee")  # bencoded, but not a torrent
    assert "invalid or corrupt torrent" in str(info.value)
    table = swarm.daemon.rpc("torrent-get", fields=["id", "name"], format="table")["torrents"]
    assert table[0] == ["id", "name"] and len(table) == 1 + len(torrents)


def test_json_rpc_2(swarm):
    r = swarm.daemon.post({"jsonrpc": "2.0", "method": "torrent_get", "params": {"fields": ["id", "hash_string",
                                                                                           "percent_done"]}, "id": 5})
    answer = r.json()
    assert answer["id"] == 5 and answer["jsonrpc"] == "2.0"
    assert {t["hash_string"] for t in answer["result"]["torrents"]} >= {swarm.hash["single"]}
    r = swarm.daemon.post({"jsonrpc": "2.0", "method": "torrent_get", "id": 7,
                           "params": {"fields": ["id", "hash_string"], "format": "table"}})
    assert r.json()["result"]["torrents"][0] == ["id", "hash_string"]
    r = swarm.daemon.post([{"jsonrpc": "2.0", "method": "session_get", "params": {"fields": ["rpc_version"]}, "id": 8},
                           {"jsonrpc": "2.0", "method": "session_stats"}])  # a batch; the notification gets no answer
    assert [a["result"] for a in r.json()] == [{"rpc_version": 17}]
    r = swarm.daemon.post({"jsonrpc": "2.0", "method": "no_such", "id": 6})
    assert r.json()["error"]["code"] == -32601


def test_remove_keeps_data_and_remove_and_delete_deletes_it(swarm):
    d = swarm.daemon
    ids = _ids(d.remote("-l"))
    d.remote("-t", str(ids["single"]), "-r")
    d.remote("-t", str(ids["multi"]), "--remove-and-delete")
    assert wait_until(lambda: set(_ids(d.remote("-l"))) == {"magnetic"}, 20)
    assert (d.download_dir / "single").read_bytes() == open(swarm.payload["single"], "rb").read()
    assert wait_until(lambda: not (d.download_dir / "multi").exists(), 10), os.listdir(d.download_dir / "multi")


def test_add_with_folder_and_unwanted_file_then_restart_keeps_everything(swarm):
    """torrent-add's download-dir and files-unwanted; then SIGTERM and a new daemon on the same config:
    the magnet-added torrent (its metadata now in the database) and the moved one come back as they were."""
    transmission_rpc = pytest.importorskip("transmission_rpc")
    d = swarm.daemon
    client = transmission_rpc.Client(host="127.0.0.1", port=d.port, timeout=30)
    folder = swarm.root / "elsewhere"
    added = client.add_torrent(swarm.torrent["multi"].read_bytes(), download_dir=str(folder), files_unwanted=[1])
    t = d.wait_torrent(added.id, _done, 60, "percentDone", "status", "wanted", "downloadDir")
    assert t["wanted"] == [1, 0, 1] and t["downloadDir"] == str(folder)
    assert (folder / "multi" / "a.bin").read_bytes() == (swarm.root / "seeds" / "multi" / "a.bin").read_bytes()
    before = {x["hashString"]: x for x in d.rpc("torrent-get", fields=["id", "hashString", "downloadDir", "wanted",
                                                                       "addedDate", "name"])["torrents"]}
    assert d.terminate() == 0, d.stderr()[-2000:]
    trusted = d.stderr().count('"resume record trusted"')
    d.start()
    after = {x["hashString"]: x for x in d.rpc("torrent-get", fields=["id", "hashString", "downloadDir", "wanted",
                                                                      "addedDate", "name"])["torrents"]}
    assert after == before
    for t in after.values():
        d.wait_torrent(t["id"], _done, 60, "percentDone", "status")
    assert after[swarm.hash["magnetic"]]["name"] == "magnetic"
    # Resumed as `run` does: every resume record written at the clean stop is trusted, no data re-hashed.
    assert d.stderr().count('"resume record trusted"') - trusted == len(after)
    d.remote("-t", str(after[swarm.hash["magnetic"]]["id"]), "--remove-and-delete")
    target = swarm.root / "moved"
    assert wait_until(lambda: not (target / "magnetic").exists() and not (target / "magnetic.torrent").exists(), 20)
