"""Hostile peers: fake BitTorrent peers written here, each next to an honest libtorrent seeder.

``torrentcore run`` (a subprocess, as a user runs it) is given both with ``--peer``. Whatever the fake
does (corrupt blocks, a 4 GiB length prefix, garbage instead of a handshake, a handshake for another
torrent, never answering requests), the download must end with exit code 0, the files byte for byte
equal to the payload and no traceback on stderr; and the fake must have been dealt with the way the
protocol expects (banned, dropped, refused, routed around). Everything runs on 127.0.0.1.

The fakes run in the test process as gevent greenlets (a ``StreamServer``); the honest seeder is
rate-limited so that the download lasts long enough for the fake to matter.
"""

from __future__ import annotations

import hashlib
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakepeer import (
    BITFIELD,
    PIECE,
    PROTOCOL,
    REQUEST,
    UNCHOKE,
    FakePeerServer,
    assert_clean_finish,
    fakes_fixture,  # noqa: F401  (fixture "fakes")
    full_bitfield,
    handshake,
    honest_swarm,
    message,
    recv_exact,
)
from realpeers import LOCALHOST, wait_until
from torrentcore_cli import TorrentcoreProcess, torrentcore_factory  # noqa: F401  (fixture "torrentcore")

PIECE_LENGTH = 64 * 1024
SIZE = 6 << 20
#: The honest seeder's upload cap (bytes/s): the download lasts a few seconds.
HONEST_RATE = 2_500_000
RUN_TIMEOUT = 40


class FakePeer(FakePeerServer):
    """A scripted peer listening on 127.0.0.1; torrentcore dials it (``--peer``).

    ``behaviour``:

    * ``liar``: a full seeder that flips a byte in the first block of every piece it sends;
    * ``huge``: handshake, bitfield, unchoke, then a message whose length prefix is 4 GiB - 1;
    * ``garbage``: answers the handshake with an HTTP response;
    * ``wrong-hash``: answers with a handshake for another torrent;
    * ``stall``: a full seeder that unchokes and takes requests but never answers them.

    Counters (read by the test): those of :class:`FakePeerServer` (connections accepted, connections the
    *other* side closed), plus handshakes and requests received, blocks sent (and corrupted).
    """

    def __init__(self, behaviour: str, info_hash: bytes, num_pieces: int, payload: Path) -> None:
        self.num_pieces = num_pieces
        self.handshakes = 0
        self.requests = 0
        self.blocks_sent = 0
        self.corrupted = 0
        super().__init__(behaviour, info_hash, payload)

    def counters(self) -> dict[str, int]:
        return {"handshakes": self.handshakes, "requests": self.requests, "blocks_sent": self.blocks_sent,
                "corrupted": self.corrupted}

    def _script(self, sock: socket.socket) -> None:
        if self.behaviour == "garbage":
            sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" + bytes(range(256)))
            self._drain(sock)
        theirs = recv_exact(sock, 68)
        if theirs[1:20] != PROTOCOL or theirs[28:48] != self.info_hash:
            self.errors.append(f"unexpected handshake {theirs!r}")
        self.handshakes += 1
        if self.behaviour == "wrong-hash":
            sock.sendall(handshake(hashlib.sha1(b"another torrent").digest(), self.peer_id))
            self._drain(sock)
        sock.sendall(handshake(self.info_hash, self.peer_id))
        sock.sendall(message(BITFIELD, full_bitfield(self.num_pieces)) + message(UNCHOKE))
        if self.behaviour == "huge":
            sock.sendall(struct.pack(">IB", 0xFFFFFFFF, PIECE) + bytes(1024))
            self._drain(sock)
        while True:
            (length,) = struct.unpack(">I", recv_exact(sock, 4))
            if not length:
                continue
            body = recv_exact(sock, length)
            if body[0] != REQUEST:
                continue
            self.requests += 1
            if self.behaviour == "stall":
                continue
            index, begin, size = struct.unpack(">III", body[1:13])
            start = index * PIECE_LENGTH + begin
            block = bytearray(self.payload[start : start + size])
            if self.behaviour == "liar" and begin == 0:
                block[0] ^= 0xFF
                self.corrupted += 1
            sock.sendall(message(PIECE, struct.pack(">II", index, begin) + bytes(block)))
            self.blocks_sent += 1


@pytest.fixture
def swarm(tmp_path: Path) -> Iterator[dict]:
    """A payload, its .torrent (no tracker) and an honest, rate-limited libtorrent seeder."""
    with honest_swarm(tmp_path, SIZE, seed=77, name="hostile.bin", piece_length=PIECE_LENGTH,
                      rate=HONEST_RATE) as honest:
        yield {**honest, "num_pieces": -(-SIZE // PIECE_LENGTH)}


def _start(swarm: dict, fakes: list[FakePeer], behaviour: str) -> FakePeer:
    fake = FakePeer(behaviour, swarm["info_hash"], swarm["num_pieces"], swarm["root"])
    fakes.append(fake)
    return fake


def _download(swarm: dict, torrentcore, tmp_path: Path, fake: FakePeer) -> TorrentcoreProcess:
    """Start torrentcore with the fake listed first, then the honest seeder (debug logs: peer reasons)."""
    return torrentcore.run(swarm["torrent"], tmp_path / "out", peers=[fake.endpoint, swarm["seeder"].endpoint],
                           log_level="debug")


def _assert_success(run: TorrentcoreProcess, swarm: dict, tmp_path: Path, fake: FakePeer) -> None:
    context = assert_clean_finish(run, swarm, tmp_path / "out" / "hostile.bin", repr(fake), RUN_TIMEOUT)
    summary = run.summary()
    assert summary is not None and summary["verdict"] == "done", context


def _peer_events(run: TorrentcoreProcess, event: str, fake: FakePeer) -> list[dict]:
    return [e for e in run.events(event) if e.get("peer") == fake.address]


def _dial_into(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Connect to torrentcore, send ``data``, return what it sent back before closing (bounded)."""
    received = bytearray()
    with socket.create_connection((LOCALHOST, port), timeout=timeout) as sock:
        sock.sendall(data)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                return bytes(received)
            received += chunk
    raise AssertionError(f"torrentcore kept the connection open for {timeout} s; it sent {bytes(received)!r}")


# --------------------------------------------------------------------------------------------------


def test_liar_is_banned_and_the_download_is_correct(tmp_path, swarm, fakes, torrentcore):
    liar = _start(swarm, fakes, "liar")
    run = _download(swarm, torrentcore, tmp_path, liar)
    assert run.wait_event("peer banned", 20), f"{run.describe()}\n{liar!r}"
    # Once banned, the liar's connection is closed and it gets no more requests, nor a new connection.
    assert wait_until(lambda: liar.closed_by_them >= liar.accepted, 5), f"{run.describe()}\n{liar!r}"
    requests, accepted = liar.requests, liar.accepted

    _assert_success(run, swarm, tmp_path, liar)
    assert liar.corrupted > 0, liar
    assert (liar.requests, liar.accepted) == (requests, accepted), liar
    banned = run.events("peer banned")
    assert [e["peer"] for e in banned] == [liar.address], banned
    assert run.events("piece failed hash check"), run.describe()
    assert any("banned" in line and liar.address in line for line in run.stdout.splitlines()), run.stdout
    # The honest seeder was never blamed.
    honest = f"{LOCALHOST}:{swarm['seeder'].port}"
    assert not any(honest in line for line in run.stdout.splitlines() if "banned" in line), run.stdout


def test_four_gib_length_prefix_drops_the_peer(tmp_path, swarm, fakes, torrentcore):
    fake = _start(swarm, fakes, "huge")
    run = _download(swarm, torrentcore, tmp_path, fake)
    assert wait_until(lambda: fake.closed_by_them >= 1 or run.returncode is not None, 20), fake
    assert fake.closed_by_them >= 1, f"torrentcore did not drop the peer\n{fake!r}\n{run.describe()}"
    _assert_success(run, swarm, tmp_path, fake)
    lost = _peer_events(run, "peer lost", fake)
    assert lost and "larger than" in lost[0]["reason"], run.describe()


def test_garbage_instead_of_a_handshake(tmp_path, swarm, fakes, torrentcore):
    fake = _start(swarm, fakes, "garbage")
    run = _download(swarm, torrentcore, tmp_path, fake)
    assert run.wait_event("listening", 10), run.describe()
    # The other direction too: a connection to torrentcore that sends garbage is closed. Bytes that are not a
    # plaintext handshake may start an MSE/PE one (--encryption prefer): its first 96 are answered with our
    # public key and padding (at most 96 + 512 bytes), never with a BitTorrent handshake, and the connection
    # is closed once the 512-byte window for HASH('req1', S) has passed without it.
    answer = _dial_into(run.listening_port(), b"GET /announce HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(700))
    assert len(answer) <= 96 + 512 and b"BitTorrent protocol" not in answer, answer
    _assert_success(run, swarm, tmp_path, fake)
    assert fake.accepted >= 1 and fake.handshakes == 0, fake
    failed = _peer_events(run, "dial failed", fake)
    assert failed and all("handshake" in e["reason"] for e in failed), run.describe()


def test_handshake_for_another_torrent(tmp_path, swarm, fakes, torrentcore):
    fake = _start(swarm, fakes, "wrong-hash")
    run = _download(swarm, torrentcore, tmp_path, fake)
    assert run.wait_event("listening", 10), run.describe()
    # Incoming: a handshake for a torrent torrentcore does not serve is dropped before it answers (BEP 3).
    other = hashlib.sha1(b"another torrent").digest()
    assert _dial_into(run.listening_port(), handshake(other, b"-FK0001-incomingxxxx")) == b""
    _assert_success(run, swarm, tmp_path, fake)
    assert fake.handshakes >= 1 and fake.requests == 0, fake
    assert fake.closed_by_them >= 1, fake
    failed = _peer_events(run, "dial failed", fake)
    assert failed and all("another torrent" in e["reason"] for e in failed), run.describe()


def test_stalling_peer_is_routed_around(tmp_path, swarm, fakes, torrentcore):
    fake = _start(swarm, fakes, "stall")
    run = _download(swarm, torrentcore, tmp_path, fake)
    _assert_success(run, swarm, tmp_path, fake)
    assert fake.requests > 0, f"the stalling peer was never asked for anything\n{fake!r}"
    assert fake.blocks_sent == 0
