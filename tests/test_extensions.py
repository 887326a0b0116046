"""The extension protocol (BEP 10): the registry, id negotiation (ours vs theirs), ut_metadata codec,
serving metadata, and a plugin's own extension message round-tripping between two torrentcore processes.
"""

from __future__ import annotations

import os
import socket
import struct
import textwrap
from pathlib import Path

import pytest
from realpeers import make_payload, make_torrent, wait_until
from torrentcore_cli import torrentcore_factory  # noqa: F401  (fixture "torrentcore")

from torrentcore import bencode
from torrentcore.errors import PluginError, ProtocolError
from torrentcore.metainfo import parse
from torrentcore.peer import messages as msg
from torrentcore.peer.extensions import (
    FIRST_PLUGIN_ID,
    MAX_METADATA_SIZE,
    META_DATA,
    META_REJECT,
    META_REQUEST,
    UT_METADATA,
    UT_PEX,
    ExtensionRegistry,
    MetadataServer,
    PeerExtensions,
    metadata_data,
    metadata_piece_count,
    metadata_reject,
    metadata_request,
    parse_metadata,
)

# --------------------------------------------------------------------------------------------------
# Dispatch with a recording peer (no network)
# --------------------------------------------------------------------------------------------------


class Recorder:
    """An extension handler that records what it gets."""

    def __init__(self) -> None:
        self.handshakes: list[dict] = []
        self.messages: list[bytes] = []

    def on_handshake(self, peer, handshake):
        self.handshakes.append(handshake)

    def on_message(self, peer, payload):
        self.messages.append(payload)


class FakePeer:
    """What a handler sees of a peer; ``sent`` records (their id, payload) as the wire would carry them."""

    address = ("10.0.0.9", 6881)
    client = "fake"
    extension_handshake = None

    def __init__(self, registry: ExtensionRegistry) -> None:
        self.extensions = PeerExtensions(self, registry)
        self.sent: list[tuple[int, bytes]] = []

    def supports_extension(self, name):
        return self.extensions.supports(name)

    def send_extension(self, name, payload):
        ext_id = self.extensions.their_id(name)
        if ext_id is None:
            return False
        self.sent.append((ext_id, payload))
        return True

    def close(self, reason):
        pass


def test_ids_are_ours_for_receiving_and_theirs_for_sending():
    chat, other = Recorder(), Recorder()
    registry = ExtensionRegistry({"zz_chat": chat, "aa_other": other})
    # Plugin ids are given in name order from FIRST_PLUGIN_ID, so they are stable between runs.
    assert registry.ids == {"aa_other": FIRST_PLUGIN_ID, "zz_chat": FIRST_PLUGIN_ID + 1}
    peer = FakePeer(registry)
    assert not peer.send_extension("zz_chat", b"x")  # before its handshake: it may not speak it
    peer.extensions.on_handshake({b"m": {b"zz_chat": 77, b"unknown_ext": 5, b"aa_other": 0}})
    assert chat.handshakes and not other.handshakes  # id 0 means "disabled"
    assert peer.send_extension("zz_chat", b"hello") and peer.sent == [(77, b"hello")]
    assert not peer.supports_extension("aa_other") and not peer.send_extension("aa_other", b"x")
    # They send with OUR id; their own id (77) or an id we never gave means nothing to us.
    peer.extensions.on_message(FIRST_PLUGIN_ID + 1, b"to chat")
    peer.extensions.on_message(77, b"lost")
    peer.extensions.on_message(FIRST_PLUGIN_ID, b"other is disabled by them")
    assert chat.messages == [b"to chat"] and other.messages == []
    # A later handshake may disable an extension (BEP 10).
    peer.extensions.on_handshake({b"m": {b"zz_chat": 0}})
    assert not peer.supports_extension("zz_chat")


def test_our_handshake_fields():
    registry = ExtensionRegistry({UT_METADATA: Recorder(), UT_PEX: Recorder(), "x_plugin": Recorder()})
    fields = FakePeer(registry).extensions.handshake_fields(metadata_size=1234)
    assert fields["m"] == {UT_PEX: 1, UT_METADATA: 2, "x_plugin": FIRST_PLUGIN_ID}
    assert fields["metadata_size"] == 1234
    assert fields["yourip"] == bytes([10, 0, 0, 9])
    assert "metadata_size" not in FakePeer(registry).extensions.handshake_fields(None)


def test_too_many_plugin_extensions_is_an_error():
    with pytest.raises(PluginError):
        ExtensionRegistry({f"x{i:03d}": Recorder() for i in range(300)})


def test_metadata_codec():
    assert parse_metadata(metadata_request(3)).msg_type == META_REQUEST
    rejected = parse_metadata(metadata_reject(4))
    assert (rejected.msg_type, rejected.piece) == (META_REJECT, 4)
    data = parse_metadata(metadata_data(1, 20000, b"abc"))
    assert (data.msg_type, data.piece, data.total_size, data.data) == (META_DATA, 1, 20000, b"abc")
    assert metadata_piece_count(16384) == 1 and metadata_piece_count(16385) == 2
    assert MAX_METADATA_SIZE == 8 * 1024 * 1024


@pytest.mark.parametrize("payload", [
    b"", b"garbage", b"le", bencode.encode({"msg_type": 7, "piece": 0}), bencode.encode({"msg_type": 0}),
    bencode.encode({"msg_type": 1, "piece": 0}), bencode.encode({"msg_type": 0, "piece": -1}),
    b"d8:msg_typei1e5:piecei" + b"9" * 40,
])
def test_metadata_garbage_is_a_protocol_error(payload):
    with pytest.raises(ProtocolError):
        parse_metadata(payload)


def test_metadata_server_answers_requests_and_rejects_the_rest():
    raw = bytes(range(256)) * 100  # 25600 bytes: 2 pieces
    server = MetadataServer(raw)
    registry = ExtensionRegistry({UT_METADATA: server})
    peer = FakePeer(registry)
    peer.extensions.on_handshake({b"m": {b"ut_metadata": 3}})
    peer.extensions.on_message(2, metadata_request(1))
    peer.extensions.on_message(2, metadata_request(2))  # out of range
    first, second = (parse_metadata(p) for _i, p in peer.sent)
    assert peer.sent[0][0] == 3
    assert (first.msg_type, first.piece, first.total_size, first.data) == (META_DATA, 1, len(raw), raw[16384:])
    assert (second.msg_type, second.piece) == (META_REJECT, 2)
    # A peer asking over and over is rejected after a bound.
    for _ in range(20):
        peer.extensions.on_message(2, metadata_request(0))
    assert parse_metadata(peer.sent[-1][1]).msg_type == META_REJECT
    with pytest.raises(ProtocolError):
        peer.extensions.on_message(2, b"garbage")


# --------------------------------------------------------------------------------------------------
# A plugin's extension message between two torrentcore processes
# --------------------------------------------------------------------------------------------------

ECHO_PLUGIN = textwrap.dedent('''
    """A third-party plugin: extension message "tc_echo" (ping -> pong), written against the hookspec only."""
    import structlog
    from torrentcore.hookspec import hookimpl

    log = structlog.get_logger("echo_plugin")


    class Echo:
        def on_handshake(self, peer, handshake):
            ids = {k.decode(): v for k, v in handshake[b"m"].items()}
            log.info("echo handshake", their_id=ids["tc_echo"])
            peer.send_extension("tc_echo", b"ping")

        def on_message(self, peer, payload):
            log.info("echo message", payload=payload.decode())
            if payload == b"ping":
                peer.send_extension("tc_echo", b"pong")


    @hookimpl
    def torrentcore_extensions(torrent):
        return {"tc_echo": Echo()}
''')

FILLER_PLUGIN = textwrap.dedent('''
    """Offers one more extension, named so that it takes tc_echo's id: the two sides then use different ids."""
    from torrentcore.hookspec import hookimpl


    class Quiet:
        def on_handshake(self, peer, handshake):
            pass

        def on_message(self, peer, payload):
            pass


    @hookimpl
    def torrentcore_extensions(torrent):
        return {"tc_aaa_filler": Quiet()}
''')


def test_plugin_extension_round_trips_between_two_torrentcore_processes(tmp_path: Path, torrentcore, monkeypatch):
    # Their own folder: tmp_path holds the fixture's "torrentcore" work folder, which must not shadow the package.
    modules = tmp_path / "third_party"
    modules.mkdir()
    (modules / "echo_plugin.py").write_text(ECHO_PLUGIN)
    (modules / "filler_plugin.py").write_text(FILLER_PLUGIN)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(modules), os.environ.get("PYTHONPATH")) if p))
    root = make_payload(tmp_path / "seed", 300_000, name="ext.bin")
    torrent = tmp_path / "ext.torrent"
    make_torrent(root, [], out=torrent)
    seeder = torrentcore.seed(torrent, tmp_path / "seed", "--no-dht", "--plugin", "echo_plugin",
                              "--plugin", "filler_plugin", name="seeder")
    port = seeder.wait_listening()
    leecher = torrentcore.run(torrent, tmp_path / "dl", "--no-dht", "--plugin", "echo_plugin",
                              peers=[("127.0.0.1", port)], name="leecher")
    assert leecher.wait(40) == 0, f"{leecher.describe()}\n{seeder.describe()}"

    def _payloads(process) -> list:
        return [e.get("payload") for e in process.events("echo message")]

    assert wait_until(lambda: "pong" in _payloads(seeder), 10), seeder.describe()
    for process in (seeder, leecher):
        assert sorted(set(_payloads(process))) == ["ping", "pong"], process.describe()
    # The seeder gave tc_echo id FIRST_PLUGIN_ID + 1 (tc_aaa_filler sorts first), the leecher FIRST_PLUGIN_ID:
    # each side heard the other's id in the handshake and sent with it.
    # (There may be two connections: the seeder may also dial the leecher's listening port.)
    assert {e["their_id"] for e in leecher.events("echo handshake")} == {FIRST_PLUGIN_ID + 1}
    assert {e["their_id"] for e in seeder.events("echo handshake")} == {FIRST_PLUGIN_ID}


# --------------------------------------------------------------------------------------------------
# A torrentcore seeder as a raw peer sees it: its handshake, served metadata, garbage dropped
# --------------------------------------------------------------------------------------------------


class RawPeer:
    """A blocking client speaking just the wire format (handshake, framed messages). Each one is a peer of its
    own, with a peer id of its own: the session refuses an address and id it dropped twice for protocol errors
    (torrentcore/reconnect_throttle.py)."""

    def __init__(self, port: int, info_hash: bytes) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        reserved = msg.reserved_bytes(msg.RESERVED_EXTENSIONS)
        self.sock.sendall(msg.handshake(info_hash, b"-RP0001-" + os.urandom(6).hex().encode(), reserved))
        reply = self._read(68)
        assert reply[28:48] == info_hash

    def _read(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed")
            out += chunk
        return out

    def read_extended(self, limit: int = 50) -> tuple[int, bytes]:
        """The next extension message: ``(id, payload)`` (other messages are skipped)."""
        for _ in range(limit):
            (length,) = struct.unpack(">I", self._read(4))
            body = self._read(length) if length else b""
            if body[:1] == bytes([msg.EXTENDED]):
                return body[1], body[2:]
        raise AssertionError("no extension message")

    def send_extended(self, ext_id: int, payload: bytes) -> None:
        self.sock.sendall(msg.extended(ext_id, payload))

    def closed_by_peer(self, timeout: float = 10.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except (TimeoutError, socket.timeout):
            return False
        except OSError:
            return True
        return True


def test_torrentcore_handshake_serves_metadata_and_drops_garbage(tmp_path: Path, torrentcore):
    root = make_payload(tmp_path / "seed", 2 << 20, name="raw.bin")
    torrent = tmp_path / "raw.torrent"
    data, info_hash = make_torrent(root, [], piece_length=16 * 1024, out=torrent)
    raw_info = parse(data).raw_info
    seeder = torrentcore.seed(torrent, tmp_path / "seed", "--no-dht")
    port = seeder.wait_listening()

    peer = RawPeer(port, info_hash)
    ext_id, payload = peer.read_extended()
    assert ext_id == 0
    hs = bencode.decode(payload)
    assert hs[b"m"] == {b"ut_pex": 1, b"ut_metadata": 2}
    assert hs[b"metadata_size"] == len(raw_info)
    assert hs[b"yourip"] == bytes([127, 0, 0, 1]) and hs[b"p"] == port
    assert hs[b"reqq"] > 0 and hs[b"v"].startswith(b"torrentcore ")
    peer.send_extended(0, bencode.encode({"m": {"ut_metadata": 7}}))
    peer.send_extended(2, metadata_request(0))
    ext_id, payload = peer.read_extended()
    answer = parse_metadata(payload)
    assert ext_id == 7 and answer.msg_type == META_DATA and answer.total_size == len(raw_info)
    assert answer.data == raw_info[:16384]
    peer.send_extended(2, metadata_request(99))
    ext_id, payload = peer.read_extended()
    assert parse_metadata(payload).msg_type == META_REJECT
    # Garbage under our ut_metadata id: the connection is dropped, the seeder lives on.
    peer.send_extended(2, b"d8:msg_typei0e5:piecei" + b"9" * 30)
    assert peer.closed_by_peer(), seeder.describe()
    assert seeder.returncode is None

    # Another peer (garbage ut_pex this time) is dropped too; a third still gets served.
    other = RawPeer(port, info_hash)
    other.read_extended()
    other.send_extended(0, bencode.encode({"m": {"ut_pex": 3}}))
    other.send_extended(1, bencode.encode({"added": b"12345"}))
    assert other.closed_by_peer(), seeder.describe()
    third = RawPeer(port, info_hash)
    third.read_extended()
    third.send_extended(0, bencode.encode({"m": {"ut_metadata": 5}}))
    third.send_extended(2, metadata_request(1))
    ext_id, payload = third.read_extended()
    assert ext_id == 5 and parse_metadata(payload).data == raw_info[16384:32768]
    assert "Traceback" not in seeder.stderr


def test_a_plugin_cannot_take_a_built_in_name_or_offer_a_name_twice():
    import types

    from torrentcore import plugins
    from torrentcore.hookspec import hookimpl

    info = {"name": "x", "piece length": 16384, "length": 10, "pieces": b"\0" * 20}
    meta = parse(bencode.encode({"info": info}))

    def torrent_with(*offers):
        pm = plugins.get_plugin_manager()
        for n, offer in enumerate(offers):
            module = types.ModuleType(f"ext_plugin_{n}")
            module.torrentcore_extensions = hookimpl(lambda torrent, offer=offer: offer)
            pm.register(module)
        return ExtensionRegistry.for_torrent(meta, None, pm.hook.torrentcore_extensions(torrent=meta))

    assert torrent_with({"x_one": Recorder()}, {}).ids["x_one"] == FIRST_PLUGIN_ID
    with pytest.raises(PluginError, match="ut_pex"):
        torrent_with({"ut_pex": Recorder()})
    with pytest.raises(PluginError, match="x_two"):
        torrent_with({"x_two": Recorder()}, {"x_two": Recorder()})
