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


class SilentPeer(FakePeerServer):
    """Has every piece, takes hash requests and never answers them."""

    def __init__(self, info_hash: bytes, payload, num_pieces: int) -> None:
        self.num_pieces = num_pieces
        self.hash_requests = 0
        super().__init__("silent", info_hash, payload)

    def counters(self):
        return {"hash_requests": self.hash_requests}

    def _script(self, sock: socket.socket) -> None:
        recv_exact(sock, 68)
        sock.sendall(handshake(self.info_hash, self.peer_id, reserved=bytes(7) + b"\x10"))
        sock.sendall(message(5, full_bitfield(self.num_pieces)))
        for _ in range(10_000):
            msg_id, _ = read_message(sock)
            self.hash_requests += msg_id == HASH_REQUEST


def test_a_silent_peer_does_not_keep_the_layers_from_coming(tmp_path, torrentcore, fakes):
    import libtorrent as lt
    from realpeers import LibtorrentPeer, assert_same_tree

    root = make_payload(tmp_path / "seed", {"a.bin": 300_000, "b.bin": 200_000}, seed=4)
    ct = lt.create_torrent(lt.list_files(str(root)), 32 * 1024, flags=lt.create_torrent.v2_only)
    lt.set_piece_hashes(ct, str(tmp_path / "seed"))
    full = tmp_path / "full.torrent"
    full.write_bytes(bytes(lt.bencode(ct.generate())))
    top = bencode.decode(full.read_bytes())
    del top[b"piece layers"]
    bare = tmp_path / "bare.torrent"
    bare.write_bytes(bencode.encode(top))
    meta = metainfo.load(str(bare))
    assert len(meta.missing_layers()) == 2
    silent = SilentPeer(meta.info_hash, tmp_path / "seed" / "payload" / "a.bin", meta.num_pieces)
    fakes.append(silent)
    run = torrentcore.run(bare, tmp_path / "dl", peers=[silent.endpoint])
    port = run.wait_listening()
    # Both layers are asked of the silent peer first; an honest seeder comes only then.
    assert wait_until(lambda: silent.hash_requests >= 2, 30), f"{silent}\n{run.describe()}"
    with LibtorrentPeer(name="lt-seeder") as seeder:
        seeder.add_torrent(full, tmp_path / "seed", seed=True)
        seeder.connect_peer("127.0.0.1", port)
        assert run.wait(60) == 0, f"{silent}\n{run.describe()}"
    assert_same_tree(root, tmp_path / "dl" / "payload")
