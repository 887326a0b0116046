"""A peer that answers BEP 52 hash requests with wrong proofs is dropped with one clear reason.

torrentcore downloads a v2 torrent whose .torrent has no ``piece layers`` (as after a magnet link), so
it must ask peers for them; the only peer is a fake that sends hashes that do not prove to the file's
root. The run keeps going (no traceback, no piece stored), and stops cleanly when told.
"""

from __future__ import annotations

import os
import signal
import socket
import struct

from fakepeer import FakePeerServer, fakes_fixture, full_bitfield, handshake, message, read_message, recv_exact  # noqa: F401
from realpeers import make_payload, wait_until
from torrentcore_cli import parse_summary, torrentcore_factory  # noqa: F401  (fixture "torrentcore")

from torrentcore import bencode, metainfo
from torrentcore.create import create_torrent

HASH_REQUEST, HASHES = 21, 22


class WrongProofPeer(FakePeerServer):
    """Has every piece; answers each hash request with the right header and random hashes."""

    def __init__(self, info_hash: bytes, payload, num_pieces: int) -> None:
        self.num_pieces = num_pieces
        self.hash_requests = 0
        super().__init__("wrong-proof", info_hash, payload)

    def counters(self):
        return {"hash_requests": self.hash_requests}

    def _script(self, sock: socket.socket) -> None:
        theirs = recv_exact(sock, 68)
        assert theirs[28:48] == self.info_hash, "handshake for another torrent"
        sock.sendall(handshake(self.info_hash, self.peer_id, reserved=bytes(7) + b"\x10"))
        sock.sendall(message(5, full_bitfield(self.num_pieces)) + message(1))  # bitfield, unchoke
        for _ in range(1000):
            msg_id, payload = read_message(sock)
            if msg_id == HASH_REQUEST:
                self.hash_requests += 1
                _, _, count, proof = struct.unpack(">IIII", payload[32:48])
                uncles = max(0, proof - (count.bit_length() - 1) + 1)
                sock.sendall(message(HASHES, payload[:48] + os.urandom(32 * (count + uncles))))
        self._drain(sock)


def test_wrong_hash_proofs_drop_the_peer(tmp_path, torrentcore, fakes):
    root = make_payload(tmp_path / "seed", 600_000, seed=3)
    data, meta = create_torrent(root, [], piece_length=32 * 1024, kind="v2")
    top = bencode.decode(data)
    del top[b"piece layers"]
    torrent = tmp_path / "bare.torrent"
    torrent.write_bytes(bencode.encode(top))
    assert metainfo.load(str(torrent)).missing_layers()
    fake = WrongProofPeer(meta.info_hash, tmp_path / "seed" / "payload", meta.num_pieces)
    fakes.append(fake)
    run = torrentcore.run(torrent, tmp_path / "dl", peers=[fake.endpoint], log_level="debug")
    assert wait_until(lambda: fake.closed_by_them >= 1, 30), f"{fake}\n{run.describe()}"
    lost = [e for e in run.events("peer lost") if "wrong Merkle proof" in str(e.get("reason", ""))]
    assert lost, run.describe()
    assert "\n" not in lost[0]["reason"]
    assert fake.hash_requests >= 1
    assert run.stop(signal.SIGTERM) == 143, run.describe()
    assert "Traceback" not in run.stderr
    summary = parse_summary(run.stdout)
    assert summary is not None and summary["pieces_done"] == 0, run.stdout  # nothing unverifiable was stored
