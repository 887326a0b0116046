"""BEP 52 hash requests for the block layer (base 0, the 16 KiB leaves) are served from the data on disk.

libtorrent asks for a piece's block hashes when that piece failed its check, to find the bad block. A
torrentcore seeder answers them with the leaf hashes of the range and the uncle hashes up to the file's
root; the requester here is a fake peer on the wire, which checks every answer twice: with
torrentcore's :mod:`torrentcore.merkle` and with a tree built here from ``hashlib`` alone. Requests out of
bounds (wider than a piece, misaligned, an unknown root, a proof to the root) get a hash reject, and the
peer's budget of served hashes still applies. Payload: under 1 MiB.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
from pathlib import Path

import gevent
import pytest
from fakepeer import (  # noqa: F401  (fixture "fakes")
    BITFIELD,
    INTERESTED,
    PIECE,
    REQUEST,
    UNCHOKE,
    FakePeerServer,
    fakes_fixture,
    handshake,
    message,
    read_message,
    recv_exact,
)
from realpeers import LOCALHOST, make_payload
from torrentcore_cli import torrentcore_factory  # noqa: F401  (fixture "torrentcore")

from torrentcore import merkle, metainfo
from torrentcore.create import create_torrent
from torrentcore.peer.hash_exchange import HashExchange
from torrentcore.piece_layers import HashRequest, PieceLayers

KiB = 1024
BLOCK = 16 * KiB
PLEN = 64 * KiB  # four blocks per piece
HASH_REQUEST, HASHES, HASH_REJECT = 21, 22, 23
#: One file of several pieces (its last piece short), one of under a piece (three blocks, tree of four).
TREE = {"big.bin": 5 * PLEN + 20_000, "small.bin": 40_000}


def _tree(data: bytes, width: int) -> list[list[bytes]]:
    """The whole Merkle tree of ``data`` over ``width`` leaves, with hashlib only (layers from the leaves)."""
    leaves = [hashlib.sha256(data[i : i + BLOCK]).digest() for i in range(0, len(data), BLOCK)]
    leaves += [bytes(32)] * (width - len(leaves))
    layers = [leaves]
    while len(layers[-1]) > 1:
        nodes = layers[-1]
        layers.append([hashlib.sha256(nodes[i] + nodes[i + 1]).digest() for i in range(0, len(nodes), 2)])
    return layers


def _expected(tree: list[list[bytes]], index: int, count: int, proof_layers: int) -> list[bytes]:
    """The answer BEP 52 defines: the range, then the uncles of its subtree's ancestors, lowest first."""
    out = list(tree[0][index : index + count])
    levels = count.bit_length() - 1  # the range's subtree root is at this layer
    node = index >> levels
    for layer in range(levels, proof_layers + 1):
        out.append(tree[layer][node ^ 1])
        node >>= 1
    return out


def _check(answer: list[bytes], tree: list[list[bytes]], index: int, count: int, proof_layers: int,
           root: bytes) -> None:
    assert answer == _expected(tree, index, count, proof_layers)
    levels = count.bit_length() - 1
    node = merkle.root_of(answer[:count], count)
    top = levels + len(answer) - count  # the layer the proof climbs to
    climbed = merkle.proof_root(node, index >> levels, answer[count:])
    assert climbed == tree[top][index >> top]
    if top == len(tree) - 1:
        assert climbed == root  # a full proof: to the file's pieces root


@pytest.fixture(name="payload")
def payload_fixture(tmp_path):
    root = Path(make_payload(tmp_path / "seed", TREE, seed=31))
    data, meta = create_torrent(str(root), [], piece_length=PLEN, kind="v2")
    (tmp_path / "x.torrent").write_bytes(data)
    files = {f.path[-1]: f for f in meta.files if not f.pad}
    contents = {name: (root / name).read_bytes() for name in files}
    return {"root": root, "meta": meta, "files": files, "contents": contents, "torrent": tmp_path / "x.torrent"}


def _reader(meta: metainfo.Metainfo, root) -> callable:
    stream = b"".join(bytes(f.length) if f.pad else (root / f.path[-1]).read_bytes() for f in meta.files)
    return lambda i: stream[i * meta.piece_length : i * meta.piece_length + meta.piece_size(i)]


def _cases(payload):
    big, small = payload["files"]["big.bin"], payload["files"]["small.bin"]
    big_tree = _tree(payload["contents"]["big.bin"], merkle.next_pow2(6) * 4)  # 6 pieces -> 8 wide, 32 leaves
    small_tree = _tree(payload["contents"]["small.bin"], 4)
    return [
        (big, big_tree, 0, 4, 4),  # the first piece's blocks, proof to below the root (5 layers)
        (big, big_tree, 8, 4, 4),
        (big, big_tree, 20, 4, 4),  # the last, short piece (two real blocks, two zero leaves)
        (big, big_tree, 10, 2, 4),  # half a piece: its sibling pair is an uncle from the piece's own blocks
        (big, big_tree, 12, 4, 2),  # a shorter proof
        (big, big_tree, 4, 4, 0),  # no proof
        (small, small_tree, 0, 4, 1),  # the small file's whole leaf layer (its root is the pieces root)
        (small, small_tree, 2, 2, 1),
    ]


def test_block_layer_answers_from_data_prove_to_the_root(payload):
    meta = payload["meta"]
    layers = PieceLayers(meta)
    read = _reader(meta, payload["root"])
    for f, tree, index, count, proof in _cases(payload):
        req = HashRequest(f.root, 0, index, count, proof)
        _check(layers.answer(req, read), tree, index, count, proof, f.root)
    big, small = payload["files"]["big.bin"], payload["files"]["small.bin"]
    for req in [
        HashRequest(big.root, 0, 0, 8, 4),  # wider than one piece (we read at most one per request)
        HashRequest(big.root, 0, 2, 4, 4),  # not aligned on its size
        HashRequest(big.root, 0, 0, 1, 4),  # fewer than two
        HashRequest(big.root, 0, 0, 4, 5),  # a proof that includes the root
        HashRequest(big.root, 0, 24, 4, 4),  # past the file's last block
        HashRequest(small.root, 0, 0, 4, 2),
        HashRequest(b"\x02" * 32, 0, 0, 4, 1),
    ]:
        assert layers.answer(req, read) is None, req
    assert layers.answer(HashRequest(big.root, 0, 0, 4, 4)) is None  # no data source: rejected as before
    assert layers.answer(HashRequest(big.root, 0, 4, 4, 4), lambda i: None) is None  # a piece we lack


def test_block_layer_answers_count_against_the_peers_budget(payload):
    meta = payload["meta"]
    sent: list[bytes] = []
    exchange = HashExchange(PieceLayers(meta), sent.append, meta.num_pieces, True, lambda: None,
                            _reader(meta, payload["root"]))
    big = payload["files"]["big.bin"]
    request = HashRequest(big.root, 0, 0, 2, 0).pack()
    served = 0
    for _ in range(20_000):
        exchange.on_message(HASH_REQUEST, request)
        if sent[-1][4] != HASHES:
            break
        served += 1
    # Each answer of 2 hashes costs a piece's read: 4 hashes of the cap (4 x 7 pieces + 10,000).
    assert sent[-1][4] == HASH_REJECT and served == (4 * meta.num_pieces + 10_000) // 4


def _ask(sock: socket.socket, req: HashRequest) -> tuple[int, bytes]:
    sock.sendall(message(HASH_REQUEST, req.pack()))
    for _ in range(100):
        msg_id, body = read_message(sock)
        if msg_id in (HASHES, HASH_REJECT):
            assert body[:48] == req.pack()
            return msg_id, body[48:]
    raise AssertionError("no answer to the hash request")


def test_seeder_serves_block_hashes_on_the_wire(payload, torrentcore):
    meta = payload["meta"]
    seeder = torrentcore.seed(payload["torrent"], payload["root"].parent)
    port = seeder.wait_listening()
    with gevent.Timeout(30), socket.create_connection((LOCALHOST, port), timeout=30) as sock:
        sock.sendall(handshake(meta.info_hash, os.urandom(20), reserved=bytes(7) + b"\x10"))
        theirs = recv_exact(sock, 68)
        assert theirs[28:48] == meta.info_hash and theirs[27] & 0x10, theirs
        for f, tree, index, count, proof in _cases(payload):
            msg_id, body = _ask(sock, HashRequest(f.root, 0, index, count, proof))
            assert msg_id == HASHES, (f.path, index, count, proof)
            _check([body[i : i + 32] for i in range(0, len(body), 32)], tree, index, count, proof, f.root)
        big = payload["files"]["big.bin"]
        assert _ask(sock, HashRequest(big.root, 0, 0, 8, 4))[0] == HASH_REJECT
        # The piece layer is still served as before, on the same connection (6 pieces, 8 wide).
        msg_id, body = _ask(sock, HashRequest(big.root, 2, 0, 8, 2))
        assert msg_id == HASHES and body == meta.piece_layers[big.root] + 2 * merkle.pad_hash(2)
    assert "Traceback" not in seeder.stderr


class CorruptSeeder(FakePeerServer):
    """A v2 seeder that flips the first byte of every block it sends, and rejects hash requests."""

    def __init__(self, meta: metainfo.Metainfo, stream: bytes, payload: Path) -> None:
        self.meta, self.stream = meta, stream
        self.served = 0
        super().__init__("corrupt", meta.info_hash, payload)

    def counters(self):
        return {"served": self.served}

    def _script(self, sock: socket.socket) -> None:
        recv_exact(sock, 68)
        sock.sendall(handshake(self.info_hash, self.peer_id, reserved=bytes(7) + b"\x10"))
        n = self.meta.num_pieces
        bits = bytearray((n + 7) // 8)
        for i in range(n):
            bits[i >> 3] |= 0x80 >> (i & 7)
        sock.sendall(message(BITFIELD, bytes(bits)))
        plen = self.meta.piece_length
        for _ in range(100_000):
            msg_id, body = read_message(sock)
            if msg_id == INTERESTED:
                sock.sendall(message(UNCHOKE))
            elif msg_id == REQUEST:
                index, begin, length = struct.unpack(">III", body)
                data = bytearray(self.stream[index * plen + begin : index * plen + begin + length])
                data[0] ^= 0xFF
                self.served += 1
                sock.sendall(message(PIECE, body[:8] + bytes(data)))
            elif msg_id == HASH_REQUEST:
                sock.sendall(message(HASH_REJECT, body))


def test_libtorrent_asks_a_torrentcore_seeder_for_block_hashes_of_a_failed_piece(tmp_path, torrentcore, fakes):
    """libtorrent, fed corrupt blocks by a fake, asks torrentcore (the other seeder) for the failed pieces'
    block hashes; torrentcore answers them and libtorrent finishes byte-exact, torrentcore still connected."""
    import libtorrent as lt
    from realpeers import LibtorrentPeer, wait_until

    root = Path(make_payload(tmp_path / "seed", {"a.bin": 1_000_000}, seed=61))
    ct = lt.create_torrent(lt.list_files(str(root)), PLEN, flags=lt.create_torrent.v2_only)
    lt.set_piece_hashes(ct, str(tmp_path / "seed"))
    full = tmp_path / "full.torrent"
    full.write_bytes(bytes(lt.bencode(ct.generate())))
    meta = metainfo.load(str(full))
    stream = b"".join(bytes(f.length) if f.pad else (root / f.path[-1]).read_bytes() for f in meta.files)
    fake = CorruptSeeder(meta, stream, root / "a.bin")
    fakes.append(fake)
    seeder = torrentcore.seed(full, root, log_level="debug")  # a single-file v2 torrent: -d holds a.bin
    port = seeder.wait_listening()
    with LibtorrentPeer(name="lt-leecher") as leecher:
        leecher.add_torrent(full, tmp_path / "lt")
        leecher.connect_peer(LOCALHOST, fake.endpoint[1])
        assert wait_until(lambda: fake.served >= 4, 20), f"{fake}\n{leecher.describe()}"
        leecher.connect_peer(LOCALHOST, port)
        assert leecher.wait_finished(60), leecher.describe() + seeder.describe()
        failed = [a for a in leecher.alerts if a.startswith("hash_failed_alert")]
        dropped = [a for a in leecher.alerts if a.startswith("peer_disconnected_alert") and f":{port} " in a
                   and "torrent finished" not in a]
    assert (tmp_path / "lt" / "a.bin").read_bytes() == (root / "a.bin").read_bytes()
    served = seeder.events("block hashes served")
    assert failed and served, f"{failed}\n{seeder.describe()}"
    assert all(e["count"] == PLEN // BLOCK and e["index"] % (PLEN // BLOCK) == 0 for e in served), served
    assert not dropped, dropped  # libtorrent took the answers (a wrong proof would cost the connection)
