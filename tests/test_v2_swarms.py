"""A hybrid torrent is in two swarms (BEP 52): announced under both info-hashes, and reachable by both.

A tracker (a small WSGI app in the test) records what torrentcore announces; a raw socket handshakes
with a seeding torrentcore using the hybrid's truncated v2 hash and must get that hash back.
"""

from __future__ import annotations

import socket
import urllib.parse

import gevent.pywsgi
from fakepeer import handshake, recv_exact
from realpeers import LOCALHOST, make_payload, wait_until
from torrentcore_cli import torrentcore_factory  # noqa: F401  (fixture "torrentcore")

from torrentcore import bencode
from torrentcore.create import create_torrent


class RecordingTracker:
    """Answers every announce with no peers; keeps the info-hashes it was asked about."""

    def __init__(self) -> None:
        self.hashes: list[bytes] = []
        self.server = gevent.pywsgi.WSGIServer((LOCALHOST, 0), self._app, log=None, error_log=None)
        self.server.start()

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.server.server_port}/announce"

    def _app(self, environ, start_response):
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""), encoding="latin-1")
        for value in query.get("info_hash", []):
            self.hashes.append(value.encode("latin-1"))
        body = bencode.encode({"interval": 1800, "peers": b""})
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    def stop(self) -> None:
        self.server.stop(timeout=1)


def _hybrid(tmp_path, trackers=()):
    root = make_payload(tmp_path / "seed", {"a.bin": 100_000, "b.bin": 50_000}, seed=1)
    data, meta = create_torrent(root, list(trackers), piece_length=16 * 1024, kind="hybrid")
    torrent = tmp_path / "h.torrent"
    torrent.write_bytes(data)
    return root, torrent, meta


def test_hybrid_is_in_both_swarms(tmp_path, torrentcore):
    tracker = RecordingTracker()
    try:
        root, torrent, meta = _hybrid(tmp_path, [tracker.url])
        seeder = torrentcore.seed(torrent, tmp_path / "seed")
        port = seeder.wait_listening()
        wanted = {meta.info_hash, meta.info_hash_v2[:20]}
        assert wait_until(lambda: wanted <= set(tracker.hashes), 20), (tracker.hashes, seeder.describe())
        for info_hash in (meta.info_hash_v2[:20], meta.info_hash):
            with socket.create_connection((LOCALHOST, port), timeout=10) as sock:
                sock.sendall(handshake(info_hash, b"-XX0001-" + b"x" * 12, reserved=bytes(7) + b"\x10"))
                theirs = recv_exact(sock, 68)
                assert theirs[28:48] == info_hash, seeder.describe()  # our handshake names the hash it was asked
                assert theirs[27] & 0x10  # the v2 bit: it speaks BEP 52 for this torrent
        seeder.stop()
    finally:
        tracker.stop()
