"""Fairness on the wire, in one process: control-message budgets, bounded costs, and a read loop that yields.

* :class:`~torrentcore.peer.budget.MessageBudget`: honest rates pass, a burst beyond the allowance is a flood.
* A real :class:`~torrentcore.peer.peer.Peer` (fed a scripted stream through the real ``Connection``, against
  ``harness.WirePort``: real metainfo, piece manager and hash checks) drops each kind of flood with a reason
  naming it, after a bounded number of messages; CANCELs over 500 queued uploads are O(1) each and end in a
  drop once they exceed the requests; a 5,000-entry extension handshake is refused after a bounded decode;
  requests pipelined behind INTERESTED, before the peer could see an unchoke, count as requests while choked.
* The read loop yields: a flooding peer whose socket never runs dry (a subprocess writes keep-alives as fast
  as they are read, budgets switched off) does not keep another peer on the same event loop from being served:
  that peer's message is handled after a bounded share of the flood, not after all of it.

End-to-end proof with a real libtorrent peer: tests/test_wire_flood.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import gevent
import gevent.event
import pytest
from realpeers import LOCALHOST, wait_until

from torrentcore import bencode
from torrentcore.bitfield import Bitfield
from torrentcore.peer import budget as bud
from torrentcore.peer import messages as msg
from torrentcore.peer import peer as peer_mod
from torrentcore.peer import upload
from torrentcore.peer.connection import Connection
from torrentcore.peer.extensions import MAX_HANDSHAKE_VALUES, ExtensionRegistry, MetadataServer, PexHandler

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "fuzz"))
import harness  # noqa: E402

# --- budgets -------------------------------------------------------------------------------------


def test_budget_passes_honest_rates_and_stops_a_burst():
    now = [0.0]
    budget = bud.MessageBudget(clock=lambda: now[0])
    allowance = bud.ALLOWANCES[bud.KEEPALIVE]
    for _ in range(1000):  # at the allowed rate (BEP 3 peers send a keep-alive every 2 minutes)
        now[0] += 1.0 / allowance.per_second
        budget.spend(bud.KEEPALIVE)
    now[0] += allowance.burst / allowance.per_second  # the bucket fills up again
    for _ in range(allowance.burst):  # then a full burst at once
        budget.spend(bud.KEEPALIVE)
    with pytest.raises(bud.FloodError, match="flood of keep-alive messages"):
        budget.spend(bud.KEEPALIVE)
    now[0] += 2.0 / allowance.per_second  # the bucket refills at the allowed rate
    budget.spend(bud.KEEPALIVE)
    budget.spend(bud.KEEPALIVE)
    with pytest.raises(bud.FloodError):
        budget.spend(bud.KEEPALIVE)
    assert budget.spent[bud.KEEPALIVE] == 1000 + allowance.burst + 2


# --- floods against a real Peer ------------------------------------------------------------------


def _run_peer(stream: bytes, have=(), fast: bool = False, actions: list | None = None, port=None):
    """A Peer (extension bit set) reading ``stream`` (after ``actions``), to the end or its drop."""
    port = port or harness.WirePort(have)
    registry = ExtensionRegistry({"ut_metadata": MetadataServer(port.meta.raw_info), "ut_pex": PexHandler(port)})
    holder = []

    def act(action, arg):
        if action == 0:
            holder[0].unchoke()

    script = [(a, 0) for a in actions or []] + [stream[i : i + 65536] for i in range(0, len(stream), 65536)]
    sock = harness.ScriptedSocket(script, act)
    reserved = msg.reserved_bytes(msg.RESERVED_EXTENSIONS, *([msg.RESERVED_FAST] if fast else []))
    peer = peer_mod.Peer(port, Connection(sock, ("127.0.0.9", 7)), b"-FL0001-" + b"x" * 12, reserved,
                         incoming=True, extensions=registry)
    holder.append(peer)
    port.peers[peer.address] = peer
    reason = peer.run()
    if isinstance(port.upload_limit, _Gate):
        port.upload_limit.open.set()
    for _ in range(3):
        gevent.sleep(0)  # the writer sends what is queued
    peer.conn.close(reason)
    peer.conn._writer.join(5)
    left = sum(len(item) for item in sock.script if isinstance(item, bytes))
    return peer, reason, len(stream) - left, sock


EXT = msg.extended(0, bencode.encode({b"m": {b"ut_metadata": 3, b"ut_pex": 4}}))
FLOODS = {
    "keep-alive": (b"", msg.KEEPALIVE, "flood of keep-alive messages"),
    "redundant have": (b"", msg.have(1), "flood of redundant have messages"),
    "interest toggles": (b"", msg.simple(msg.INTERESTED) + msg.simple(msg.NOT_INTERESTED),
                         "flood of choke/interest messages"),
    "ut_metadata requests": (EXT, msg.extended(2, bencode.encode({b"msg_type": 0, b"piece": 0})),
                             "too many ut_metadata requests"),
    "ut_pex": (EXT, msg.extended(1, bencode.encode({b"added": b"", b"dropped": b""})), "flood of extension messages"),
    "extension handshakes": (b"", EXT, "flood of extension handshake messages"),
    "port": (b"", msg.port(6881), "flood of port messages"),
    "unknown ids": (b"", harness.frame(0x42, b"?"), "flood of unknown id messages"),
    "late bitfields": (msg.have(0), msg.bitfield(b"\x80"), "flood of late bitfield messages"),
    # The slot rule (past CHOKE_GRACE, MAX_CHOKED_REQUESTS) ends it before the budget of useless requests.
    "requests while choked": (b"", msg.request(0, 0, 16384), "too many requests while choked"),
}


@pytest.mark.parametrize("kind", sorted(FLOODS))
def test_each_flood_is_dropped_with_its_reason(kind):
    first, repeated, reason = FLOODS[kind]
    count = 200_000 if len(repeated) < 20 else 20_000
    peer, ended, consumed, _sock = _run_peer(first + repeated * count, have=range(5))
    assert ended.startswith("protocol error: ") and reason in ended, ended
    # Dropped after its burst (plus what one read buffer held), not after the flood.
    assert consumed < len(first) + len(repeated) * 3000 + 256 * 1024, (consumed, ended)


def _bitfield_of(n: int, indices) -> bytes:
    bits = Bitfield(n)
    for i in indices:
        bits.set(i)
    return msg.bitfield(bits.to_bytes())


def _late_bitfields(n: int, step: int) -> bytes:
    """A leecher's stream: INTERESTED, a HAVE, then a bitfield of everything it has after each ``step`` pieces
    more (what aria2c sends instead of its HAVEs), up to all ``n``."""
    out = [msg.simple(msg.INTERESTED), msg.have(0)]
    out += [_bitfield_of(n, range(min(upto, n))) for upto in range(1 + step, n + step, step)]
    return b"".join(out)


def test_late_bitfields_as_aria2c_sends_them_are_taken_however_many():
    """aria2c sends a bitfield instead of its HAVEs once it is no longer than they would be (15 new pieces per
    bitfield of a 1,024-piece torrent): 68 in one stream, far beyond the late-bitfield budget's burst of 32, are
    all taken as HAVEs; the connection ends only with the stream."""
    n = 1024
    port = harness.WirePort(payload=bytes(n * 16384 // 256) * 256, piece_length=16384)
    stream = _late_bitfields(n, step=15)
    assert stream.count(bytes([0, 0, 0, 129, msg.BITFIELD])) > bud.ALLOWANCES[bud.LATE_BITFIELD].burst * 2
    peer, ended, consumed, _sock = _run_peer(stream, port=port)
    assert ended == "connection lost: connection closed by peer", ended
    assert consumed == len(stream) and peer.has.complete
    assert set(port.manager.availability.counts) == {1}  # every piece counted once, none twice


def test_late_bitfields_bringing_one_piece_each_spend_the_budget():
    """The same stream with one new piece per bitfield (each still O(pieces) to read) is a flood: dropped after
    the budget's burst, long before its 1,023 bitfields end."""
    n = 1024
    port = harness.WirePort(payload=bytes(n * 16384 // 256) * 256, piece_length=16384)
    stream = _late_bitfields(n, step=1)
    peer, ended, consumed, _sock = _run_peer(stream, port=port)
    assert "flood of late bitfield messages" in ended, ended
    assert peer.has.count < 64 + 256 * 1024 // 133, peer.has.count  # the burst, plus what one read buffer held


def test_a_request_repeated_while_queued_is_answered_once_and_a_flood_of_them_is_dropped():
    port = harness.WirePort(range(5))
    port.upload_limit = _Gate()  # nothing is served until the peer is gone: the request stays queued
    stream = msg.simple(msg.INTERESTED) + msg.request(1, 0, 16384) * 100_000
    peer, ended, _consumed, sock = _run_peer(stream, fast=True, actions=[0], port=port)
    assert "flood of useless request messages" in ended, ended
    assert peer.serving.bad_requests == 0 and not sock.sent.count(bytes([0, 0, 0, 13, msg.REJECT]))


def test_honest_conversation_stays_within_every_budget():
    """A seeder's conversation, uploads and keep-alives included, ends only when the stream does."""
    for seed in harness.peer_seeds()[:4]:
        mode, script = harness.parse_wire_script(seed)
        stream = b"".join(item for item in script if isinstance(item, bytes))
        _peer, ended, _consumed, _sock = _run_peer(stream + msg.KEEPALIVE * 10, fast=bool(mode & 1),
                                                   have=range(5) if mode & 8 else ())
        assert ended == "connection lost: connection closed by peer", ended


def test_cancels_over_500_queued_uploads_are_constant_cost_and_a_cancel_flood_is_dropped():
    # A torrent of 40 pieces of 16 blocks (640 blocks): the peer queues 500 requests (our reqq), cancels them
    # all (each answered by a REJECT: BEP 6), then keeps cancelling blocks it never asked for.
    n, piece_length = 40, 16 * 16384
    payload = bytes(range(256)) * (n * piece_length // 256)
    port = harness.WirePort(range(n), payload=payload, piece_length=piece_length)
    port.upload_limit = _Gate()  # the writer takes the first request, then waits: the other 499 stay queued
    blocks = [(i, b, 16384) for i in range(n) for b in range(0, piece_length, 16384)][: upload.OUR_REQQ]
    requests = b"".join(msg.request(*b) for b in blocks)
    cancels = b"".join(msg.cancel(*b) for b in reversed(blocks))  # the worst order for a list or deque
    flood = msg.cancel(0, 0, 16384) * 100_000
    peer, ended, consumed, sock = _run_peer(msg.simple(msg.INTERESTED) + requests + cancels + flood, fast=True,
                                            actions=[0], port=port)
    assert ended.startswith("protocol error: flood of cancel messages"), ended
    assert not peer.serving.uploads and peer.serving.requests_in == len(blocks)
    assert peer.serving.cancels_in == len(blocks) + upload.CANCEL_SLACK + 1
    assert consumed < 5 + 17 * 2 * len(blocks) + 17 * (upload.CANCEL_SLACK + 1) + 256 * 1024
    # A REJECT for each cancelled request (BEP 6: one answer per request), none for the flood.
    rejects = sock.sent.count(bytes([0, 0, 0, 13, msg.REJECT]))
    assert rejects == len(blocks) - 1, rejects


class _Gate:
    """An upload limit that holds the writer until ``open`` is set."""

    rate = 1.0

    def __init__(self) -> None:
        self.open = gevent.event.Event()

    def consume(self, n: int) -> None:
        self.open.wait(30)


class _FreeSlotPort(harness.WirePort):
    """A torrent whose choker has a free slot: INTERESTED, once it reaches it, unchokes the peer at once."""

    def interest_changed(self, peer) -> None:
        super().interest_changed(peer)
        if peer.peer_interested:
            peer.unchoke()


def _interest_then(chunks: list[bytes]):
    port = _FreeSlotPort(range(5))
    sock = harness.ScriptedSocket(list(chunks), lambda *a: None)
    peer = peer_mod.Peer(port, Connection(sock, ("127.0.0.9", 7)), b"-XX0001-" + b"x" * 12, bytes(8), incoming=True)
    port.peers[peer.address] = peer
    reason = peer.run()
    for _ in range(3):
        gevent.sleep(0)  # the writer sends what is queued
    peer.conn.close(reason)
    peer.conn._writer.join(5)
    return port, reason, bytes(sock.sent)


def test_requests_pipelined_behind_interested_are_requests_while_choked():
    """INTERESTED reaches the choker once what came with it is read: 60 REQUESTs sent in the same breath (before
    the peer could see an unchoke) are requests while choked and end the connection, no block served; the same
    REQUESTs after a pause (the peer waited for our UNCHOKE) are served."""
    requests = b"".join(msg.request(i % 5, 0, 16384) for i in range(60))
    piece = bytes([msg.PIECE])
    port, ended, sent = _interest_then([msg.simple(msg.INTERESTED) + requests])
    assert "too many requests while choked" in ended, ended
    assert port.interest_changes == 0 and bytes([0, 0, 0, 1, msg.UNCHOKE]) not in sent
    assert b"\x00\x00\x40\x09" + piece not in sent  # no 16 KiB block
    port, ended, sent = _interest_then([msg.simple(msg.INTERESTED), requests[: 5 * 17]])
    assert ended == "connection lost: connection closed by peer", ended
    assert port.interest_changes == 1 and bytes([0, 0, 0, 1, msg.UNCHOKE]) in sent
    assert sent.count(b"\x00\x00\x40\x09" + piece) == 5  # five blocks of 16 KiB served


def test_oversized_extension_handshake_is_refused_after_a_bounded_decode():
    big = msg.extended(0, bencode.encode({b"m": {b"e%04d" % i: i % 250 + 1 for i in range(5000)}}))
    assert len(big) < 64 * 1024
    peer, ended, _consumed, _sock = _run_peer(big)
    assert f"bad extension handshake: bencoding has more than {MAX_HANDSHAKE_VALUES} values" in ended, ended
    # An honest handshake with an 'm' of a few names is read; the names we do not speak cost nothing.
    ok = msg.extended(0, bencode.encode({b"m": {b"ut_metadata": 3, b"lt_donthave": 7, b"upload_only": 8}}))
    peer, ended, _consumed, _sock = _run_peer(ok)
    assert ended == "connection lost: connection closed by peer" and peer.supports_extension("ut_metadata")


# --- the read loop yields ------------------------------------------------------------------------

#: Keep-alives the flooding subprocess writes (16 MB): without the yield the other peer waits for all of them.
FLOOD_KEEPALIVES = 4_000_000

FLOOD_WRITER = textwrap.dedent("""
    import socket, sys
    sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    chunk = b"\\x00\\x00\\x00\\x00" * 16384
    for _ in range(int(sys.argv[2]) // 16384):
        sock.sendall(chunk)
    sock.shutdown(socket.SHUT_WR)
    sock.recv(1)
""")


def test_a_flooding_peer_does_not_keep_another_peer_waiting():
    """Budgets off: only the read loop's yield stands between the flood and the other peer."""
    unlimited = {kind: bud.Allowance(10**9, 1e9) for kind in bud.ALLOWANCES}
    port = harness.WirePort(range(5))
    listener = socket.create_server((LOCALHOST, 0))
    writer = subprocess.Popen([sys.executable, "-c", FLOOD_WRITER, str(listener.getsockname()[1]),
                               str(FLOOD_KEEPALIVES)])
    ours, theirs = socket.socketpair()
    flood_peer = other = None
    try:
        listener.settimeout(20)
        flood_sock, _ = listener.accept()
        flood_peer = peer_mod.Peer(port, Connection(flood_sock, ("127.0.0.8", 1)), b"F" * 20, bytes(8), True)
        flood_peer.budget = bud.MessageBudget(unlimited)
        other = peer_mod.Peer(port, Connection(ours, ("127.0.0.7", 1)), b"O" * 20, bytes(8), True)
        runs = [gevent.spawn(flood_peer.run), gevent.spawn(other.run)]
        assert wait_until(lambda: flood_peer.budget.spent[bud.KEEPALIVE] > 100_000 or runs[0].dead, 60)
        at_send = flood_peer.budget.spent[bud.KEEPALIVE]
        theirs.sendall(msg.have(3))
        assert wait_until(lambda: other.has[3] or runs[0].dead, 60)
        at_handled = flood_peer.budget.spent[bud.KEEPALIVE]
        print(f"the other peer's HAVE was handled after {at_handled - at_send} flood messages "
              f"(of {FLOOD_KEEPALIVES}; {at_send} before it was sent)")
        assert other.has[3], "the other peer's message was never handled"
        assert at_handled - at_send < FLOOD_KEEPALIVES // 4, (at_send, at_handled)
    finally:
        for p in (flood_peer, other):
            if p is not None:
                p.conn.close("test over")
        writer.kill()
        writer.wait(10)
        listener.close()
        theirs.close()
