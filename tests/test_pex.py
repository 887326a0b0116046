"""Peer exchange (BEP 11, ``ut_pex``) with real libtorrent peers, and its codec and rules.

* torrentcore learns a peer it was never told about from a libtorrent peer's PEX and connects to it;
* a libtorrent peer learns a peer from torrentcore's PEX;
* private torrents (BEP 27) neither send nor take PEX.

Everything on 127.0.0.1; every wait bounded; nothing asserts timing. libtorrent sends its first PEX
message on its first one-second tick after the extension handshake, then at most one a minute.
"""

from __future__ import annotations

import pytest
from realpeers import (
    LOCALHOST,
    make_payload,
    make_torrent,
    peers_fixture,  # noqa: F401  (fixture "peers")
    wait_until,
)
from torrentcore_cli import torrentcore_factory  # noqa: F401  (fixture "torrentcore")

from torrentcore import bencode, plugins
from torrentcore.errors import ProtocolError
from torrentcore.metainfo import parse
from torrentcore.peer.extensions import (
    PEX_FLAG_REACHABLE,
    PEX_FLAG_SEED,
    PEX_MAX_ACCEPT,
    PEX_MAX_SEND,
    UT_METADATA,
    UT_PEX,
    ExtensionRegistry,
    encode_pex,
    parse_pex,
)


def _slow(limit: int) -> dict:
    """libtorrent settings capping its download on loopback (local peers are exempt by default)."""
    return {"ignore_limits_on_local_network": False, "download_rate_limit": limit}


def test_torrentcore_learns_a_peer_from_libtorrent_pex(tmp_path, peers, torrentcore):
    root = make_payload(tmp_path / "seed", 2 << 20, name="pex.bin")
    torrent = tmp_path / "pex.torrent"
    data, _ = make_torrent(root, [], piece_length=32 * 1024, out=torrent)
    s1 = peers.libtorrent("s1")
    s1.add_torrent(data, tmp_path / "seed", seed=True)
    # S2 is a slow leecher that S1 dialled: it stays in S1's swarm while the test runs. S2 makes no outgoing
    # connections, so it cannot dial torrentcore itself after hearing of it from S1: the only way the two
    # meet is torrentcore dialling S2, which it can only have learnt of from S1's PEX.
    s2 = peers.libtorrent("s2", enable_outgoing_tcp=False, **_slow(64 * 1024))
    s2.add_torrent(data, tmp_path / "s2")
    s1.connect_peer(*s2.endpoint)
    assert s1.wait_peers(1, timeout=10), s1.describe()

    out = tmp_path / "dl"
    # torrentcore is told only about S1; S2 can only come from S1's PEX.
    # A download rate limit keeps the download going for about 16 s: time for S1's first PEX message (once
    # finished in 7 s at 256k before any PEX arrived).
    run = torrentcore.run(torrent, out, "--no-dht", "--max-download-rate", "128k", peers=[s1.endpoint])
    s2_address = f"{LOCALHOST}:{s2.port}"

    def _pex_connected() -> bool:
        return any(e.get("peer") == s2_address and e.get("source") == "pex" for e in run.events("peer connected"))

    assert wait_until(lambda: _pex_connected() or run.returncode is not None, 40), run.describe()
    assert _pex_connected(), run.describe()
    assert run.stop() in (0, 143), run.describe()  # done, or stopped cleanly mid-download (SIGTERM)


def test_libtorrent_learns_a_peer_from_torrentcore_pex(tmp_path, peers, torrentcore):
    root = make_payload(tmp_path / "seed", 2 << 20, name="pex2.bin")
    torrent = tmp_path / "pex2.torrent"
    data, _ = make_torrent(root, [], piece_length=32 * 1024, out=torrent)
    # torrentcore seeds; a slow libtorrent leecher L1 connects to it; a second leecher L2 is told only about
    # torrentcore and must learn L1 from torrentcore's PEX (L1's listening port comes from its handshake).
    tc = torrentcore.seed(torrent, tmp_path / "seed", "--no-dht", name="tcseed")
    port = tc.wait_listening()
    l1 = peers.libtorrent("l1", **_slow(64 * 1024))
    l1.add_torrent(data, tmp_path / "l1")
    l1.connect_peer(LOCALHOST, port)
    l2 = peers.libtorrent("l2", **_slow(64 * 1024))
    h2 = l2.add_torrent(data, tmp_path / "l2")
    assert l1.wait_peers(1, timeout=10), l1.describe()
    l2.connect_peer(LOCALHOST, port)

    def _l2_knows_l1() -> bool:
        # peer_info.source is a bit set; 0x04 is "pex" (no tracker, DHT or LSD runs here). L2 may see L1 on
        # its listening port (L2 dialled it) or on another port (L1 heard of L2 too and dialled first; libtorrent
        # then merges the entries and keeps the pex bit). Only torrentcore's PEX can have told L2 about L1:
        # L2 connected to nobody else, and libtorrent never sends a peer its own address.
        return any(p.source & 0x04 and bytes(p.pid.to_bytes()).startswith(b"-LT") for p in h2.get_peer_info())

    assert wait_until(_l2_knows_l1, 20), f"{l2.describe()}\n{tc.describe()}"


# --------------------------------------------------------------------------------------------------
# Codec and rules (no network)
# --------------------------------------------------------------------------------------------------


def test_pex_codec_round_trip_v4_v6_and_flags():
    added = [(("10.0.0.1", 6881), PEX_FLAG_SEED), (("2001:db8::1", 51413), PEX_FLAG_REACHABLE),
             (("example.org", 1), 0)]
    payload = encode_pex(added, [("10.0.0.2", 6882), ("2001:db8::2", 6883)])
    d = bencode.decode(payload)
    assert d[b"added"] == bytes([10, 0, 0, 1, 0x1A, 0xE1]) and d[b"added.f"] == bytes([PEX_FLAG_SEED])
    assert len(d[b"added6"]) == 18 and d[b"added6.f"] == bytes([PEX_FLAG_REACHABLE])
    assert len(d[b"dropped"]) == 6 and len(d[b"dropped6"]) == 18
    message = parse_pex(payload)
    assert message.added == [(("10.0.0.1", 6881), PEX_FLAG_SEED), (("2001:db8::1", 51413), PEX_FLAG_REACHABLE)]
    assert message.dropped == [("10.0.0.2", 6882), ("2001:db8::2", 6883)]


def test_pex_caps_what_it_sends_and_takes():
    many = [((f"10.0.{i // 256}.{i % 256}", 1000 + i), 0) for i in range(300)]
    d = bencode.decode(encode_pex(many, []))
    assert len(d[b"added"]) == 6 * PEX_MAX_SEND
    flood = bencode.encode({"added": b"".join(bytes([10, 1, i // 256, i % 256, 0x1A, 0xE1]) for i in range(1000))})
    assert len(parse_pex(flood).added) == PEX_MAX_ACCEPT


@pytest.mark.parametrize("payload", [
    b"not bencoded",
    b"li1ee",
    bencode.encode({"added": b"12345"}),            # not a multiple of 6
    bencode.encode({"added6": b"x" * 17}),          # not a multiple of 18
    bencode.encode({"added": 5}),                   # not a string
    b"d5:added" + b"6:" + b"\x7f\x00\x00\x01\x1a\xe1",  # truncated
])
def test_pex_garbage_is_a_protocol_error(payload):
    with pytest.raises(ProtocolError):
        parse_pex(payload)


def test_pex_skips_port_zero_and_unspecified_and_ignores_bad_flags():
    raw = bytes([0, 0, 0, 0, 0x1A, 0xE1]) + bytes([10, 0, 0, 1, 0, 0]) + bytes([10, 0, 0, 3, 0x1A, 0xE1])
    message = parse_pex(bencode.encode({"added": raw, "added.f": b"\x02"}))  # flags of the wrong length
    assert message.added == [(("10.0.0.3", 6881), 0)]
    # Flags stay with their entry when entries before it are skipped.
    message = parse_pex(bencode.encode({"added": raw, "added.f": b"\x01\x10\x02"}))
    assert message.added == [(("10.0.0.3", 6881), PEX_FLAG_SEED)]


def _registry(private: bool, pex: bool = True) -> ExtensionRegistry:
    info = {"name": "x", "piece length": 16384, "length": 10, "pieces": b"\0" * 20}
    if private:
        info["private"] = 1
    meta = parse(bencode.encode({"announce": "http://127.0.0.1:1/announce", "info": info}))
    pm = plugins.get_plugin_manager()
    return ExtensionRegistry.for_torrent(meta, _Swarm(), pm.hook.torrentcore_extensions(torrent=meta), pex=pex)


def test_private_torrents_speak_neither_pex_nor_metadata():
    assert set(_registry(private=True).ids) == set()
    public = _registry(private=False).ids
    assert public[UT_PEX] == 1 and public[UT_METADATA] == 2
    # --no-pex: metadata is still served, PEX is neither offered nor accepted.
    assert set(_registry(private=False, pex=False).ids) == {UT_METADATA}


class _Has:
    def __init__(self, complete: bool) -> None:
        self.complete = complete


class _Peer:
    """What the PEX round reads of a connected peer; records the PEX payloads sent to it."""

    def __init__(self, address, incoming=False, listen_port=None, seed=False, pex=True) -> None:
        self.address = address
        self.incoming = incoming
        self.listen_port = listen_port
        self.has = _Has(seed)
        self.pex = pex
        self.sent: list = []

    def supports_extension(self, name):
        return self.pex and name == UT_PEX

    def send_extension(self, name, payload):
        self.sent.append(parse_pex(payload))
        return True


class _Swarm:
    def __init__(self) -> None:
        self.peers: dict = {}
        self.candidates: dict = {}
        self.learnt: list = []

    def add(self, peer: _Peer) -> _Peer:
        self.peers[peer.address] = peer
        return peer

    def add_peers(self, addresses, source):
        self.learnt.append((list(addresses), source))


def test_pex_rounds_send_changes_at_most_once_a_minute():
    from torrentcore.peer.extensions import PexHandler

    swarm = _Swarm()
    handler = PexHandler(swarm)
    a = swarm.add(_Peer(("10.0.0.1", 6881), seed=True))
    b = swarm.add(_Peer(("10.0.0.2", 40000), incoming=True, listen_port=6882))
    c = swarm.add(_Peer(("10.0.0.3", 40001), incoming=True))  # no listening port known: never advertised
    swarm.add(_Peer(("10.0.0.4", 6884), pex=False))  # speaks no PEX: told nothing, but advertised
    assert handler.send_round(now=0.0) == 3
    assert len(a.sent) == 1
    assert sorted(a.sent[0].added) == [(("10.0.0.2", 6882), 0), (("10.0.0.4", 6884), PEX_FLAG_REACHABLE)]
    assert {addr for addr, _f in b.sent[0].added} == {("10.0.0.1", 6881), ("10.0.0.4", 6884)}
    assert dict(b.sent[0].added)[("10.0.0.1", 6881)] == PEX_FLAG_SEED | PEX_FLAG_REACHABLE
    assert {addr for addr, _f in c.sent[0].added} == {("10.0.0.1", 6881), ("10.0.0.2", 6882), ("10.0.0.4", 6884)}
    # Nothing changed: nothing sent. A newcomer gets its first message at once; the others wait a minute.
    assert handler.send_round(now=1.0) == 0
    d = swarm.add(_Peer(("10.0.0.5", 6885)))
    del swarm.peers[b.address]
    assert handler.send_round(now=10.0) == 1 and len(d.sent) == 1
    assert handler.send_round(now=61.0) == 2  # a and c: d added, b dropped
    assert a.sent[-1].added == [(("10.0.0.5", 6885), PEX_FLAG_REACHABLE)] and a.sent[-1].dropped == [("10.0.0.2", 6882)]
    assert len(c.sent) == 2 and len(d.sent) == 1


def test_incoming_pex_is_learnt_with_source_pex_and_floods_ignored():
    from torrentcore.peer.extensions import PexHandler

    swarm = _Swarm()
    handler = PexHandler(swarm)
    sender = _Peer(("10.0.0.1", 6881))
    payload = encode_pex([(("10.0.0.7", 7000), 0)], [])
    handler.on_message(sender, payload)
    handler.on_message(sender, encode_pex([(("10.0.0.8", 8000), 0)], []))  # too soon after the last one
    assert swarm.learnt == [([("10.0.0.7", 7000)], "pex")]
    # A remote peer cannot point us at this machine's loopback services; a loopback peer can (tests, local swarms).
    remote, local = _Peer(("10.0.0.2", 6881)), _Peer(("127.0.0.1", 6881))
    mixed = encode_pex([(("127.0.0.1", 22), 0), (("10.0.0.9", 9000), 0)], [])
    handler.on_message(remote, mixed)
    handler.on_message(local, mixed)
    assert swarm.learnt[1:] == [([("10.0.0.9", 9000)], "pex"), ([("127.0.0.1", 22), ("10.0.0.9", 9000)], "pex")]
    # Peers we are already connected to (an incoming one by its listening port) are not learnt again.
    swarm.add(_Peer(("10.0.0.9", 40000), incoming=True, listen_port=9000))
    handler.on_message(_Peer(("10.0.0.3", 6881)), encode_pex([(("10.0.0.9", 9000), 0), (("10.0.0.10", 1), 0)], []))
    assert swarm.learnt[-1] == ([("10.0.0.10", 1)], "pex")


def test_pex_utp_flag_is_recorded_on_the_candidate():
    """``added.f`` 0x04 (BEP 11: supports uTP) marks the candidate ``utp=True`` (dialled over uTP first);
    a peer without the flag keeps ``None`` (the usual uTP head start, then TCP)."""
    from torrentcore.peer.extensions import PEX_FLAG_UTP, PexHandler
    from torrentcore.peer_list import PeerList

    swarm = _Swarm()
    peer_list = PeerList(lambda: 6881)
    swarm.candidates = peer_list.candidates
    swarm.add_peers = lambda addresses, source: peer_list.add(addresses, source)
    handler = PexHandler(swarm)
    payload = encode_pex([(("10.0.0.7", 7000), PEX_FLAG_UTP | PEX_FLAG_SEED), (("10.0.0.8", 8000), PEX_FLAG_SEED)], [])
    assert parse_pex(payload).added[0][1] & PEX_FLAG_UTP
    handler.on_message(_Peer(("10.0.0.1", 6881)), payload)
    assert peer_list.candidates[("10.0.0.7", 7000)].utp is True
    assert peer_list.candidates[("10.0.0.8", 8000)].utp is None
    assert peer_list.candidates[("10.0.0.7", 7000)].source == "pex"
