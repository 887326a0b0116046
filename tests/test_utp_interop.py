"""uTP (BEP 29) against real clients on 127.0.0.1, byte-exact both ways: a uTP-only libtorrent seeder
downloaded by torrentcore, a uTP-only libtorrent leecher downloading from torrentcore, and torrentcore to
torrentcore over uTP. libtorrent with ``enable_outgoing_tcp``/``enable_incoming_tcp`` false closes any TCP
connection, so a finished transfer with it is itself proof of uTP; our ``peer connected`` log says
``transport=utp`` too, and libtorrent's own connect alerts say ``(uTP)``. Between two torrentcores MSE
(RC4) runs over uTP.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from realpeers import (
    LOCALHOST,
    RealPeers,
    assert_same_tree,
    info_hash_of,
    make_payload,
    make_torrent,
    peers_fixture,  # noqa: F401  (fixture "peers")
)
from test_encryption_interop import TransmissionDaemon
from torrentcore_cli import (  # noqa: F401  (fixture "torrentcore")
    TorrentcoreLauncher,
    TorrentcoreProcess,
    torrentcore_factory,
)
from udpproxy import LossyProxy

MiB = 1 << 20
RUN_TIMEOUT = 60
#: libtorrent settings: uTP only, both ways.
LT_UTP_ONLY = {"enable_outgoing_utp": True, "enable_incoming_utp": True,
               "enable_outgoing_tcp": False, "enable_incoming_tcp": False}


def _payload(tmp_path: Path, size: int, seed: int) -> tuple[str, Path]:
    root = make_payload(tmp_path / "seed", size, seed=seed, name="data.bin")
    torrent = tmp_path / "t.torrent"
    make_torrent(root, [], piece_length=64 * 1024, out=torrent)
    return root, torrent


def _finished(run: TorrentcoreProcess, context: str) -> None:
    rc = run.wait(RUN_TIMEOUT)
    full = f"{run.describe()}\n{context}"
    assert rc == 0, full
    summary = run.summary()
    assert summary is not None and summary["verdict"] == "done", full
    assert "Traceback" not in run.stderr, full


def _connect_alerts(peer) -> list[str]:
    """libtorrent's peer_connect_alert lines (each says ``(uTP)`` or ``(TCP)``)."""
    peer.poll()
    return [a for a in peer.alerts if a.startswith("peer_connect_alert")]


def test_download_from_utp_only_libtorrent(tmp_path, peers: RealPeers, torrentcore: TorrentcoreLauncher):
    root, torrent = _payload(tmp_path, 4 * MiB + 4321, seed=151)
    seeder = peers.libtorrent("seeder", **LT_UTP_ONLY)
    seeder.add_torrent(torrent, tmp_path / "seed", seed=True)
    run = torrentcore.run(torrent, tmp_path / "out", peers=[seeder.endpoint])
    _finished(run, peers.describe())
    assert_same_tree(root, tmp_path / "out" / "data.bin", run.describe())
    connected = run.events("peer connected")
    assert connected and all(e["transport"] == "utp" for e in connected), connected
    alerts = _connect_alerts(seeder)
    assert alerts and all("(uTP)" in a for a in alerts), alerts


def test_utp_only_libtorrent_downloads_from_us(tmp_path, peers: RealPeers, torrentcore: TorrentcoreLauncher):
    root, torrent = _payload(tmp_path, 3 * MiB + 999, seed=152)
    seeder = torrentcore.seed(torrent, tmp_path / "seed", "--seed-ratio", "0", "--seed-time", "5", name="seeder")
    port = seeder.wait_listening()
    leecher = peers.libtorrent("leecher", **LT_UTP_ONLY)
    leecher.add_torrent(torrent, tmp_path / "leech")
    leecher.connect_peer(LOCALHOST, port)
    assert leecher.wait_finished(timeout=RUN_TIMEOUT), peers.describe() + seeder.describe()
    assert_same_tree(root, tmp_path / "leech" / "data.bin", seeder.describe())
    connected = seeder.events("peer connected")
    # (Once the leecher is done, the seeder may dial its listening address back: over uTP too.)
    assert connected and all(e["transport"] == "utp" for e in connected), connected
    assert connected[0]["incoming"], connected
    alerts = _connect_alerts(leecher)
    assert alerts and all("(uTP)" in a for a in alerts), alerts
    assert "Traceback" not in seeder.stderr


def test_torrentcore_to_torrentcore_over_utp(tmp_path, torrentcore: TorrentcoreLauncher):
    root, torrent = _payload(tmp_path, 3 * MiB + 77, seed=153)
    seeder = torrentcore.seed(torrent, tmp_path / "seed", "--seed-ratio", "0", "--seed-time", "5",
                              "--transports", "utp", "--encryption", "require", name="seeder")
    port = seeder.wait_listening()
    run = torrentcore.run(torrent, tmp_path / "out", "--transports", "utp", "--encryption", "require",
                          peers=[(LOCALHOST, port)])
    _finished(run, seeder.describe())
    assert_same_tree(root, tmp_path / "out" / "data.bin", run.describe())
    for side, incoming in ((run, False), (seeder, True)):  # (later each may dial the other back, over uTP too)
        connected = side.events("peer connected")
        assert connected and all(e["transport"] == "utp" for e in connected), connected
        assert connected[0]["incoming"] is incoming, connected
    # MSE with RC4 (require on both sides; prefer would choose plaintext after the header, as libtorrent does)
    # runs over uTP unchanged, batched uploads included (torrentcore/peer/upload.py), byte for byte.
    for side in (run, seeder):
        assert all(e["encrypted"] for e in side.events("peer connected")), side.events("peer connected")


def test_download_from_utp_only_libtorrent_through_loss_and_jitter(tmp_path, peers: RealPeers,
                                                                  torrentcore: TorrentcoreLauncher):
    """2 % loss, 1 % duplicates, 30 ± 10 ms delay (reordering) both ways: still byte-exact."""
    root, torrent = _payload(tmp_path, 1 * MiB + 5, seed=154)
    seeder = peers.libtorrent("seeder", **LT_UTP_ONLY)
    seeder.add_torrent(torrent, tmp_path / "seed", seed=True)
    proxy = LossyProxy(seeder.endpoint)
    try:
        run = torrentcore.run(torrent, tmp_path / "out", "--transports", "utp", peers=[proxy.address])
        _finished(run, peers.describe())
    finally:
        proxy.close()
    assert_same_tree(root, tmp_path / "out" / "data.bin", run.describe())
    assert all(e["transport"] == "utp" for e in run.events("peer connected"))


@pytest.mark.skipif(shutil.which("transmission-daemon") is None or shutil.which("transmission-remote") is None,
                    reason="transmission-daemon / transmission-remote are not installed")
def test_download_from_transmission_over_utp(tmp_path, torrentcore: TorrentcoreLauncher):
    """Transmission 3.00 (libutp) with ``utp-enabled``: it cannot turn TCP off, so we dial uTP only
    (``--transports utp``). It unchokes on its 10-second rechoke round, hence the wait."""
    root, torrent = _payload(tmp_path, 1 * MiB + 3, seed=155)
    daemon = TransmissionDaemon(tmp_path / "transmission", encryption=1, utp=True)
    try:
        assert daemon.wait_rpc(), daemon.describe()
        assert daemon.seed(torrent, tmp_path / "seed"), daemon.describe()
        run = torrentcore.run(torrent, tmp_path / "out", "--transports", "utp", peers=[daemon.endpoint])
        _finished(run, daemon.describe())
    finally:
        daemon.stop()
    assert_same_tree(root, tmp_path / "out" / "data.bin", run.describe())
    connected = run.events("peer connected")
    assert connected and all(e["transport"] == "utp" and e["client"].startswith("TR") for e in connected), connected


def test_magnet_link_from_a_utp_only_libtorrent(tmp_path, peers: RealPeers, torrentcore: TorrentcoreLauncher):
    """The metadata (BEP 9) comes over uTP too: a magnet link whose only peer speaks only uTP."""
    root, torrent = _payload(tmp_path, 512 * 1024 + 1, seed=156)
    seeder = peers.libtorrent("seeder", **LT_UTP_ONLY)
    seeder.add_torrent(torrent, tmp_path / "seed", seed=True)
    magnet = f"magnet:?xt=urn:btih:{info_hash_of(torrent).hex()}&x.pe={LOCALHOST}:{seeder.endpoint[1]}"
    run = torrentcore.run(magnet, tmp_path / "out")
    _finished(run, peers.describe())
    assert_same_tree(root, tmp_path / "out" / "data.bin", run.describe())
    assert run.events("metadata received"), run.describe()
