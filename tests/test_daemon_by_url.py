"""torrent-add by URL and the torrent-get fields availability, secondsDownloading and secondsSeeding.

Debian's ``transmission-remote`` (3.00) adds a .torrent by its http URL (served by Python's http.server
in a subprocess, tests/torrent_url_server.py) to ``torrentcore daemon``; a rate-limited libtorrent seeder
then connects to the daemon. Mid-download, ``availability`` says -1 for the pieces the ``pieces`` bitfield
has and 1 (the seeder) for the others; afterwards the seconds downloading and seeding are counted and
kept across a restart. Bad URLs are one-line RPC errors, torrent-add's ``cookies`` are sent;
:func:`fetch_torrent`'s bounds are checked on the same server.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest
from daemon_harness import DaemonProcess, require_transmission_remote
from realpeers import LOCALHOST, LibtorrentPeer, make_payload, make_torrent

from torrentcore.daemon.torrent_url import TorrentUrlError, fetch_torrent

pytestmark = pytest.mark.timeout(240)
#: One daemon for the module; the tests build on its torrent, in order.
SHARD_WHOLE_MODULE = True
#: Seeder upload limit (bytes/s): a 2 MB download takes several seconds, so it is seen half way.
SEED_RATE = 300_000
SIZE = 2_000_000
PIECE = 32768
SERVER = str(Path(__file__).with_name("torrent_url_server.py"))


class Setup:
    def __init__(self, root: Path) -> None:
        self.root = root
        files = root / "served"
        files.mkdir()
        self.payload = make_payload(root / "seeds", SIZE, seed=5, name="fetched")
        self.data, ih = make_torrent(self.payload, trackers=[], piece_length=PIECE, out=files / "fetched.torrent")
        self.hash = ih.hex()
        (files / "not-a-torrent.torrent").write_bytes(b"<html>a login page</html>")
        self.server = subprocess.Popen([sys.executable, SERVER, str(files)], stdout=subprocess.PIPE,
                                       stdin=subprocess.DEVNULL, text=True)
        self.base = f"http://{LOCALHOST}:{int(self.server.stdout.readline())}"
        self.seeder = LibtorrentPeer(name="seeder", upload_rate_limit=SEED_RATE, ignore_limits_on_local_network=False)
        self.seeder.add_torrent(self.data, root / "seeds", seed=True)
        self.daemon = DaemonProcess(root / "d")

    def close(self) -> None:
        self.daemon.kill()
        self.seeder.close()
        self.server.kill()
        self.server.wait(10)
        self.server.stdout.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    require_transmission_remote()
    s = Setup(tmp_path_factory.mktemp("by-url"))
    try:
        yield s
    finally:
        s.close()


def _has(bitfield: bytes, i: int) -> bool:
    return bool(bitfield[i // 8] & (0x80 >> (i % 8)))


def test_transmission_remote_adds_by_url_and_availability_counts_the_seeder(setup):
    d = setup.daemon
    out = d.remote("-a", f"{setup.base}/redirect/fetched.torrent")
    assert "success" in out, out
    (t,) = d.rpc("torrent-get", fields=["id", "hashString", "name", "pieceCount"])["torrents"]
    assert (t["hashString"], t["name"], t["pieceCount"]) == (setup.hash, "fetched", -(-SIZE // PIECE))
    assert d.rpc("torrent-get", fields=["availability"])["torrents"][0]["availability"] == [0] * t["pieceCount"]
    setup.seeder.connect_peer(LOCALHOST, d.peer_port())
    n = t["pieceCount"]
    half = d.wait_torrent(t["id"], lambda x: 2 <= sum(a == -1 for a in x["availability"]) <= n - 2, 60,
                          "availability", "pieces")
    bitfield = base64.b64decode(half["pieces"])
    assert [a == -1 for a in half["availability"]] == [_has(bitfield, i) for i in range(n)]
    assert {a for a in half["availability"] if a != -1} == {1}  # one peer, the seeder, has every piece
    done = d.wait_torrent(t["id"], lambda x: x["percentDone"] == 1, 90, "percentDone", "availability",
                          "secondsDownloading")
    assert done["availability"] == [-1] * n
    assert done["secondsDownloading"] >= 1  # a few seconds at SEED_RATE
    seeding = d.wait_torrent(t["id"], lambda x: x["secondsSeeding"] >= 2, 30, "secondsSeeding",
                             "secondsDownloading")
    assert seeding["secondsDownloading"] >= done["secondsDownloading"]
    info = d.remote("-t", str(t["id"]), "-i")  # transmission-remote 3.00 shows both when they are above 0
    assert "Downloading Time:" in info and "Seeding Time:" in info, info


def test_the_seconds_are_kept_across_a_restart(setup):
    d = setup.daemon
    (before,) = d.rpc("torrent-get", fields=["id", "secondsDownloading", "secondsSeeding"])["torrents"]
    assert d.terminate() == 0
    d.start()
    (after,) = d.rpc("torrent-get", fields=["id", "secondsDownloading", "secondsSeeding"])["torrents"]
    assert after["secondsDownloading"] == before["secondsDownloading"]
    assert after["secondsSeeding"] >= before["secondsSeeding"] >= 2


def test_urls_that_give_no_torrent_are_one_line_errors(setup):
    d = setup.daemon
    cases = {
        f"{setup.base}/files/missing.torrent": "HTTP 404",
        f"{setup.base}/files/not-a-torrent.torrent": "invalid or corrupt torrent file",
        f"{setup.base}/loop": "more than 5 redirects",
        f"http://{LOCALHOST}:1/x.torrent": "connection refused",
        f"{setup.base}/cookie/fetched.torrent": "HTTP 403",  # no cookies given
    }
    for url, expected in cases.items():
        answer = d.post({"method": "torrent-add", "arguments": {"filename": url}}).json()
        assert expected in answer["result"] and "\n" not in answer["result"], (url, answer)
        assert url in answer["result"] or expected.startswith("invalid"), answer
    # torrent-add's cookies go with the request: the same torrent again, a duplicate (result success).
    answer = d.post({"method": "torrent-add", "arguments": {"filename": f"{setup.base}/cookie/fetched.torrent",
                                                            "cookies": "theme=dark; session=open"}}).json()
    assert answer["result"] == "success" and answer["arguments"]["torrent-duplicate"]["hashString"] == setup.hash
    out = d.remote("-a", f"{setup.base}/files/missing.torrent", check=False)
    assert "HTTP 404" in out, out
    assert len(d.rpc("torrent-get", fields=["id"])["torrents"]) == 1  # nothing added


def test_fetch_torrent_is_bounded_in_size_and_time(setup):
    assert fetch_torrent(f"{setup.base}/files/fetched.torrent") == setup.data
    small = len(setup.data) - 1
    with pytest.raises(TorrentUrlError, match=f"is {len(setup.data):,} bytes, more than {small:,}"):
        fetch_torrent(f"{setup.base}/files/fetched.torrent", max_bytes=small)  # told by Content-Length
    with pytest.raises(TorrentUrlError, match="is more than 100,000 bytes"):
        fetch_torrent(f"{setup.base}/stream/10000000", max_bytes=100_000)  # no length: counted while read
    with pytest.raises(TorrentUrlError, match="no answer within 1 s"):
        fetch_torrent(f"{setup.base}/stall", timeout=1.0)
    with pytest.raises(TorrentUrlError, match="timed out"):
        fetch_torrent(f"{setup.base}/stall", socket_timeout=0.5)
    with pytest.raises(TorrentUrlError, match="must be one line"):
        fetch_torrent(f"{setup.base}/cookie/fetched.torrent", cookies="session=open\r\nX-Injected: 1")


def test_stored_seconds_that_are_not_counts_read_as_zero():
    from torrentcore.daemon.database import TorrentRow
    from torrentcore.daemon.entry import TorrentEntry

    def seconds(settings: dict) -> list[float]:
        return TorrentEntry(row=TorrentRow("ab" * 20, "n", "/nowhere", settings=settings), handle=None).seconds

    assert seconds({}) == [0.0, 0.0]
    assert seconds({"secondsDownloading": 5, "secondsSeeding": 7.5}) == [5.0, 7.5]
    assert seconds({"secondsDownloading": "5", "secondsSeeding": -3}) == [0.0, 0.0]
    assert seconds({"secondsDownloading": True, "secondsSeeding": float("nan")}) == [0.0, 0.0]
