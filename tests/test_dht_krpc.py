"""The DHT node (torrentcore.dht) against hostile and edge-case input, all on 127.0.0.x.

Malformed KRPC is refused without harm (the node keeps serving), the routing table splits and bounds
its buckets, tokens rotate, a flood from one IP is dropped while another IP is still answered, the
peer store is capped, responses must match transaction id and address, state survives restarts.
"""

from __future__ import annotations

import json
import os
import socket

import gevent
import pytest
import structlog.testing
from realpeers import LOCALHOST, wait_until

from torrentcore import bencode
from torrentcore.dht import krpc
from torrentcore.dht.node import DHTNode, PeerStore, RateLimiter, Tokens
from torrentcore.dht.routing import K, RoutingTable, distance

ZERO = bytes(20)


class Clock:
    """A hand-driven monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def nid(n: int) -> bytes:
    """A 20-byte id from an integer."""
    return n.to_bytes(20, "big")


@pytest.fixture
def node(tmp_path):
    """A DHT node on 127.0.0.1 with no bootstrap (it never sends anything unasked)."""
    n = DHTNode(0, bootstrap=[], state_path=str(tmp_path / "dht.json"), host=LOCALHOST).start()
    try:
        yield n
    finally:
        n.stop()


class Client:
    """A raw UDP socket speaking KRPC by hand."""

    def __init__(self, host: str = LOCALHOST) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(1.0)
        self.id = os.urandom(20)

    def send(self, data: bytes, port: int) -> None:
        self.sock.sendto(data, (LOCALHOST, port))

    def recv(self, timeout: float = 1.0) -> dict | None:
        """The next response or error (queries the node sends us, e.g. pings back, are skipped)."""
        self.sock.settimeout(timeout)
        for _ in range(20):
            try:
                data, _ = self.sock.recvfrom(4096)
            except (socket.timeout, TimeoutError):
                return None
            msg = bencode.decode(data)
            if msg.get(b"y") != b"q":
                return msg
        return None

    def ask(self, port: int, name: str, args: dict, tid: bytes = b"tt", timeout: float = 1.0) -> dict | None:
        self.send(bencode.encode({"t": tid, "y": "q", "q": name, "a": {"id": self.id, **args}}), port)
        return self.recv(timeout)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def client():
    c = Client()
    try:
        yield c
    finally:
        c.close()


# --- parsing -------------------------------------------------------------------------------------------

def q(name, args, tid=b"aa"):
    return bencode.encode({"t": tid, "y": "q", "q": name, "a": args})


ID = b"i" * 20
MALFORMED = {
    "not bencoding": b"hello world",
    "truncated": b"d1:t2:aa1:y1:q",
    "integer": b"i42e",
    "list": b"l1:ae",
    "no tid": bencode.encode({"y": "q", "q": "ping", "a": {"id": ID}}),
    "tid not a string": bencode.encode({"t": 5, "y": "q", "q": "ping", "a": {"id": ID}}),
    "tid too long": bencode.encode({"t": b"x" * 40, "y": "q", "q": "ping", "a": {"id": ID}}),
    "no type": bencode.encode({"t": b"aa", "q": "ping", "a": {"id": ID}}),
    "bad type": bencode.encode({"t": b"aa", "y": "z", "q": "ping", "a": {"id": ID}}),
    "huge string": b"d1:t2:aa1:y1:q1:q4:ping1:ad2:id20:" + ID + b"1:x2000:" + b"x" * 2000 + b"ee",
    "declared huge string": b"d1:t2:aa1:y1:q1:q4:ping1:ad2:id99999999:xee",
    "deep nesting": b"d1:t2:aa1:y1:q1:q4:ping1:ad2:id20:" + ID + b"1:x" + b"l" * 50 + b"e" * 50 + b"ee",
}
MALFORMED_QUERIES = {  # a transaction id is readable: the node answers with an error
    "args not a dict": (bencode.encode({"t": b"aa", "y": "q", "q": "ping", "a": [1]}), 203),
    "no args": (bencode.encode({"t": b"aa", "y": "q", "q": "ping"}), 203),
    "no id": (q("ping", {}), 203),
    "short id": (q("ping", {"id": b"x" * 19}), 203),
    "id not a string": (q("ping", {"id": 7}), 203),
    "find_node without target": (q("find_node", {"id": ID}), 203),
    "target of 21 bytes": (q("find_node", {"id": ID, "target": b"t" * 21}), 203),
    "info_hash an int": (q("get_peers", {"id": ID, "info_hash": 5}), 203),
    "announce without token": (q("announce_peer", {"id": ID, "info_hash": ID, "port": 1}), 203),
    "announce port 0": (q("announce_peer", {"id": ID, "info_hash": ID, "port": 0, "token": b"x"}), 203),
    "announce port 70000": (q("announce_peer", {"id": ID, "info_hash": ID, "port": 70000, "token": b"x"}), 203),
    "implied_port 2": (q("announce_peer", {"id": ID, "info_hash": ID, "implied_port": 2, "token": b"x"}), 203),
    "unknown method": (q("vote", {"id": ID}), 204),
    "binary method": (q(b"\xff\xfe", {"id": ID}), 204),
}


@pytest.mark.parametrize("data", list(MALFORMED.values()), ids=list(MALFORMED))
def test_decode_refuses_malformed(data):
    with pytest.raises(krpc.KRPCError) as info:
        krpc.decode(data)
    assert not info.value.is_query or info.value.tid is not None


@pytest.mark.parametrize("case", list(MALFORMED_QUERIES), ids=list(MALFORMED_QUERIES))
def test_decode_malformed_queries_carry_code(case):
    data, code = MALFORMED_QUERIES[case]
    with pytest.raises(krpc.KRPCError) as info:
        krpc.decode(data)
    assert info.value.code == code and info.value.tid == b"aa" and info.value.is_query


def test_decode_valid_messages_and_compact_forms():
    msg = krpc.decode(q("get_peers", {"id": ID, "info_hash": ZERO}))
    assert (msg.kind, msg.query, msg.sender_id, msg.args[b"info_hash"]) == ("q", "get_peers", ID, ZERO)
    nodes = [(nid(1), "127.0.0.1", 6881), (nid(2), "10.0.0.2", 1)]
    packed = krpc.encode_nodes(nodes)
    assert len(packed) == 2 * 26 and krpc.decode_nodes(packed) == nodes
    resp = krpc.decode(bencode.encode({"t": b"zz", "y": "r", "r": {
        "id": ID, "nodes": packed, "token": b"tok", "values": [krpc.encode_peer("1.2.3.4", 5), b"\0" * 18]}}))
    assert krpc.response_nodes(resp) == nodes
    assert krpc.response_values(resp) == [("1.2.3.4", 5)]  # the IPv6 value (18 bytes) is skipped
    assert krpc.response_token(resp) == b"tok"
    err = krpc.decode(krpc.error(b"e1", 201, "nope"))
    assert err.kind == "e" and err.error == (201, "nope")
    # Addresses nobody can be reached at are skipped, not trusted.
    assert krpc.decode_peer(krpc.encode_peer("0.0.0.0", 80)) is None
    assert krpc.decode_peer(krpc.encode_peer("1.2.3.4", 0)) is None


@pytest.mark.parametrize("r", [
    {"id": ID, "nodes": b"x" * 25},
    {"id": ID, "nodes": b"x" * 27},
    {"id": ID, "nodes": 5},
    {"id": ID, "values": b"notalist"},
    {"id": ID, "values": [b"12345"]},
    {"id": ID, "values": [7]},
], ids=["nodes 25", "nodes 27", "nodes int", "values str", "value 5 bytes", "value int"])
def test_bad_response_parts_are_refused(r):
    msg = krpc.decode(bencode.encode({"t": b"aa", "y": "r", "r": r}))
    with pytest.raises(krpc.KRPCError):
        krpc.response_nodes(msg)
        krpc.response_values(msg)


def test_response_without_valid_id_is_refused():
    for r in ({"nodes": b""}, {"id": b"short"}, "notadict"):
        with pytest.raises(krpc.KRPCError):
            krpc.decode(bencode.encode({"t": b"aa", "y": "r", "r": r}))


# --- the live node against malformed datagrams ---------------------------------------------------------

def test_node_survives_malformed_datagrams(node, client):
    for data in MALFORMED.values():
        client.send(data, node.port)
    assert client.recv(0.3) is None, "no reply to a datagram without a usable transaction id"
    for name, (data, code) in MALFORMED_QUERIES.items():
        client.send(data, node.port)
        reply = client.recv()
        assert reply is not None, name
        assert reply[b"y"] == b"e" and reply[b"e"][0] == code and reply[b"t"] == b"aa", (name, reply)
    client.send(b"x" * 3000, node.port)  # bigger than any KRPC message: dropped unread
    reply = client.ask(node.port, "ping", {})
    assert reply is not None and reply[b"y"] == b"r" and reply[b"r"][b"id"] == node.node_id
    refused = node.stats["malformed"] + node.stats["dropped_oversize"]
    assert refused == len(MALFORMED) + len(MALFORMED_QUERIES) + 1, dict(node.stats)
    assert node.stats["internal_errors"] == 0
    assert len(node.table) == 0, "nobody that sent garbage entered the routing table"


def test_node_answers_every_query_type(node, client):
    info_hash = os.urandom(20)
    r = client.ask(node.port, "find_node", {"target": info_hash})[b"r"]
    assert r[b"id"] == node.node_id and r[b"nodes"] == b""
    r = client.ask(node.port, "get_peers", {"info_hash": info_hash})[b"r"]
    assert b"values" not in r and len(r[b"token"]) == 8
    token = r[b"token"]
    r = client.ask(node.port, "announce_peer", {"info_hash": info_hash, "port": 7777, "token": token})
    assert r[b"y"] == b"r"
    r = client.ask(node.port, "announce_peer", {"info_hash": info_hash, "port": 1, "implied_port": 1,
                                                "token": token})
    assert r[b"y"] == b"r"
    values = client.ask(node.port, "get_peers", {"info_hash": info_hash})[b"r"][b"values"]
    own_port = client.sock.getsockname()[1]
    assert sorted(krpc.decode_peer(v) for v in values) == sorted([(LOCALHOST, 7777), (LOCALHOST, own_port)])


def test_bad_token_is_refused(node, client):
    info_hash = os.urandom(20)
    reply = client.ask(node.port, "announce_peer", {"info_hash": info_hash, "port": 7777, "token": b"forged!!"})
    assert reply[b"y"] == b"e" and reply[b"e"][0] == 203
    # A token given to another IP is not valid for us either.
    other = node.tokens.make("127.0.0.2")
    reply = client.ask(node.port, "announce_peer", {"info_hash": info_hash, "port": 7777, "token": other})
    assert reply[b"y"] == b"e"
    assert node.store.count(info_hash) == 0 and node.stats["bad_tokens"] == 2


def test_token_rotation():
    clock = Clock()
    tokens = Tokens(clock)
    t = tokens.make("1.2.3.4")
    assert tokens.valid("1.2.3.4", t) and not tokens.valid("1.2.3.5", t)
    clock.now += 299
    tokens.maybe_rotate()
    assert tokens.make("1.2.3.4") == t, "no rotation before 5 minutes"
    clock.now += 1
    tokens.maybe_rotate()
    assert tokens.make("1.2.3.4") != t
    assert tokens.valid("1.2.3.4", t), "the previous secret is still accepted"
    clock.now += 300
    tokens.maybe_rotate()
    assert not tokens.valid("1.2.3.4", t), "two rotations later the token is dead"


def test_responses_must_match_tid_and_address(node):
    """Our query to a node: an answer from another port, or with another tid, is ignored."""
    fake = Client()
    liar = Client()
    try:
        job = gevent.spawn(node.query, (LOCALHOST, fake.sock.getsockname()[1]), "ping", {}, 3.0)
        fake.sock.settimeout(2)
        data, addr = fake.sock.recvfrom(2048)
        tid = bencode.decode(data)[b"t"]
        # Right tid, wrong source address (another socket).
        liar.send(krpc.response(tid, {"id": liar.id}), node.port)
        # Right address, wrong tid.
        fake.send(krpc.response(b"\x00\x00" if tid != b"\x00\x00" else b"\x00\x01", {"id": fake.id}), node.port)
        gevent.sleep(0.3)
        assert not job.ready(), "a mismatched response was taken"
        assert node.stats["unmatched_responses"] == 2
        fake.send(krpc.response(tid, {"id": fake.id}), node.port)
        msg = job.get(timeout=3)
        assert msg is not None and msg.sender_id == fake.id
        assert node.table.find(fake.id) is not None, "a node that answered joins the table"
        assert node.table.find(liar.id) is None
    finally:
        fake.close()
        liar.close()


def test_malformed_lookup_answers_do_not_break_lookups(node):
    """A node that answers get_peers with broken compact node info is skipped."""
    fake = Client()
    try:
        info_hash = os.urandom(20)

        def serve():
            for _ in range(3):
                try:
                    data, addr = fake.sock.recvfrom(2048)
                except OSError:
                    return
                tid = bencode.decode(data)[b"t"]
                fake.sock.sendto(bencode.encode({"t": tid, "y": "r", "r": {
                    "id": fake.id, "nodes": b"x" * 25, "values": [b"\x01\x02\x03\x04\x00\x50"]}}), addr)

        fake.sock.settimeout(5)
        server = gevent.spawn(serve)
        node.saved_nodes = [(LOCALHOST, fake.sock.getsockname()[1])]
        assert node.get_peers(info_hash, timeout=5) == []
        assert node.stats["bad_responses"] >= 1
        server.kill()
    finally:
        fake.close()


# --- rate limiting -------------------------------------------------------------------------------------

def test_flood_from_one_ip_is_dropped_another_ip_still_answered(tmp_path):
    node = DHTNode(0, bootstrap=[], state_path=None, host=LOCALHOST, per_ip_rate=(5.0, 10.0),
                   global_rate=(200.0, 400.0)).start()
    flooder, other = Client("127.0.0.1"), Client("127.0.0.2")
    try:
        for i in range(200):
            flooder.send(bencode.encode({"t": i.to_bytes(2, "big"), "y": "q", "q": "ping",
                                         "a": {"id": flooder.id}}), node.port)
            if i % 20 == 0:
                gevent.sleep(0)  # let the node read (the kernel would drop the rest otherwise)
        answers = 0
        while flooder.recv(0.3) is not None and answers < 500:
            answers += 1
        assert node.stats["dropped_rate"] > 100, dict(node.stats)
        assert answers <= 10 + 5 * 3, f"{answers} answers to a flood of 200"
        reply = other.ask(node.port, "ping", {})
        assert reply is not None and reply[b"y"] == b"r", "another IP is still answered"
    finally:
        flooder.close()
        other.close()
        node.stop()


def test_rate_limiter_buckets():
    clock = Clock()
    limiter = RateLimiter(per_ip=(1.0, 3.0), overall=(10.0, 5.0), max_ips=2, clock=clock)
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b") and limiter.allow("b")
    assert not limiter.allow("c"), "the global bucket (5) is empty"
    clock.now += 1.0
    assert limiter.allow("a"), "refilled"
    limiter.allow("d")
    limiter.allow("e")
    assert len(limiter._ips) == 2, "tracked IPs are bounded"


# --- peer store ------------------------------------------------------------------------------------------

def test_peer_store_caps_and_expiry():
    clock = Clock()
    store = PeerStore(max_per_hash=3, max_hashes=2, max_total=5, ttl=60, clock=clock)
    a, b, c = nid(1), nid(2), nid(3)
    for port in range(1, 6):
        assert store.add(a, ("10.0.0.1", port))
    assert store.count(a) == 3, "per info-hash cap: the oldest announces make room"
    assert sorted(p for _, p in store.get(a)) == [3, 4, 5]
    assert store.add(b, ("10.0.0.2", 1)) and store.add(b, ("10.0.0.2", 2))
    assert not store.add(c, ("10.0.0.3", 1)), "info-hash cap"
    assert store.total == 5 and not store.add(b, ("10.0.0.2", 3)), "overall cap"
    assert len(store.get(a, count=2)) == 2
    clock.now += 61
    assert store.get(a) == [], "expired peers are never returned"
    store.expire()
    assert store.total == 0 and len(store) == 0
    assert store.add(c, ("10.0.0.3", 1))


# --- routing table ---------------------------------------------------------------------------------------

def test_routing_table_splits_only_around_own_id():
    table = RoutingTable(ZERO)
    # Ids far from us (top bit set): one bucket's worth fits, the rest go to the replacement cache.
    for i in range(20):
        table.add(nid((1 << 159) | i), "10.0.%d.1" % i, 1000)
    assert len(table) == K
    far = table.bucket_for(nid(1 << 159))
    assert len(far.nodes) == K and len(far.replacements) == K
    # Ids near us keep splitting the bucket that holds our id.
    for i in range(1, 40):
        table.add(nid(i << 100), "10.1.%d.1" % i, 1000)
    assert len(table.buckets) > 2
    assert all(len(b.nodes) <= K and len(b.replacements) <= K for b in table.buckets)
    ranges = sorted((b.low, b.high) for b in table.buckets)
    assert ranges[0][0] == 0 and ranges[-1][1] == 1 << 160
    assert all(x[1] == y[0] for x, y in zip(ranges, ranges[1:])), "buckets tile the id space"
    assert sum(1 for b in table.buckets if b.covers(ZERO)) == 1


def test_closest_orders_by_xor_distance():
    own = os.urandom(20)
    table = RoutingTable(own)
    ids = [os.urandom(20) for _ in range(60)]
    for i, x in enumerate(ids):
        table.add(x, "127.0.0.1", 2000 + i)
    target = os.urandom(20)
    got = table.closest(target, 8)
    dists = [distance(n.id, target) for n in got]
    assert dists == sorted(dists) and len(got) == 8
    known = table.nodes()
    assert min(distance(n.id, target) for n in known) == dists[0]


def test_bad_nodes_are_replaced_and_addresses_not_hijacked():
    clock = Clock()
    table = RoutingTable(ZERO, clock=clock)
    far = [nid((1 << 159) | i) for i in range(K + 2)]
    for i, x in enumerate(far):
        table.add(x, f"10.0.{i}.1", 1000)
    victim = table.find(far[0])
    assert victim is not None and table.find(far[K]) is None
    # Same id from another address: refused while the first is not bad.
    assert table.add(far[0], "10.9.9.9", 1) is None and victim.host == "10.0.0.1"
    # Another id at a known address: refused.
    assert table.add(nid((1 << 159) | 999), "10.0.1.1", 1000) is None
    table.failed(far[0])
    assert table.find(far[0]) is not None, "one failure is not bad yet"
    table.failed(far[0])
    assert table.find(far[0]) is None, "a bad node is replaced by a cached one"
    assert table.find(far[K + 1]) is not None, "the freshest replacement took its place"
    # States over time.
    node = table.find(far[1])
    assert node.state(clock()) == "good"
    clock.now += 15 * 60
    assert node.state(clock()) == "questionable" and node in table.questionable()
    assert table.stale_buckets(), "a bucket untouched for 15 minutes is stale"
    table.add(far[1], "10.0.1.1", 1000, responded=False)  # it queried us: still questionable (not answered)
    assert node.state(clock()) == "good", "answered once and queried us recently: good"


def test_one_ip_cannot_fill_the_table():
    table = RoutingTable(ZERO)
    for port in range(1, 50):
        table.add(os.urandom(20), "203.0.113.7", port)
    assert len(table) == 2
    for port in range(1, 10):  # loopback nodes (tests, several nodes on one machine) are not limited
        table.add(os.urandom(20), "127.0.0.1", port)
    assert len(table) > 2


def test_unverified_queriers_do_not_enter_the_table():
    table = RoutingTable(ZERO)
    assert table.add(nid(5), "10.0.0.5", 5, responded=False) is None
    assert len(table) == 0 and table.would_accept(nid(5), ("10.0.0.5", 5))


# --- lookups and persistence -------------------------------------------------------------------------------

def test_small_network_lookup_and_announce(tmp_path):
    """Ten torrentcore nodes on 127.0.0.1: an announce from one is found by get_peers from another."""
    first = DHTNode(0, bootstrap=[], host=LOCALHOST).start()
    nodes = [first]
    try:
        for _ in range(9):
            nodes.append(DHTNode(0, bootstrap=[(LOCALHOST, first.port)], host=LOCALHOST).start())
        for n in nodes[1:]:
            assert n.wait_bootstrapped(10)
        for n in nodes[1:]:
            n.bootstrap_once(5)  # a second round learns the nodes that joined after it
        assert min(len(n.table) for n in nodes) >= 3, [len(n.table) for n in nodes]
        info_hash = os.urandom(20)
        accepted = nodes[3].announce(info_hash, 5555, timeout=10)
        assert accepted >= 3
        peers = nodes[7].get_peers(info_hash, timeout=10)
        assert (LOCALHOST, 5555) in peers
        assert nodes[7].get_peers(os.urandom(20), timeout=10) == []
    finally:
        for n in nodes:
            n.stop()


def test_state_is_saved_and_reloaded(tmp_path):
    path = tmp_path / "state" / "dht.json"
    a = DHTNode(0, bootstrap=[], state_path=str(path), host=LOCALHOST).start()
    b = DHTNode(0, bootstrap=[(LOCALHOST, a.port)], state_path=str(tmp_path / "b.json"), host=LOCALHOST).start()
    try:
        assert b.wait_bootstrapped(10) and len(b.table) == 1
        gevent.sleep(0.3)  # a pinged b back (b queried it)
    finally:
        b.stop()
        a.stop()
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["node_id"] == b.node_id.hex() and data["nodes"] == [[LOCALHOST, a.port]]
    assert sorted(p.name for p in path.parent.iterdir()) == ["dht.json", "dht.json.lock"], \
        "atomic write leaves no temporary file"
    again = DHTNode(0, bootstrap=[], state_path=str(tmp_path / "b.json"), host=LOCALHOST)
    assert again.node_id == b.node_id and again.saved_nodes == [(LOCALHOST, a.port)]


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"node_id": "abcd"}', b'[1, 2]',
                                     b'{"node_id": "' + b"00" * 20 + b'", "nodes": [["1.2.3.4", 0]]}',
                                     b"\xff\xfe\x00"])
def test_corrupt_state_file_is_ignored(tmp_path, content):
    path = tmp_path / "dht.json"
    path.write_bytes(content)
    with structlog.testing.capture_logs() as logs:
        node = DHTNode(0, bootstrap=[], state_path=str(path), host=LOCALHOST)
    assert len(node.node_id) == 20 and node.saved_nodes == []
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [e["event"] for e in warnings] == ["ignoring unreadable dht state file"], logs
    node.start()
    node.stop()
    assert json.loads(path.read_text())["node_id"] == node.node_id.hex(), "replaced by a good file"


def test_outstanding_queries_are_bounded(node):
    """Queries to a silent address time out and free their slots; the pending table stays bounded."""
    silent = Client()
    try:
        addr = (LOCALHOST, silent.sock.getsockname()[1])
        jobs = [gevent.spawn(node.query, addr, "ping", {}, 0.5) for _ in range(300)]
        gevent.sleep(0.1)
        assert len(node._pending) <= 256
        gevent.joinall(jobs, timeout=5)
        assert all(j.value is None for j in jobs) and not node._pending
    finally:
        silent.close()


def test_maintenance_refreshes_stale_buckets_and_pings_questionable_nodes(monkeypatch):
    """Buckets untouched for 15 minutes get a refresh lookup; silent nodes are pinged (and become good)."""
    import torrentcore.dht.node as node_module

    monkeypatch.setattr(node_module, "TICK", 0.05)
    hub = DHTNode(0, bootstrap=[], host=LOCALHOST).start()
    other = DHTNode(0, bootstrap=[(LOCALHOST, hub.port)], host=LOCALHOST).start()
    try:
        assert other.wait_bootstrapped(5) and other.table.find(hub.node_id)
        gevent.sleep(0.2)
        node = other.table.find(hub.node_id)
        node.last_response -= 16 * 60
        node.last_query -= 16 * 60
        assert node.state(other.table.clock()) == "questionable"
        for bucket in other.table.buckets:
            bucket.last_changed -= 16 * 60
        sent = other.stats["sent_find_node"]
        assert wait_until(lambda: other.stats["sent_find_node"] > sent, 5), dict(other.stats)
        assert wait_until(lambda: node.state(other.table.clock()) == "good", 5), "pinged and answered"
        assert not other.table.stale_buckets()
    finally:
        other.stop()
        hub.stop()


def test_two_processes_never_share_a_node_id(tmp_path):
    """The state file is locked while a node runs: a second node on it gets a fresh id and saves nothing."""
    path = str(tmp_path / "dht.json")
    first = DHTNode(0, bootstrap=[], state_path=path, host=LOCALHOST).start()
    first.stop()
    again = DHTNode(0, bootstrap=[], state_path=path, host=LOCALHOST).start()
    try:
        assert again.node_id == first.node_id, "the saved id is reused"
        second = DHTNode(0, bootstrap=[], state_path=path, host=LOCALHOST).start()
        assert second.node_id != again.node_id and second.state_path is None
        second.stop()
    finally:
        again.stop()
    assert json.loads(open(path).read())["node_id"] == first.node_id.hex()
