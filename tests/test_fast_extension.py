"""The fast extension (BEP 6): HAVE ALL / HAVE NONE, REJECT, ALLOWED FAST, SUGGEST.

Real peers prove the extension works with another implementation: libtorrent (which enables BEP 6 by
default) downloads from a torrentcore seeder and says in its peer log that it received HAVE ALL and
ALLOWED FAST, and torrentcore downloads from a libtorrent seeder that sends HAVE ALL. Fake peers written
here cover what a real client will not do on demand: reject every request, serve only allowed-fast
pieces while choking, and break the extension's rules (dropped with a protocol error). Everything runs
on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import gevent
import libtorrent as lt
import pytest
from fakepeer import (
    FakePeerServer,
    assert_clean_finish,
    fakes_fixture,  # noqa: F401  (fixture "fakes")
    handshake,
    honest_swarm,
    message,
    read_message,
    recv_exact,
)
from realpeers import LOCALHOST, LibtorrentPeer, assert_same_tree, wait_until
from torrentcore_cli import TorrentcoreProcess, torrentcore_factory  # noqa: F401  (fixture "torrentcore")

from torrentcore.peer import messages as msg

PIECE_LENGTH = 64 * 1024
SIZE = 6 << 20
NUM_PIECES = SIZE // PIECE_LENGTH
BLOCK = 16 * 1024
#: The honest seeder's upload cap (bytes/s): the download lasts long enough for the fakes to matter.
HONEST_RATE = 2_500_000
RUN_TIMEOUT = 40
FAST_RESERVED = bytes(7) + b"\x04"


def _poll_messages(sock: socket.socket, seconds: float) -> list[tuple[int, bytes]]:
    """Every message that starts arriving within ``seconds`` (each is then read whole)."""
    out = []
    deadline = time.monotonic() + seconds
    while select.select([sock], [], [], max(0.0, deadline - time.monotonic()))[0]:
        out.append(read_message(sock))
    return out


class FastFake(FakePeerServer):
    """A scripted fast-extension peer listening on 127.0.0.1; torrentcore dials it (``--peer``).

    ``behaviour``:

    * ``reject``: HAVE ALL, UNCHOKE, then REJECT for every request (never sends data);
    * ``allowed-fast``: HAVE ALL and ALLOWED FAST for ``allowed`` pieces, never unchokes, serves requests
      for allowed pieces and rejects any other;
    * ``choke-reject``: HAVE ALL, UNCHOKE; takes the first batch of requests, then CHOKE and a REJECT for
      each (BEP 6: choking no longer voids requests), UNCHOKE again and serves everything asked after that;
    * ``reject-first``: HAVE ALL, UNCHOKE; rejects the first batch of requests without choking, then
      serves everything asked after that;
    * ``late-have-all``: HAVE NONE, then HAVE ALL (only allowed as the first message);
    * ``unsent-reject``: HAVE ALL, then a REJECT for a request torrentcore never sent;
    * ``no-bit``: does not set the fast bit in its handshake, then sends HAVE ALL;
    * ``out-of-range``: HAVE ALL, then ALLOWED FAST for a piece the torrent does not have.

    Counters are read by the tests: those of :class:`FakePeerServer`, plus the requests received, those
    rejected and the blocks sent.
    """

    def __init__(self, behaviour: str, info_hash: bytes, payload: Path, allowed: tuple[int, ...] = ()) -> None:
        self.allowed = set(allowed)
        self.their_reserved = b""
        self.requests: list[tuple[int, int, int]] = []
        self.rejected: list[tuple[int, int, int]] = []
        self.blocks_sent = 0
        super().__init__(behaviour, info_hash, payload)

    def counters(self) -> dict[str, int]:
        return {"requests": len(self.requests), "rejected": len(self.rejected), "blocks_sent": self.blocks_sent}

    def _script(self, sock: socket.socket) -> None:
        theirs = recv_exact(sock, 68)
        self.their_reserved = theirs[20:28]
        reserved = bytes(8) if self.behaviour == "no-bit" else FAST_RESERVED
        sock.sendall(handshake(self.info_hash, self.peer_id, reserved))
        b = self.behaviour
        if b == "late-have-all":
            sock.sendall(message(msg.HAVE_NONE) + message(msg.HAVE_ALL))
        elif b == "unsent-reject":
            sock.sendall(message(msg.HAVE_ALL) + message(msg.REJECT, struct.pack(">III", 1, 0, BLOCK)))
        elif b == "no-bit":
            sock.sendall(message(msg.HAVE_ALL))
        elif b == "out-of-range":
            sock.sendall(message(msg.HAVE_ALL) + message(msg.ALLOWED_FAST, struct.pack(">I", NUM_PIECES + 7)))
        elif b == "reject":
            sock.sendall(message(msg.HAVE_ALL) + message(msg.UNCHOKE))
        elif b == "allowed-fast":
            sock.sendall(message(msg.HAVE_ALL)
                         + b"".join(message(msg.ALLOWED_FAST, struct.pack(">I", i)) for i in sorted(self.allowed)))
        elif b in ("choke-reject", "reject-first"):
            sock.sendall(message(msg.HAVE_ALL) + message(msg.UNCHOKE))
            batch = []
            while not batch:
                batch = [p for i, p in [read_message(sock)] + _poll_messages(sock, 0.3) if i == msg.REQUEST]
            self.requests += [struct.unpack(">III", p) for p in batch]
            self.rejected += [struct.unpack(">III", p) for p in batch]
            choke = message(msg.CHOKE) if b == "choke-reject" else b""
            sock.sendall(choke + b"".join(message(msg.REJECT, p) for p in batch))
            if choke:
                gevent.sleep(0.3)
                sock.sendall(message(msg.UNCHOKE))
        while True:
            msg_id, payload = read_message(sock)
            if msg_id != msg.REQUEST:
                continue
            index, begin, length = struct.unpack(">III", payload)
            self.requests.append((index, begin, length))
            if (b == "allowed-fast" and index in self.allowed) or b in ("choke-reject", "reject-first"):
                start = index * PIECE_LENGTH + begin
                sock.sendall(message(msg.PIECE, struct.pack(">II", index, begin)
                                      + self.payload[start : start + length]))
                self.blocks_sent += 1
                if b == "allowed-fast":
                    gevent.sleep(0.01)  # a modest rate: the honest seeder does most of the work
            elif b in ("reject", "allowed-fast"):
                self.rejected.append((index, begin, length))
                sock.sendall(message(msg.REJECT, payload))


@pytest.fixture
def swarm(tmp_path: Path) -> Iterator[dict]:
    """A payload, its .torrent (no tracker) and an honest, rate-limited libtorrent seeder."""
    with honest_swarm(tmp_path, SIZE, seed=66, name="fast.bin", piece_length=PIECE_LENGTH,
                      rate=HONEST_RATE) as honest:
        yield honest


def _assert_done(run: TorrentcoreProcess, swarm: dict, out: Path, context: str) -> None:
    assert_clean_finish(run, swarm, out / "fast.bin", context, RUN_TIMEOUT)


def _lost(run: TorrentcoreProcess, address: str) -> list[str]:
    return [e["reason"] for e in run.events("peer lost") if e.get("peer") == address]


def _connected(run: TorrentcoreProcess, address: str | None = None) -> list[dict]:
    return [e for e in run.events("peer connected") if address is None or e.get("peer") == address]


# --------------------------------------------------------------------------------------------------
# Unit: the allowed-fast set (BEP 6's own example) and the messages
# --------------------------------------------------------------------------------------------------


def test_allowed_fast_set_matches_the_bep_example():
    info_hash = b"\xaa" * 20
    assert msg.allowed_fast_set(info_hash, "80.4.4.200", 1313, 7) == [1059, 431, 808, 1217, 287, 376, 1188]
    assert msg.allowed_fast_set(info_hash, "80.4.4.200", 1313, 9) == [1059, 431, 808, 1217, 287, 376, 1188,
                                                                       353, 508]
    # Only the /24 network counts; an IPv4-mapped IPv6 address is the IPv4 address.
    assert msg.allowed_fast_set(info_hash, "80.4.4.7", 1313, 9) == msg.allowed_fast_set(info_hash, "80.4.4.200",
                                                                                         1313, 9)
    assert msg.allowed_fast_set(info_hash, "::ffff:80.4.4.200", 1313, 7)[:2] == [1059, 431]
    assert msg.allowed_fast_set(info_hash, "2001:db8::1", 1313, 7) == []  # BEP 6 defines IPv4 only
    assert msg.allowed_fast_set(info_hash, "80.4.4.200", 5, 10) == [0, 1, 2, 3, 4]


def test_fast_messages_on_the_wire():
    assert msg.simple(msg.HAVE_ALL) == b"\x00\x00\x00\x01\x0e"
    assert msg.simple(msg.HAVE_NONE) == b"\x00\x00\x00\x01\x0f"
    assert msg.reject(1, 16384, 16384) == struct.pack(">IBIII", 13, 0x10, 1, 16384, 16384)
    assert msg.allowed_fast(9) == struct.pack(">IBI", 5, 0x11, 9)
    assert msg.suggest(3) == struct.pack(">IBI", 5, 0x0D, 3)
    assert msg.has_bit(msg.reserved_bytes(msg.RESERVED_FAST), msg.RESERVED_FAST)
    assert msg.reserved_bytes(msg.RESERVED_FAST)[7] == 0x04


# --------------------------------------------------------------------------------------------------
# Real peers
# --------------------------------------------------------------------------------------------------


def test_libtorrent_leecher_gets_have_all_and_allowed_fast_from_a_torrentcore_seeder(tmp_path, swarm,
                                                                                     torrentcore):
    seed = torrentcore.seed(swarm["torrent"], swarm["root"].parent)
    port = seed.wait_listening()
    mask = int(lt.alert.category_t.all_categories)
    leecher = LibtorrentPeer(name="leecher", background_poll=None, alert_mask=mask)
    try:
        leecher.add_torrent(swarm["torrent"], tmp_path / "leech")
        leecher.connect_peer(LOCALHOST, port)
        log: list[str] = []

        def _finished() -> bool:
            log.extend(a.message() for a in leecher.poll() if type(a).__name__ == "peer_log_alert")
            return leecher.handle.status().is_seeding

        assert wait_until(_finished, 30), f"{leecher.describe()}\n{seed.describe()}"
        assert leecher.wait_finished(10), leecher.describe()
    finally:
        leecher.close()
    assert_same_tree(swarm["root"], tmp_path / "leech" / "fast.bin")
    context = "\n".join(log[-60:]) + "\n" + seed.describe()
    # libtorrent saw our fast bit, got HAVE ALL instead of a bitfield, and our allowed-fast set.
    assert any("<== EXTENSIONS" in line and "FAST" in line for line in log), context
    assert any("<== HAVE_ALL" in line for line in log), context
    assert not any("<== BITFIELD" in line for line in log), context
    got = sorted(int(line.rsplit("[", 1)[1].split("]")[0]) for line in log if "<== ALLOWED_FAST" in line)
    expected = sorted(msg.allowed_fast_set(swarm["info_hash"], LOCALHOST, NUM_PIECES, 10))
    assert got == expected, context
    connected = _connected(seed)
    assert connected and connected[0]["fast"] is True and connected[0]["source"] == "incoming", seed.describe()


def test_torrentcore_leecher_downloads_from_a_libtorrent_seeder_with_have_all(tmp_path, swarm, torrentcore):
    out = tmp_path / "out"
    run = torrentcore.run(swarm["torrent"], out, peers=[swarm["seeder"].endpoint], log_level="debug")
    _assert_done(run, swarm, out, "")
    honest = f"{LOCALHOST}:{swarm['seeder'].port}"
    connected = _connected(run, honest)
    assert connected and connected[0]["fast"] is True, run.describe()
    assert [e for e in run.events("peer sent have all") if e.get("peer") == honest], run.describe()
    assert not [r for r in _lost(run, honest) if "protocol error" in r], run.describe()


# --------------------------------------------------------------------------------------------------
# Fake peers for what real clients will not do on demand
# --------------------------------------------------------------------------------------------------


def test_rejected_blocks_are_fetched_from_another_peer(tmp_path, swarm, fakes, torrentcore):
    fake = FastFake("reject", swarm["info_hash"], swarm["root"])
    fakes.append(fake)
    out = tmp_path / "out"
    run = torrentcore.run(swarm["torrent"], out, peers=[fake.endpoint, swarm["seeder"].endpoint], log_level="debug")
    _assert_done(run, swarm, out, repr(fake))
    assert fake.their_reserved[7] & 0x04, fake  # torrentcore offered the extension
    assert fake.rejected, f"torrentcore never asked the rejecting peer for anything\n{fake!r}"
    # Every REJECT answered a real request: the fake was never dropped for a protocol error.
    assert not [r for r in _lost(run, fake.address) if "protocol error" in r], run.describe()
    # A rejected piece is not asked from the same peer again at once (the others got it meanwhile).
    assert len(fake.requests) < 4 * NUM_PIECES * (PIECE_LENGTH // BLOCK), fake


@pytest.mark.parametrize("behaviour", ["choke-reject", "reject-first"])
def test_rejected_blocks_are_asked_again_from_a_sole_seeder(tmp_path, swarm, fakes, torrentcore, behaviour):
    """The fake is the only peer: the rejected blocks must come back to the pool and be asked again (after
    an unchoke, or after a short back-off when it rejected while unchoking us)."""
    fake = FastFake(behaviour, swarm["info_hash"], swarm["root"])
    fakes.append(fake)
    out = tmp_path / "out"
    run = torrentcore.run(swarm["torrent"], out, peers=[fake.endpoint], log_level="debug")
    _assert_done(run, swarm, out, repr(fake))
    assert fake.rejected and fake.blocks_sent >= SIZE // BLOCK, fake
    assert not [r for r in _lost(run, fake.address) if "protocol error" in r], run.describe()
    # Every rejected block was asked for again after the unchoke.
    asked_after = fake.requests[len(fake.rejected):]
    assert set(fake.rejected) <= set(asked_after), fake


def test_allowed_fast_pieces_are_requested_while_choked(tmp_path, swarm, fakes, torrentcore):
    allowed = (NUM_PIECES - 4, NUM_PIECES - 3, NUM_PIECES - 2, NUM_PIECES - 1)
    fake = FastFake("allowed-fast", swarm["info_hash"], swarm["root"], allowed=allowed)
    fakes.append(fake)
    out = tmp_path / "out"
    run = torrentcore.run(swarm["torrent"], out, peers=[fake.endpoint, swarm["seeder"].endpoint], log_level="debug")
    _assert_done(run, swarm, out, repr(fake))
    # The fake never unchoked torrentcore, yet was asked for (and delivered) blocks of its allowed pieces only.
    assert fake.blocks_sent > 0, fake
    assert {i for i, _b, _n in fake.requests} <= set(allowed), fake
    assert not fake.rejected, fake


def test_fast_extension_rule_breakers_are_dropped(tmp_path, swarm, fakes, torrentcore):
    """One download, four rule breakers beside the honest seeder: each is dropped with a protocol error."""
    expected = {
        "late-have-all": "have all is only allowed as the first message",
        "unsent-reject": "reject for a block we did not request",
        "no-bit": "did not enable the fast extension",
        "out-of-range": f"allowed fast for piece {NUM_PIECES + 7} of {NUM_PIECES}",
    }
    for behaviour in expected:
        fakes.append(FastFake(behaviour, swarm["info_hash"], swarm["root"]))
    out = tmp_path / "out"
    run = torrentcore.run(swarm["torrent"], out, peers=[f.endpoint for f in fakes] + [swarm["seeder"].endpoint],
                          log_level="debug")
    everyone_dropped = wait_until(lambda: all(_lost(run, f.address) for f in fakes) or run.returncode is not None, 20)
    _assert_done(run, swarm, out, "\n".join(map(repr, fakes)))
    assert everyone_dropped, "\n".join(map(repr, fakes))
    for fake in fakes:
        reasons = _lost(run, fake.address)
        assert reasons, f"{fake!r}\n{run.describe()}"
        assert all(r.startswith("protocol error") and expected[fake.behaviour] in r for r in reasons), (fake, reasons)
        assert fake.closed_by_them >= 1, fake


# --------------------------------------------------------------------------------------------------
# A choked fake leecher dialling a torrentcore seeder
# --------------------------------------------------------------------------------------------------


def _dial(port: int, info_hash: bytes, fast: bool) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection((LOCALHOST, port), timeout=10)
    reserved = FAST_RESERVED if fast else bytes(8)
    sock.sendall(handshake(info_hash, b"-FK0001-leecherxxxxx", reserved))
    theirs = recv_exact(sock, 68)
    return sock, theirs[20:28]


def _collect(sock: socket.socket, seconds: float) -> list[tuple[int, bytes]]:
    """Every message that arrives within ``seconds`` (keep-alives dropped)."""
    out = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            msg_id, payload = read_message(sock)
        except (TimeoutError, socket.timeout):
            break
        if msg_id >= 0:
            out.append((msg_id, payload))
    return out


def test_a_choked_fast_leecher_is_served_its_allowed_fast_pieces(swarm, torrentcore):
    seed = torrentcore.seed(swarm["torrent"], swarm["root"].parent)
    port = seed.wait_listening()
    info_hash = swarm["info_hash"]
    data = swarm["root"].read_bytes()
    sock, reserved = _dial(port, info_hash, fast=True)
    with sock:
        assert reserved[7] & 0x04
        sock.sendall(message(msg.HAVE_NONE))  # not interested: the choker never unchokes it
        greeting = _collect(sock, 1.0)
        assert greeting and greeting[0][0] == msg.HAVE_ALL, greeting  # not a bitfield
        allowed = [struct.unpack(">I", p)[0] for i, p in greeting if i == msg.ALLOWED_FAST]
        assert allowed == msg.allowed_fast_set(info_hash, LOCALHOST, NUM_PIECES, 10), greeting
        other = next(i for i in range(NUM_PIECES) if i not in allowed)
        sock.sendall(message(msg.REQUEST, struct.pack(">III", allowed[0], BLOCK, BLOCK))
                     + message(msg.REQUEST, struct.pack(">III", other, 0, BLOCK)))
        answers = _collect(sock, 2.0)
    assert msg.UNCHOKE not in [i for i, _p in answers], answers
    pieces = [p for i, p in answers if i == msg.PIECE]
    start = allowed[0] * PIECE_LENGTH + BLOCK
    assert pieces == [struct.pack(">II", allowed[0], BLOCK) + data[start : start + BLOCK]], answers
    assert [p for i, p in answers if i == msg.REJECT] == [struct.pack(">III", other, 0, BLOCK)], answers


def test_a_choked_leecher_without_the_extension_gets_neither_data_nor_rejects(swarm, torrentcore):
    seed = torrentcore.seed(swarm["torrent"], swarm["root"].parent)
    port = seed.wait_listening()
    sock, reserved = _dial(port, swarm["info_hash"], fast=False)
    with sock:
        assert reserved[7] & 0x04  # torrentcore offers it; it is off because this peer did not
        greeting = _collect(sock, 1.0)
        assert greeting and greeting[0][0] == msg.BITFIELD, greeting
        assert not [i for i, _p in greeting if i in msg.FAST_IDS], greeting
        sock.sendall(message(msg.REQUEST, struct.pack(">III", 0, 0, BLOCK)))
        answers = _collect(sock, 1.5)
    assert not [i for i, _p in answers if i in (msg.PIECE, msg.REJECT)], answers  # BEP 3: silently dropped
