"""A hybrid fetched without its piece layers (a ``btih`` + ``btmh`` magnet) that completes on SHA-1 before they
arrive: it is complete only once every held piece was checked with its Merkle hash too (issue 16).

The race is made to happen every time: a fake seed has every piece and speaks v2, but holds torrentcore's hash
requests until the test releases them, after torrentcore said it completed on SHA-1 and waits for the layers.

* ``--no-seed`` does not exit then: the fake seed is kept, torrentcore goes on dialling, a libtorrent seeder
  that joins late gives the layers (torrentcore must not greet it as a seed: libtorrent hangs up on two
  seeds), the held pieces are checked with them, and only then "download complete" and the exit.
* A piece whose data passes SHA-1 and fails its Merkle hash (SHAttered's two colliding prefixes, one in the
  true data and one in what the fake serves): the re-check clears it, and it comes again from an honest
  libtorrent seeder; the file is then byte-exact.
* Layers that never come: one warning naming the cause, exit 0 (the data passed SHA-1), after a bound lowered
  for the test (``tc_short_layer_wait``).

The .torrent given to torrentcore is libtorrent's hybrid without its ``piece layers``: what a magnet link's
metadata is (the BEP 9 fetch itself is tested against libtorrent in test_v2_interop). 32 KiB pieces, 400 KB.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
from pathlib import Path

import libtorrent as lt
from fakepeer import (  # noqa: F401  (fixture "fakes")
    BITFIELD,
    INTERESTED,
    PIECE,
    REQUEST,
    UNCHOKE,
    FakePeerServer,
    fakes_fixture,
    full_bitfield,
    handshake,
    message,
    read_message,
    recv_exact,
)
from realpeers import LibtorrentPeer, assert_same_tree, free_port, make_payload, wait_until
from test_v2_layers_late import _layer_answer
from torrentcore_cli import torrentcore_factory  # noqa: F401  (fixture "torrentcore")

from torrentcore import bencode, metainfo

KiB = 1024
PLEN = 32 * KiB
HASH_REQUEST, HASHES = 21, 22
TREE = {"a.bin": 300_000, "b.bin": 100_000}  # both over one piece: each needs its layer
WAITING = "download complete on SHA-1; waiting for piece layers"
CHECKED = "held pieces checked with their piece layer"
BOTH = "every piece checked with both hashes"

# SHAttered (Stevens, Bursztein, Karpman, Albertini, Markov, 2017): two 320-byte prefixes with the same SHA-1
# state, so any common suffix keeps the SHA-1 equal; their SHA-256 differ.
_PREFIX = bytes.fromhex(
    "255044462d312e330a25e2e3cfd30a0a0a312030206f626a0a3c3c2f57696474682032203020522f4865696768742033203020522f"
    "547970652034203020522f537562747970652035203020522f46696c7465722036203020522f436f6c6f7253706163652037203020"
    "522f4c656e6774682038203020522f42697473506572436f6d706f6e656e7420383e3e0a73747265616d0affd8fffe00245348412d"
    "3120697320646561642121212121852fec092339759c39b1a1c63c4c97e1fffe01")
COLLIDE_1 = _PREFIX + bytes.fromhex(
    "7f46dc93a6b67e013b029aaa1db2560b45ca67d688c7f84b8c4c791fe02b3df614f86db1690901c56b45c1530afedfb76038e97272"
    "2fe7ad728f0e4904e046c230570fe9d41398abe12ef5bc942be33542a4802d98b5d70f2a332ec37fac3514e74ddc0f2cc1a874cd0c"
    "78305a21566461309789606bd0bf3f98cda8044629a1")
COLLIDE_2 = _PREFIX + bytes.fromhex(
    "7346dc9166b67e118f029ab621b2560ff9ca67cca8c7f85ba84c79030c2b3de218f86db3a90901d5df45c14f26fedfb3dc38e96ac2"
    "2fe7bd728f0e45bce046d23c570feb141398bb552ef5a0a82be331fea48037b8b5d71f0e332edf93ac3500eb4ddc0decc1a864790c"
    "782c76215660dd309791d06bd0af3f98cda4bc4629b1")


class HeldHashesSeed(FakePeerServer):
    """A seed of ``stream`` (every piece) that speaks v2 and holds every hash request until :meth:`release`
    (torrentcore then completes on SHA-1 first); after it, it answers them from ``layers``. With ``leave``, it
    hangs up at release, once the answers are sent, and refuses new connections (it left the swarm)."""

    def __init__(self, meta: metainfo.Metainfo, stream: bytes, layers: dict[bytes, bytes], payload: Path,
                 leave: bool = False):
        self.meta, self.stream, self.layers, self.leave = meta, stream, layers, leave
        self.held: list[tuple[socket.socket, bytes]] = []
        self.socks: list[socket.socket] = []
        self.released = self.gone = False
        self.hash_requests = self.answered = self.served = 0
        super().__init__("held-hashes", meta.info_hash, payload)

    def counters(self):
        return {"hash_requests": self.hash_requests, "answered": self.answered, "served": self.served,
                "gone": self.gone}

    def release(self) -> None:
        """Answer the held hash requests (and those to come); leave the swarm if told to."""
        self.released = True
        held, self.held = self.held, []
        for sock, body in held:
            self._answer(sock, body)
        if self.leave:
            self.gone = True
            for sock in self.socks:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _answer(self, sock: socket.socket, body: bytes) -> None:
        root, _base, index, count, proof = struct.unpack(">32sIIII", body)
        sock.sendall(message(HASHES, body + _layer_answer(self.layers[root], index, count, proof)))
        self.answered += 1

    def _script(self, sock: socket.socket) -> None:
        if self.gone:
            return
        self.socks.append(sock)
        # Either hash of the hybrid: torrentcore asks for layers only over its v2 swarm (as libtorrent answers).
        theirs = recv_exact(sock, 68)[28:48]
        sock.sendall(handshake(theirs, self.peer_id, reserved=bytes(7) + b"\x10"))  # BEP 52 bit
        sock.sendall(message(BITFIELD, full_bitfield(self.meta.num_pieces)))
        for _ in range(100_000):
            msg_id, body = read_message(sock)
            if msg_id == INTERESTED:
                sock.sendall(message(UNCHOKE))
            elif msg_id == REQUEST:
                index, begin, length = struct.unpack(">III", body)
                start = index * PLEN + begin
                sock.sendall(message(PIECE, body[:8] + self.stream[start : start + length]))
                self.served += length
            elif msg_id == HASH_REQUEST:
                self.hash_requests += 1
                if self.released:
                    self._answer(sock, body)
                else:
                    self.held.append((sock, body))


def _hybrid(tmp_path: Path, seed: int, collide_at: int | None = None):
    """A payload, libtorrent's hybrid .torrent of it (full), the same without piece layers (bare), its
    metainfo, and the byte stream a seed serves (pad files as zeros). With ``collide_at``, the true data has
    SHAttered's first prefix at the start of that piece, and the returned stream its second one there."""
    root = Path(make_payload(tmp_path / "seed", TREE, seed=seed))
    if collide_at is not None:
        data = bytearray((root / "a.bin").read_bytes())
        data[collide_at * PLEN : collide_at * PLEN + len(COLLIDE_1)] = COLLIDE_1
        (root / "a.bin").write_bytes(bytes(data))
    ct = lt.create_torrent(lt.list_files(str(root)), PLEN)  # libtorrent 2.x's default: a hybrid
    lt.set_piece_hashes(ct, os.path.dirname(root))
    full = tmp_path / "full.torrent"
    full.write_bytes(bytes(lt.bencode(ct.generate())))
    meta = metainfo.load(str(full))
    assert meta.hybrid
    top = bencode.decode(full.read_bytes())
    del top[b"piece layers"]
    bare = tmp_path / "bare.torrent"
    bare.write_bytes(bencode.encode(top))
    assert metainfo.load(str(bare)).missing_layers()
    stream = bytearray(b"".join(bytes(f.length) if f.pad else (root / f.path[-1]).read_bytes() for f in meta.files))
    if collide_at is not None:
        stream[collide_at * PLEN : collide_at * PLEN + len(COLLIDE_2)] = COLLIDE_2
    return root, full, bare, meta, bytes(stream)


def _wait_complete_on_sha1(run, fake) -> None:
    """torrentcore has every piece on SHA-1 and waits for the layers, which the fake holds: it has not exited,
    nor called itself complete."""
    assert wait_until(lambda: run.events(WAITING) or run.returncode is not None, 30), f"{fake}\n{run.describe()}"
    assert run.returncode is None, f"exited before any piece was checked with its Merkle hash\n{run.describe()}"
    assert run.events(WAITING)[0]["files_missing"] == len(TREE) and fake.held and not fake.answered, fake
    assert not run.events("download complete"), run.describe()


def test_no_seed_run_waits_for_the_layers_and_checks_held_pieces_before_it_exits(tmp_path, torrentcore, fakes):
    root, full, bare, meta, stream = _hybrid(tmp_path, seed=61)
    fake = HeldHashesSeed(meta, stream, meta.piece_layers, root / "a.bin")  # never answers a hash request
    fakes.append(fake)
    lt_port = free_port()  # where a libtorrent seeder will listen, once torrentcore has every piece
    run = torrentcore.run(bare, tmp_path / "dl", peers=[fake.endpoint, ("127.0.0.1", lt_port)])
    _wait_complete_on_sha1(run, fake)
    assert fake.closed_by_them == 0, fake  # a seed that may give the layers is kept
    # The libtorrent seeder joins now; torrentcore's next try reaches it. torrentcore does not greet it as a
    # seed (libtorrent hangs up on two seeds at once), asks it for the layers, and checks its pieces with them.
    with LibtorrentPeer(port=lt_port, name="lt-seeder") as seeder:
        seeder.add_torrent(full, root.parent, seed=True)
        assert run.wait(30) == 0, f"{fake}\n{run.describe()}\n{seeder.describe()}"
        uploaded = sum(t["uploaded"] for t in seeder.transfers())
    assert_same_tree(root, tmp_path / "dl" / root.name)
    assert uploaded == 0 and not fake.answered  # the layers came from libtorrent, no data
    checked = run.events(CHECKED)
    assert sorted(e["file"].split("/")[-1] for e in checked) == ["a.bin", "b.bin"], run.describe()
    assert sum(e["checked"] for e in checked) == meta.num_pieces and not any(e["failed"] for e in checked)
    assert run.events("piece layers complete") and run.events(BOTH)[0]["failed"] == 0, run.describe()
    # "download complete" (and with it the exit) came after the check, not before.
    names = [e.get("event") for e in run.logs()]
    assert names.index(BOTH) < names.index("download complete"), names


def test_piece_passing_sha1_and_failing_merkle_is_downloaded_again_from_an_honest_seeder(
        tmp_path, torrentcore, fakes):
    k = 3  # a piece of a.bin
    root, full, bare, meta, stream = _hybrid(tmp_path, seed=62, collide_at=k)
    true_piece = (root / "a.bin").read_bytes()[k * PLEN : (k + 1) * PLEN]
    fake_piece = stream[k * PLEN : (k + 1) * PLEN]
    assert fake_piece != true_piece and hashlib.sha1(fake_piece).digest() == hashlib.sha1(true_piece).digest()
    fake = HeldHashesSeed(meta, stream, meta.piece_layers, root / "a.bin", leave=True)
    fakes.append(fake)
    run = torrentcore.run(bare, tmp_path / "dl", peers=[fake.endpoint])
    port = run.wait_listening()
    _wait_complete_on_sha1(run, fake)
    fake.release()  # the layers, and the fake leaves

    def a_checked() -> list[dict]:
        return [e for e in run.events(CHECKED) if e["file"].endswith("a.bin")]

    assert wait_until(a_checked, 30), f"{fake}\n{run.describe()}"
    assert a_checked()[0]["failed"] == 1, run.describe()
    assert run.returncode is None and not run.events("download complete"), run.describe()
    with LibtorrentPeer(name="lt-seeder") as seeder:
        seeder.add_torrent(full, root.parent, seed=True)
        seeder.connect_peer("127.0.0.1", port)
        assert run.wait(30) == 0, f"{fake}\n{run.describe()}\n{seeder.describe()}"
        uploaded = sum(t["uploaded"] for t in seeder.transfers())
    assert_same_tree(root, tmp_path / "dl" / root.name)
    assert 0 < uploaded <= 2 * PLEN, uploaded  # the cleared piece came from the honest seeder, not much more
    assert len(run.events("download complete")) == 1, run.describe()


def test_layers_that_never_come_give_one_warning_and_exit_0(tmp_path, torrentcore, fakes, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                                   os.environ.get("PYTHONPATH")])))
    root, _full, bare, meta, stream = _hybrid(tmp_path, seed=63)
    fake = HeldHashesSeed(meta, stream, meta.piece_layers, root / "a.bin")  # never released
    fakes.append(fake)
    run = torrentcore.run(bare, tmp_path / "dl", "--plugin", "tc_short_layer_wait", peers=[fake.endpoint])
    assert run.wait(60) == 0, f"{fake}\n{run.describe()}"
    assert_same_tree(root, tmp_path / "dl" / root.name)
    line = "piece layers for 2 file(s) never arrived from peers: those files were verified with SHA-1 only"
    assert run.stdout.count(line) == 1, run.stdout  # one console line, then "complete"
    assert run.stdout.index(line) < run.stdout.index("complete,"), run.stdout
    assert run.events(WAITING) and run.events("download complete") and not run.events(CHECKED), run.describe()
    assert fake.hash_requests >= 1 and not fake.answered, fake
    assert "Traceback" not in run.stderr


def test_an_unanswered_chunk_goes_to_one_more_peer_each_second_and_greetings_withhold_unchecked_pieces(tmp_path):
    from torrentcore.bitfield import Bitfield
    from torrentcore.piece_layers import SECOND_ASK_AFTER, PieceLayers

    _root, _full, bare, meta, _stream = _hybrid(tmp_path, seed=65)
    layers = PieceLayers(metainfo.load(str(bare)))
    a, b, c, t = object(), object(), object(), 100.0
    first = [layers.next_request(t, a), layers.next_request(t, a)]  # a chunk of each file's layer
    assert all(first) and layers.next_request(t, a) is None
    assert layers.next_request(t + SECOND_ASK_AFTER / 2, b) is None  # a may still answer
    assert [layers.next_request(t + SECOND_ASK_AFTER, b) for _ in range(2)] == first  # it did not: b too
    assert layers.next_request(t + 1.5 * SECOND_ASK_AFTER, c) is None  # one more per period only
    assert layers.next_request(t + 2 * SECOND_ASK_AFTER, b) is None  # never the same peer twice
    assert layers.next_request(t + 2 * SECOND_ASK_AFTER, c) == first[0]
    have = Bitfield.full(meta.num_pieces)
    assert layers.advertised(have) is have  # downloading, or seeding: every piece we have
    layers.withhold = True  # complete on SHA-1, waiting for the layers: not greeting as a seed
    assert layers.advertised(have).count == 0


def test_data_complete_on_disk_at_start_waits_for_the_layers_too(tmp_path, torrentcore, fakes):
    """A resumed hybrid magnet download whose data is all on disk: its start-up check passes on SHA-1, and a
    ``--no-seed`` run still waits for the layers and checks every piece with them (downloading nothing)."""
    import shutil

    root, _full, bare, meta, stream = _hybrid(tmp_path, seed=66)
    shutil.copytree(root, tmp_path / "dl" / root.name)
    fake = HeldHashesSeed(meta, stream, meta.piece_layers, root / "a.bin")
    fakes.append(fake)
    run = torrentcore.run(bare, tmp_path / "dl", peers=[fake.endpoint])
    assert wait_until(lambda: fake.held or run.returncode is not None, 30), f"{fake}\n{run.describe()}"
    assert run.returncode is None, f"exited on its SHA-1 check alone\n{run.describe()}"
    assert run.events(WAITING) and not run.events("download complete"), run.describe()
    fake.release()
    assert run.wait(30) == 0, f"{fake}\n{run.describe()}"
    assert sum(e["checked"] for e in run.events(CHECKED)) == meta.num_pieces, run.describe()
    assert run.events(BOTH)[0]["failed"] == 0 and fake.served == 0, fake
    assert_same_tree(root, tmp_path / "dl" / root.name)
