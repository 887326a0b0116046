"""IPv6 peers (BEP 7): dialling, listening, addresses written as ``[v6]:port``.

On the IPv6 loopback ``::1`` only: torrentcore downloads from a libtorrent seeder listening on
``[::1]`` (given with ``--peer [::1]:PORT``, and found in a tracker's ``peers6``), and a torrentcore
seeder listening on ``127.0.0.1,::1`` serves one libtorrent leecher over IPv6 and one over IPv4 on the
same port. Skipped, with the reason, where this host has no IPv6 loopback.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import gevent.pywsgi
import pytest
from realpeers import LOCALHOST, RealPeers, assert_same_tree, free_port, make_payload, make_torrent
from torrentcore_cli import torrentcore_factory  # noqa: F401  (fixture "torrentcore")

from torrentcore import bencode
from torrentcore.cli import parse_peer

PIECE_LENGTH = 64 * 1024
RUN_TIMEOUT = 40


def _ipv6_loopback() -> str:
    """Why IPv6 cannot be tested here ("" when it can)."""
    if not socket.has_ipv6:
        return "Python was built without IPv6"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError as exc:
        return f"no IPv6 loopback on this host: {exc}"
    return ""


needs_ipv6 = pytest.mark.skipif(bool(_ipv6_loopback()), reason=_ipv6_loopback() or "IPv6 available")


def _free_port6() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.bind(("::1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def swarm(tmp_path: Path) -> Iterator[dict]:
    root = make_payload(tmp_path / "seed", 4 << 20, seed=61, name="six.bin")
    torrent = tmp_path / "six.torrent"
    make_torrent(root, [], piece_length=PIECE_LENGTH, out=torrent)
    with RealPeers(tmp_path / "peers") as pool:
        yield {"root": root, "torrent": torrent, "pool": pool}
        print(pool.describe())


def _v6_libtorrent(pool: RealPeers, name: str, **settings):
    """A libtorrent session listening on ``[::1]`` only."""
    port = _free_port6()
    return pool.libtorrent(name, port=port, listen_interfaces=f"[::1]:{port}", outgoing_interfaces="::1",
                           **settings)


def _finish(run, context: str) -> None:
    rc = run.wait(RUN_TIMEOUT)
    assert rc == 0, f"{run.describe()}\n{context}"
    assert "Traceback" not in run.stderr, run.describe()


# --------------------------------------------------------------------------------------------------


def test_parse_peer_accepts_bracketed_ipv6_only():
    assert parse_peer("[::1]:6881") == ("::1", 6881)
    assert parse_peer("[2001:DB8::1]:51413") == ("2001:db8::1", 51413)
    assert parse_peer("127.0.0.1:6881") == ("127.0.0.1", 6881)
    assert parse_peer("example.org:80") == ("example.org", 80)
    for bad in ("::1:6881", "[::1]", "[nonsense]:1", "[::1]:0", "[::1]:65536", "1.2.3.4"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_peer(bad)


@needs_ipv6
def test_download_from_a_libtorrent_seeder_on_ipv6_loopback(tmp_path, swarm, torrentcore):
    seeder = _v6_libtorrent(swarm["pool"], "seeder6")
    seeder.add_torrent(swarm["torrent"], tmp_path / "seed", seed=True)
    run = torrentcore.start(["run", swarm["torrent"], "-o", tmp_path / "out", "--no-seed", "--port", "0",
                             "--listen-host", "::1", "--peer", f"[::1]:{seeder.port}", "--progress-interval", "1"])
    _finish(run, swarm["pool"].describe())
    assert_same_tree(swarm["root"], tmp_path / "out" / "six.bin", run.describe())
    connected = run.events("peer connected")
    assert [(e["peer"], e["source"]) for e in connected] == [(f"[::1]:{seeder.port}", "manual")], run.describe()
    listening = run.events("listening")
    assert listening and listening[0]["addresses"] == [f"[::1]:{listening[0]['port']}"], run.describe()


@needs_ipv6
def test_ipv6_peers_from_a_tracker_are_dialled(tmp_path, swarm, torrentcore):
    """A tracker reply's ``peers6`` (BEP 7) names the seeder on ``[::1]``; the fake tracker only answers."""
    seeder = _v6_libtorrent(swarm["pool"], "seeder6")
    seeder.add_torrent(swarm["torrent"], tmp_path / "seed", seed=True)
    peers6 = ipaddress.IPv6Address("::1").packed + struct.pack(">H", seeder.port)
    announces = []

    def tracker(environ, start_response):
        announces.append(environ.get("QUERY_STRING", ""))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [bencode.encode({"interval": 1800, "peers": b"", "peers6": peers6})]

    server = gevent.pywsgi.WSGIServer((LOCALHOST, 0), tracker, log=None, error_log=None)
    server.start()
    try:
        tracked = tmp_path / "tracked.torrent"
        make_torrent(swarm["root"], [f"http://{LOCALHOST}:{server.server_port}/announce"],
                     piece_length=PIECE_LENGTH, out=tracked)
        run = torrentcore.start(["run", tracked, "-o", tmp_path / "out", "--no-seed", "--port", str(free_port()),
                                 "--listen-host", f"{LOCALHOST},::1", "--progress-interval", "1"])
        _finish(run, swarm["pool"].describe())
    finally:
        server.stop(timeout=1)
    assert announces, "the tracker was never asked"
    assert_same_tree(swarm["root"], tmp_path / "out" / "six.bin", run.describe())
    connected = run.events("peer connected")
    assert [(e["peer"], e["source"]) for e in connected] == [(f"[::1]:{seeder.port}", "tracker")], run.describe()


@needs_ipv6
def test_a_seeder_listens_on_ipv4_and_ipv6_at_once(tmp_path, swarm, torrentcore):
    seed = torrentcore.start(["seed", swarm["torrent"], "-d", tmp_path / "seed", "--port", str(free_port()),
                              "--listen-host", f"{LOCALHOST},::1", "--progress-interval", "1"])
    port = seed.wait_listening()
    assert seed.events("listening")[0]["addresses"] == [f"{LOCALHOST}:{port}", f"[::1]:{port}"], seed.describe()
    six = _v6_libtorrent(swarm["pool"], "leecher6")
    six.add_torrent(swarm["torrent"], tmp_path / "leech6")
    six.connect_peer("::1", port)
    four = swarm["pool"].libtorrent("leecher4")
    four.add_torrent(swarm["torrent"], tmp_path / "leech4")
    four.connect_peer(LOCALHOST, port)
    context = f"{swarm['pool'].describe()}\n{seed.describe()}"
    assert six.wait_finished(30), context
    assert four.wait_finished(30), context
    assert_same_tree(swarm["root"], tmp_path / "leech6" / "six.bin", context)
    assert_same_tree(swarm["root"], tmp_path / "leech4" / "six.bin", context)
    incoming = {e["peer"].rsplit(":", 1)[0] for e in seed.events("peer connected") if e["incoming"]}
    assert incoming == {"[::1]", LOCALHOST}, context
