"""Where peers came from: tracker, DHT, PEX, incoming, manual (``--peer``), magnet (``x.pe``).

A real download from two libtorrent seeders, one found through opentracker and one given with
``--peer``, shows both sources in the console's plain progress lines and in the JSON ``peer connected``
logs; a torrentcore seeder shows the leecher that dialled it as ``incoming``. ``torrentcore info`` lists
the sources a torrent allows (trackers, DHT and PEX unless private, a magnet's ``x.pe`` peers).
Everything runs on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import json
import shutil

import pytest
from opentracker_fixture import opentracker_factory  # noqa: F401  (fixture "opentracker")
from realpeers import (
    LOCALHOST,
    assert_same_tree,
    make_payload,
    make_torrent,
    peers_fixture,  # noqa: F401  (fixture "peers")
)
from torrentcore_cli import run_cli, torrentcore_factory  # noqa: F401  (fixture "torrentcore")

import torrentcore_plugins.console as console
from torrentcore.hookspec import PeerInfo, ProgressSnapshot

PIECE_LENGTH = 64 * 1024
RUN_TIMEOUT = 40
needs_opentracker = pytest.mark.skipif(shutil.which("opentracker") is None, reason="opentracker is not installed")


def _slow(limit: int) -> dict:
    """libtorrent settings capping its upload on loopback (local peers are exempt by default)."""
    return {"ignore_limits_on_local_network": False, "upload_rate_limit": limit}


def _sources_of(run, port: int) -> set[str]:
    return {e["source"] for e in run.events("peer connected") if e.get("peer") == f"{LOCALHOST}:{port}"}


# --------------------------------------------------------------------------------------------------
# Real downloads
# --------------------------------------------------------------------------------------------------


@needs_opentracker
def test_tracker_and_manual_peers_are_counted_by_source(tmp_path, peers, opentracker, torrentcore):
    size = 6 << 20
    root = make_payload(tmp_path / "seed", size, seed=31, name="sources.bin")
    _data, info_hash = make_torrent(root, [], piece_length=PIECE_LENGTH, out=tmp_path / "untracked.torrent")
    tracker = opentracker([info_hash])
    torrent = tmp_path / "tracked.torrent"
    assert make_torrent(root, [tracker.http_url], piece_length=PIECE_LENGTH, out=torrent)[1] == info_hash
    # One seeder announces to the tracker; the other knows no tracker and is given with --peer.
    announced = peers.libtorrent("announced", **_slow(1_500_000))
    announced.add_torrent(torrent, tmp_path / "seed", seed=True)
    assert announced.wait_announced(timeout=10), peers.describe()
    manual = peers.libtorrent("manual", **_slow(1_500_000))
    manual.add_torrent(tmp_path / "untracked.torrent", tmp_path / "seed", seed=True)

    run = torrentcore.run(torrent, tmp_path / "out", peers=[manual.endpoint])
    rc = run.wait(RUN_TIMEOUT)
    context = f"{run.describe()}\n{peers.describe()}"
    assert rc == 0, context
    assert_same_tree(root, tmp_path / "out" / "sources.bin", context)
    assert _sources_of(run, announced.port) == {"tracker"}, context
    assert _sources_of(run, manual.port) == {"manual"}, context
    # The plain progress lines (one a second) count connected peers by source.
    lines = [line for line in run.stdout.splitlines() if "2 peers (" in line]
    assert any("2 peers (tracker 1, manual 1; 2 seeds)" in line for line in lines), context


def test_a_seeder_counts_the_leecher_that_dialled_it_as_incoming(tmp_path, peers, torrentcore):
    root = make_payload(tmp_path / "seed", 3 << 20, seed=32, name="in.bin")
    torrent = tmp_path / "in.torrent"
    make_torrent(root, [], piece_length=PIECE_LENGTH, out=torrent)
    seed = torrentcore.seed(torrent, tmp_path / "seed", "--max-upload-rate", "1M")
    port = seed.wait_listening()
    leecher = peers.libtorrent("leecher")
    leecher.add_torrent(torrent, tmp_path / "leech")
    leecher.connect_peer(LOCALHOST, port)
    assert leecher.wait_finished(30), f"{peers.describe()}\n{seed.describe()}"
    assert_same_tree(root, tmp_path / "leech" / "in.bin")
    connected = seed.events("peer connected")
    assert connected and connected[0]["incoming"] is True, seed.describe()
    # Once it left, the seeder may dial its listening port back: an address it learnt from an incoming peer.
    assert {e["source"] for e in connected} == {"incoming"}, seed.describe()
    assert any("1 peer (incoming 1)" in line for line in seed.stdout.splitlines()), seed.describe()


# --------------------------------------------------------------------------------------------------
# torrentcore info
# --------------------------------------------------------------------------------------------------


def test_info_shows_the_sources_a_torrent_allows(tmp_path):
    root = make_payload(tmp_path, 100_000, name="x.bin")
    public = tmp_path / "public.torrent"
    make_torrent(root, ["http://127.0.0.1:1/announce", "udp://127.0.0.1:2/announce"], piece_length=16384, out=public)
    private = tmp_path / "private.torrent"
    make_torrent(root, ["http://127.0.0.1:1/announce"], piece_length=16384, private=True, out=private)
    trackerless = tmp_path / "none.torrent"
    make_torrent(root, [], piece_length=16384, out=trackerless)

    text = run_cli(["info", str(public)]).stdout
    assert "peer sources:\n  trackers:   2 (listed above)\n  DHT:        allowed\n  PEX:        allowed\n" in text, text
    text = run_cli(["info", str(private)]).stdout
    assert "  DHT:        no: private torrent\n  PEX:        no: private torrent\n" in text, text
    text = run_cli(["info", str(trackerless)]).stdout
    assert "  trackers:   none\n" in text, text

    data = json.loads(run_cli(["info", str(private), "--json"]).stdout)
    assert data["peer_sources"] == {"trackers": ["http://127.0.0.1:1/announce"], "dht": "no: private torrent",
                                    "pex": "no: private torrent", "magnet_peers": []}


def test_info_shows_the_peers_a_magnet_link_names():
    link = ("magnet:?xt=urn:btih:08ada5a7a6183aae1e09d831df6748d566095a10&dn=Sintel"
            "&tr=udp%3A%2F%2F127.0.0.1%3A6969&x.pe=10.0.0.1:6881&x.pe=%5B2001:db8::1%5D:51413")
    text = run_cli(["info", link]).stdout
    assert "  x.pe peers: 10.0.0.1:6881 [2001:db8::1]:51413\n" in text, text
    assert "  DHT:        allowed unless the metadata says private\n" in text, text
    data = json.loads(run_cli(["info", link, "--json"]).stdout)
    assert data["peer_sources"]["magnet_peers"] == ["10.0.0.1:6881", "[2001:db8::1]:51413"], data
    assert data["peer_sources"]["trackers"] == ["udp://127.0.0.1:6969"], data


# --------------------------------------------------------------------------------------------------
# The console and the plugin contract
# --------------------------------------------------------------------------------------------------


def _snap(**kw) -> ProgressSnapshot:
    base = dict(name="ubuntu.iso", state="downloading", total_bytes=100 * 2**20, have_bytes=45 * 2**20,
                pieces_done=45, num_pieces=100, download_rate=12.5 * 2**20, upload_rate=2**20, peers=5, seeds=3,
                eta=72.0, peer_sources={"pex": 1, "incoming": 1, "tracker": 3})
    base.update(kw)
    return ProgressSnapshot(**base)


def test_console_lines_count_peers_by_source():
    assert "5 peers (tracker 3, pex 1, incoming 1; 3 seeds)" in console.status_line(_snap())
    seeding = _snap(state="seeding", have_bytes=100 * 2**20, pieces_done=100, peers=2,
                    peer_sources={"incoming": 2})
    assert console.status_line(seeding).endswith("2 peers (incoming 2)")
    assert "8 peers (3 seeds)" in console.status_line(_snap(peers=8, peer_sources={}))  # nothing to say
    # On a terminal the sources are shown only where they fit; an 80-column line never grows past 79.
    assert "5 peers (tracker 3, pex 1, incoming 1; 3 seeds)" in console.status_line(_snap(), width=200)
    for width in (80, 100):
        narrow = console.status_line(_snap(), width=width)
        assert len(narrow) <= width - 1 and "tracker" not in narrow, narrow
    assert "5 peers" in console.status_line(_snap(), width=100)


def test_the_plugin_contract_documents_sources():
    assert PeerInfo(address=("::1", 1), source="pex").source == "pex"
    assert ProgressSnapshot(name="x", state="downloading", total_bytes=1, have_bytes=0, pieces_done=0,
                            num_pieces=1).peer_sources == {}
    assert "incoming" in (PeerInfo.__doc__ or "") and "peer_sources" in (ProgressSnapshot.__dataclass_fields__)
