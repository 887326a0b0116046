"""What ``--encryption`` changes besides the handshake: the BEP 10 ``e`` flag (sent and honoured), PEX
``added.f`` 0x01 (sent for peers known to encrypt, remembered from others), the tracker parameters
``supportcrypto`` / ``requirecrypto``, the console's count of encrypted peers and the option itself."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from realpeers import LOCALHOST
from torrentcore_cli import run_cli

from torrentcore import bencode, cli, plugins
from torrentcore.config import TorrentConfig
from torrentcore.hookspec import ProgressSnapshot
from torrentcore.metainfo import parse
from torrentcore.peer import messages as msg
from torrentcore.peer.connection import Connection
from torrentcore.peer.extensions import PEX_FLAG_ENCRYPTION, PEX_FLAG_REACHABLE, PexHandler, encode_pex, parse_pex
from torrentcore.peer.peer import Peer
from torrentcore.ratelimit import TokenBucket
from torrentcore.swarm import ConnectionSlots
from torrentcore.torrent import SessionServices, Torrent
from torrentcore.tracker import AnnounceRequest
from torrentcore.tracker.http import build_announce_url
from torrentcore_plugins.console import status_line


def _torrent(encryption: str = "prefer") -> Torrent:
    """An engine torrent with session services of its own (nothing listens, nothing is dialled)."""
    info = {"name": "x", "piece length": 16384, "length": 10, "pieces": b"\0" * 20}
    meta = parse(bencode.encode({"announce": "http://127.0.0.1:1/announce", "info": info}))
    pm = plugins.get_plugin_manager()
    services = SessionServices(
        peer_id=b"-TC0001-abcdefghijkl", hooks=plugins.ContainedHooks(pm), strategy_factory=plugins.choose_strategy(pm),
        storage_factory=lambda *a: None, pool=None, download_limit=TokenBucket(0), upload_limit=TokenBucket(0),
        slots=ConnectionSlots(10), listen_port=lambda: 0, dht=None, pex=True, emit=lambda event: None,
        encryption=encryption)
    return Torrent(meta, "/nonexistent-never-written", TorrentConfig(), services)


@pytest.fixture
def conn() -> Iterator[Connection]:
    with socket.socket() as server:
        server.bind((LOCALHOST, 0))
        server.listen(1)
        left = socket.create_connection(server.getsockname())
        right, _ = server.accept()
    connection = Connection(left, ("10.0.0.1", 6881))
    yield connection
    connection.close()
    right.close()


def _peer(torrent: Torrent, conn: Connection) -> Peer:
    return Peer(torrent.port, conn, b"-XX0001-abcdefghijkl", msg.reserved_bytes(msg.RESERVED_EXTENSIONS), False)


@pytest.mark.parametrize("policy, flag", [("prefer", 1), ("require", 1), ("disable", None)])
def test_extension_handshake_carries_e(conn, policy, flag):
    peer = _peer(_torrent(encryption=policy), conn)
    peer._send_extension_handshake()
    sent = bencode.decode(conn._out[0][6:])
    assert sent.get(b"e") == flag


def test_e_flag_and_rc4_make_a_peer_advertised_with_pex_flag_01(conn):
    torrent = _torrent()
    peer = _peer(torrent, conn)
    assert peer.encryption_hint is None and peer.info().encrypted is False
    peer._on_extended(b"\x00" + bencode.encode({b"e": 1, b"m": {}}))
    assert peer.prefers_encryption and peer.encryption_hint is True
    torrent.peers[peer.address] = peer
    flags = PexHandler(torrent.swarm).connected_addresses()
    assert flags[peer.address] == PEX_FLAG_REACHABLE | PEX_FLAG_ENCRYPTION
    conn.encrypted = True
    assert _peer(torrent, conn).info().encrypted is True


def test_pex_flag_01_is_remembered_on_new_candidates():
    torrent = _torrent()

    class Sender:
        address = ("127.0.0.1", 6881)

    payload = encode_pex([(("10.0.0.7", 7000), PEX_FLAG_ENCRYPTION), (("10.0.0.8", 8000), 0)], [])
    assert parse_pex(payload).added[0][1] == PEX_FLAG_ENCRYPTION
    PexHandler(torrent.swarm).on_message(Sender(), payload)
    assert torrent.peer_list.candidates[("10.0.0.7", 7000)].encryption is True
    assert torrent.peer_list.candidates[("10.0.0.8", 8000)].encryption is None


@pytest.mark.parametrize("support, require, expected", [
    (False, False, []), (True, False, ["supportcrypto=1"]), (True, True, ["requirecrypto=1", "supportcrypto=1"]),
])
def test_tracker_crypto_parameters(support, require, expected):
    req = AnnounceRequest(info_hash=b"\x01" * 20, peer_id=b"-TC0001-abcdefghijkl", port=6881,
                          supportcrypto=support, requirecrypto=require)
    query = build_announce_url("http://t.example/announce", req).split("?", 1)[1].split("&")
    assert [p for p in query if "crypto" in p] == expected


def test_torrent_announces_its_policy():
    for policy in ("require", "prefer"):
        torrent = _torrent(policy)
        assert torrent.announcer.encryption == torrent.swarm.encryption == torrent.port.encryption == policy


def test_console_counts_encrypted_peers():
    snap = ProgressSnapshot(name="x", state="downloading", total_bytes=100, have_bytes=10, pieces_done=1,
                            num_pieces=10, peers=3, seeds=1, peer_sources={"tracker": 3}, encrypted_peers=2)
    assert "3 peers (tracker 3; 1 seed, 2 encrypted)" in status_line(snap)
    snap.encrypted_peers = 0
    assert "(tracker 3; 1 seed)" in status_line(snap)


def test_encryption_option():
    parser = cli.build_parser()
    assert parser.parse_args(["run", "x.torrent"]).encryption == "prefer"
    assert parser.parse_args(["seed", "x.torrent", "-d", ".", "--encryption", "require"]).encryption == "require"
    out = run_cli(["run", "x.torrent", "--encryption", "sometimes"])
    assert out.returncode == 2 and "--encryption" in out.stderr and "Traceback" not in out.stderr
