"""More hostile peers, each beside an honest, rate-limited libtorrent seeder (see test_hostile_peers.py).

A fake peer on 127.0.0.1 misbehaves in one way: a bitfield of the wrong length or with spare bits set, a
HAVE for a piece that does not exist, requests for a piece that does not exist, beyond the end of a
piece or longer than any block, a block nobody asked for, a flood of tens of thousands of small
messages, a peer that stops in the middle of a message or of a block. Each time torrentcore must end
that connection (the flood may also simply be absorbed) with a reason naming the problem, leave the
honest seeder alone, and finish with files byte for byte equal to the payload, exit code 0 and no
traceback. The payload has 97 pieces, so the bitfield has spare bits.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakepeer import (
    BITFIELD,
    HAVE,
    INTERESTED,
    NOT_INTERESTED,
    PIECE,
    REQUEST,
    UNCHOKE,
    assert_clean_finish,
    fakes_fixture,  # noqa: F401  (fixture "fakes")
    full_bitfield,
    handshake,
    honest_swarm,
    message,
    recv_exact,
)
from realpeers import LOCALHOST, assert_same_tree, wait_until
from test_hostile_peers import FakePeer
from torrentcore_cli import TorrentcoreProcess, torrentcore_factory  # noqa: F401  (fixture "torrentcore")

PIECE_LENGTH = 64 * 1024
SIZE = 96 * PIECE_LENGTH + 3 * 16384 + 7  # 97 pieces: 7 spare bits in the bitfield
NUM_PIECES = 97
HONEST_RATE = 2_500_000
RUN_TIMEOUT = 40
#: Messages of each kind in the flood.
FLOOD = 20_000


class MoreFakePeer(FakePeer):
    """:class:`FakePeer` with more behaviours (see the module docstring); counters as there, plus
    ``flood_sent`` (the whole flood was accepted by torrentcore's side of the socket) and ``rss_before``
    (torrentcore's resident memory when the first flood started, when ``pid`` is set)."""

    def __init__(self, behaviour: str, info_hash: bytes, num_pieces: int, payload: Path) -> None:
        super().__init__(behaviour, info_hash, num_pieces, payload)
        self.flood_sent = False
        self.pid: int | None = None
        self.rss_before = 0

    def _script(self, sock) -> None:
        b = self.behaviour
        theirs = recv_exact(sock, 68)
        if theirs[28:48] != self.info_hash:
            self.errors.append(f"unexpected handshake {theirs!r}")
        self.handshakes += 1
        sock.sendall(handshake(self.info_hash, self.peer_id))
        bits = full_bitfield(self.num_pieces)
        if b == "bitfield-length":
            sock.sendall(message(BITFIELD, bits + b"\xff"))
        elif b == "spare-bits":
            sock.sendall(message(BITFIELD, bits[:-1] + b"\xff"))
        elif b == "have-out-of-range":
            sock.sendall(message(HAVE, struct.pack(">I", 0)) + message(HAVE, struct.pack(">I", self.num_pieces)))
        elif b.startswith("request-"):
            index, begin, length = {
                "request-no-such-piece": (self.num_pieces + 3, 0, 16384),
                "request-beyond-piece": (0, PIECE_LENGTH - 8192, 16384),
                "request-oversized": (0, 0, 1 << 20),
            }[b]
            sock.sendall(message(INTERESTED) + message(REQUEST, struct.pack(">III", index, begin, length)))
        elif b == "unrequested-block":
            # Before UNCHOKE torrentcore has asked for nothing: this block is pushed at it.
            last = self.num_pieces - 1
            block = self.payload[last * PIECE_LENGTH : last * PIECE_LENGTH + 16384]
            sock.sendall(message(BITFIELD, bits) + message(PIECE, struct.pack(">II", last, 0) + block))
        elif b == "flood":
            self._flood(sock, bits)
            return self._serve_honestly(sock)
        elif b == "stop-mid-message":
            sock.sendall(message(BITFIELD, bits) + message(UNCHOKE) + struct.pack(">IB", 13, REQUEST) + b"\x00\x00")
        elif b == "stop-mid-block":
            sock.sendall(message(BITFIELD, bits) + message(UNCHOKE))
            while True:
                (length,) = struct.unpack(">I", recv_exact(sock, 4))
                body = recv_exact(sock, length) if length else b""
                if body[:1] == bytes([REQUEST]):
                    break
            self.requests += 1
            index, begin, size = struct.unpack(">III", body[1:13])
            start = index * PIECE_LENGTH + begin
            sock.sendall(struct.pack(">IB", 9 + size, PIECE) + struct.pack(">II", index, begin)
                         + self.payload[start : start + size // 2])
        else:
            raise AssertionError(f"unknown behaviour {b}")
        self._drain(sock)

    def _flood(self, sock, bits: bytes) -> None:
        """Tens of thousands of valid but useless messages, sent as fast as torrentcore reads them."""
        if self.pid is not None and not self.rss_before:
            self.rss_before = _rss(self.pid)
        sock.sendall(message(BITFIELD, bits))
        haves = b"".join(message(HAVE, struct.pack(">I", i % self.num_pieces)) for i in range(FLOOD))
        toggles = (message(INTERESTED) + message(NOT_INTERESTED)) * (FLOOD // 2)
        keepalives = b"\x00\x00\x00\x00" * FLOOD
        for chunk in (haves, keepalives, toggles, haves, toggles):
            sock.sendall(chunk)
        self.flood_sent = True

    def _serve_honestly(self, sock) -> None:
        """UNCHOKE, then answer every request with the right block: torrentcore only asks once it has read
        everything sent before."""
        sock.sendall(message(UNCHOKE))
        while True:
            (length,) = struct.unpack(">I", recv_exact(sock, 4))
            body = recv_exact(sock, length) if length else b""
            if body[:1] != bytes([REQUEST]):
                continue
            self.requests += 1
            index, begin, size = struct.unpack(">III", body[1:13])
            start = index * PIECE_LENGTH + begin
            sock.sendall(message(PIECE, struct.pack(">II", index, begin) + self.payload[start : start + size]))
            self.blocks_sent += 1



def _rss(pid: int) -> int:
    """Resident memory of process ``pid`` in bytes (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@pytest.fixture
def swarm(tmp_path: Path) -> Iterator[dict]:
    with honest_swarm(tmp_path, SIZE, seed=78, name="hostile.bin", piece_length=PIECE_LENGTH,
                      rate=HONEST_RATE) as honest:
        yield honest


def _run(swarm: dict, fakes: list, torrentcore, tmp_path: Path, behaviour: str, *extra: str):
    fake = MoreFakePeer(behaviour, swarm["info_hash"], NUM_PIECES, swarm["root"])
    fakes.append(fake)
    run = torrentcore.run(swarm["torrent"], tmp_path / "out", *extra,
                          peers=[fake.endpoint, swarm["seeder"].endpoint], log_level="debug")
    fake.pid = run.process.pid
    return fake, run


def _lost(run: TorrentcoreProcess, address: str) -> list[str]:
    return [e.get("reason", "") for e in run.events("peer lost") if e.get("peer") == address]


def _assert_dropped_and_done(run: TorrentcoreProcess, swarm: dict, tmp_path: Path, fake: MoreFakePeer,
                             reason: str) -> None:
    # torrentcore ends the connection itself, while the download still runs. (The fake sees the close a moment
    # before torrentcore's "peer lost" line reaches its log file: wait for both.)
    def dropped() -> bool:
        return fake.closed_by_them >= 1 and any(reason in r for r in _lost(run, fake.address))

    wait_until(lambda: dropped() or run.returncode is not None, 20)
    context = f"{run.describe()}\n{fake!r}\n{swarm['pool'].describe()}"
    assert dropped(), context
    context = assert_clean_finish(run, swarm, tmp_path / "out" / "hostile.bin", repr(fake), RUN_TIMEOUT)
    summary = run.summary()
    assert summary is not None and summary["verdict"] == "done", context
    # The honest seeder was not disturbed: never dropped for a protocol error, never banned.
    honest = f"{LOCALHOST}:{swarm['seeder'].port}"
    assert not [r for r in _lost(run, honest) if "protocol" in r or "request" in r], context
    assert not run.events("peer banned"), context


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        ("bitfield-length", "bitfield of 14 bytes for 97 pieces"),
        ("spare-bits", "spare bits"),
        ("have-out-of-range", "have for piece 97 of 97"),
        ("request-no-such-piece", "invalid request (piece 100,"),
        ("request-beyond-piece", "invalid request (piece 0, offset 57344, 16384 bytes)"),
        ("request-oversized", "invalid request (piece 0, offset 0, 1048576 bytes)"),
        ("unrequested-block", "block we did not request (piece 96, offset 0"),
    ],
)
def test_malformed_message_ends_the_connection(tmp_path, swarm, fakes, torrentcore, behaviour, reason):
    fake, run = _run(swarm, fakes, torrentcore, tmp_path, behaviour)
    _assert_dropped_and_done(run, swarm, tmp_path, fake, reason)


def test_peer_stopping_mid_message_is_dropped(tmp_path, swarm, fakes, torrentcore, monkeypatch):
    # The engine's mid-message timeout (30 s) is lowered to 1 s by a --plugin module of this folder.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                                   os.environ.get("PYTHONPATH")])))
    fake, run = _run(swarm, fakes, torrentcore, tmp_path, "stop-mid-message", "--plugin", "tc_short_message_timeout")
    _assert_dropped_and_done(run, swarm, tmp_path, fake, "stopped for 1 s in the middle of a message")


def test_peer_stopping_mid_block_is_dropped_and_its_request_goes_elsewhere(tmp_path, swarm, fakes, torrentcore,
                                                                           monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                                   os.environ.get("PYTHONPATH")])))
    fake, run = _run(swarm, fakes, torrentcore, tmp_path, "stop-mid-block", "--plugin", "tc_short_message_timeout")
    _assert_dropped_and_done(run, swarm, tmp_path, fake, "timed out")
    assert fake.requests >= 1, fake


def test_message_flood_is_absorbed_with_bounded_memory(tmp_path, swarm, fakes, torrentcore):
    fake, run = _run(swarm, fakes, torrentcore, tmp_path, "flood")
    context = f"{run.describe()}\n{fake!r}"
    # 100 000 messages: torrentcore reads them all (or drops the peer), and the download goes on.
    peak = 0
    for _ in range(RUN_TIMEOUT * 10):  # bounded: the run itself is limited to RUN_TIMEOUT seconds
        if run.returncode is not None:
            break
        if fake.rss_before:
            peak = max(peak, _rss(run.process.pid))
        time.sleep(0.1)
    assert run.wait(RUN_TIMEOUT) == 0, context
    assert "Traceback" not in run.stderr, context
    assert_same_tree(swarm["root"], tmp_path / "out" / "hostile.bin", context)
    assert not run.events("peer banned"), context
    lost = _lost(run, fake.address)
    assert fake.flood_sent or (fake.closed_by_them and lost), context
    if fake.flood_sent and not any("protocol" in r for r in lost):
        # Absorbed: torrentcore read through all of it and then downloaded from this peer like any other.
        assert fake.blocks_sent > 0, context
    assert fake.rss_before and peak, context
    print(f"torrentcore RSS {fake.rss_before >> 20} MiB when the flood began, at most {peak >> 20} MiB after")
    assert peak - fake.rss_before < 64 << 20, f"memory grew by {(peak - fake.rss_before) >> 20} MiB\n{context}"


def test_peer_that_never_reads_costs_bounded_memory():
    """Messages queued for a peer that reads nothing (it provokes CHOKE/UNCHOKE, HAVEs, ...) are capped."""
    import socket

    import gevent

    from torrentcore.peer import connection

    ours, theirs = socket.socketpair()
    conn = connection.Connection(ours, ("127.0.0.1", 1))
    conn.start_writer()
    sent = 0
    try:
        for _ in range(8 * connection.MAX_QUEUED // 16384):  # bounded: 8 times the cap at most
            if conn.closed:
                break
            conn.send(b"\x00\x00\x40\x01\x05" + bytes(16379))
            sent += 16384
            gevent.sleep(0)  # the writer runs until the socket buffers are full, then waits in sendall
        assert conn.closed, f"still open after {sent} bytes queued to a peer that reads nothing"
        assert "does not read" in conn.close_reason, conn.close_reason
        print(f"closed after {sent >> 20} MiB sent or queued (cap {connection.MAX_QUEUED >> 20} MiB)")
    finally:
        conn.close()
        theirs.close()
