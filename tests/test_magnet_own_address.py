"""A magnet fetch never counts itself as a peer: the address it announced (opentracker lists the announcing
peer back to itself) and a peer whose handshake carries our own peer id are not candidates, so neither
the logs nor the "N peers known, N tried" line count them.

Everything on 127.0.0.1; every wait bounded; nothing asserts timing.
"""

from __future__ import annotations

import shutil
import socket

import pytest
from fakepeer import FakePeerServer, fakes_fixture, recv_exact  # noqa: F401  (fixture "fakes")
from opentracker_fixture import opentracker_factory  # noqa: F401  (fixture "opentracker")
from realpeers import (
    LOCALHOST,
    assert_same_tree,
    make_payload,
    make_torrent,
    peers_fixture,  # noqa: F401  (fixture "peers")
)
from torrentcore_cli import torrentcore_factory  # noqa: F401  (fixture "torrentcore")

needs_opentracker = pytest.mark.skipif(shutil.which("opentracker") is None, reason="opentracker is not installed")

RUN_TIMEOUT = 40


def _magnet(info_hash: bytes, trackers=()) -> str:
    return "magnet:?" + "&".join([f"xt=urn:btih:{info_hash.hex()}", *(f"tr={url}" for url in trackers)])


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("torrentcore: error:")]


def _port_of(run) -> int:
    return int(run.args[run.args.index("--port") + 1])


@needs_opentracker
def test_tracker_listing_our_own_address_is_not_a_peer(tmp_path, peers, opentracker, torrentcore):
    root = make_payload(tmp_path / "seed", 600_000, seed=3, name="own.bin")
    info_hash = make_torrent(root, [], piece_length=32 * 1024)[1]
    tracker = opentracker([info_hash])
    data = make_torrent(root, [tracker.http_url], piece_length=32 * 1024)[0]
    seeder = peers.libtorrent("seeder")
    seeder.add_torrent(data, tmp_path / "seed", seed=True)
    assert seeder.wait_announced(timeout=10), seeder.describe()

    # The magnet's tracker is the only peer source; it answers with the libtorrent seeder and with us.
    run = torrentcore.run(_magnet(info_hash, [tracker.http_url]), tmp_path / "dl")
    rc = run.wait(RUN_TIMEOUT)
    ctx = f"{run.describe()}\n{seeder.describe()}"
    assert rc == 0 and "Traceback" not in run.stderr, ctx
    assert_same_tree(root, tmp_path / "dl" / "own.bin", ctx)
    ours = f"{LOCALHOST}:{_port_of(run)}"
    done = run.events("metadata fetch done")
    assert len(done) == 1 and done[0]["peer"] == f"{LOCALHOST}:{seeder.endpoint[1]}", ctx
    # Only the seeder is known and tried, however the tracker's list and the dialling interleaved.
    assert (done[0]["peers_known"], done[0]["peers_tried"]) == (1, 1), ctx
    # ... and that is because we were listed and left out, not because the tracker forgot us.
    ignored = run.events("metadata: our own address ignored")
    assert [e["peer"] for e in ignored] == [ours], ctx
    assert not [e for e in run.logs() if e.get("peer") == ours and e.get("event") != ignored[0]["event"]], ctx


@needs_opentracker
def test_tracker_listing_only_us_counts_no_peer(tmp_path, opentracker, torrentcore):
    info_hash = bytes(range(20))
    tracker = opentracker([info_hash])
    run = torrentcore.run(_magnet(info_hash, [tracker.http_url]), tmp_path / "dl", "--metadata-timeout", "3")
    rc = run.wait(RUN_TIMEOUT)
    assert rc == 1 and "Traceback" not in run.stderr, run.describe()
    assert _error_lines(run.stderr) == [f"torrentcore: error: no peer sent the metadata of {info_hash.hex()} within "
                                        "3 s (0 peers known, 0 tried)"], run.describe()
    assert [e["peer"] for e in run.events("metadata: our own address ignored")] == [f"{LOCALHOST}:{_port_of(run)}"]


class Mirror(FakePeerServer):
    """Answers a handshake with the very same handshake: the same peer id, as if we had dialled ourselves."""

    def _script(self, sock: socket.socket) -> None:
        theirs = recv_exact(sock, 68)
        sock.sendall(theirs)
        self._drain(sock)


def test_peer_with_our_own_peer_id_is_not_counted(tmp_path, torrentcore, fakes):
    info_hash = bytes(range(1, 21))
    payload = tmp_path / "unused"
    payload.write_bytes(b"")
    mirror = Mirror("mirror", info_hash, payload)
    fakes.append(mirror)
    run = torrentcore.run(_magnet(info_hash), tmp_path / "dl", "--metadata-timeout", "3", peers=[mirror.endpoint])
    rc = run.wait(RUN_TIMEOUT)
    assert rc == 1 and "Traceback" not in run.stderr, f"{run.describe()}\n{mirror}"
    assert _error_lines(run.stderr) == [f"torrentcore: error: no peer sent the metadata of {info_hash.hex()} within "
                                        "3 s (0 peers known, 0 tried)"], run.describe()
    selves = run.events("metadata: connected to ourselves, address ignored")
    assert [e["peer"] for e in selves] == [mirror.address], run.describe()
    assert mirror.accepted == 1, mirror  # found to be ourselves once, never dialled again
