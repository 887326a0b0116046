"""The DHT against real libtorrent nodes, all on 127.0.0.1 (no tracker, no --peer anywhere).

libtorrent normally keeps loopback and same-IP nodes out of its DHT; :func:`lt_dht` turns those
restrictions off and points its bootstrap at a loopback node only (never the public routers).
"""

from __future__ import annotations

import os

import gevent
import libtorrent as lt
import pytest
from realpeers import LOCALHOST, LibtorrentPeer, assert_same_tree, make_payload, make_torrent, wait_until
from torrentcore_cli import parse_summary, torrentcore_factory  # noqa: F401  (fixture "torrentcore")

from torrentcore.dht import DHTNode


def lt_dht(bootstrap_port: int | None) -> dict:
    """libtorrent settings for a DHT of loopback nodes bootstrapping from ``127.0.0.1:bootstrap_port``."""
    return {
        "enable_dht": True,
        "dht_bootstrap_nodes": f"{LOCALHOST}:{bootstrap_port}" if bootstrap_port else "",
        "dht_restrict_routing_ips": False,  # several nodes on one IP
        "dht_restrict_search_ips": False,
        "dht_enforce_node_id": False,  # BEP 42 ids cannot match 127.0.0.1
        "dht_prefer_verified_node_ids": False,
        "dht_ignore_dark_internet": False,
        "dht_extended_routing_table": False,
        "dht_block_ratelimit": 10_000,  # every node shares one IP: no per-IP blocking
        "dht_upload_rate_limit": 1_000_000,  # (0 here would mean "send nothing")
    }


def _ping(node: DHTNode, address: tuple[str, int], tries: int = 3) -> bytes | None:
    """The node id ``address`` answers a ping with, asking up to ``tries`` times (a UDP query or its answer
    can be late or lost on a loaded machine: seen once in a full run, a node just started)."""
    for _ in range(tries):
        node_id = node.ping(address)
        if node_id:
            return node_id
    return None


@pytest.fixture
def lt_nodes():
    """Starts libtorrent sessions (``make(name, bootstrap_port, **settings)``) and closes them all."""
    made: list[LibtorrentPeer] = []

    def make(name: str, bootstrap_port: int | None, background_poll: float | None = 0.05, **settings):
        peer = LibtorrentPeer(name=name, background_poll=background_poll, **{**lt_dht(bootstrap_port), **settings})
        made.append(peer)
        return peer

    try:
        yield make
    finally:
        for peer in reversed(made):
            print(peer.describe())
            peer.close()


def live_nodes(peer: LibtorrentPeer, node_id: bytes) -> list[tuple[bytes, tuple[str, int]]]:
    """The nodes in libtorrent's routing table (``dht_live_nodes`` of its DHT node ``node_id``)."""
    session = peer.session
    session.dht_live_nodes(lt.sha1_hash(node_id))
    for _ in range(40):
        gevent.sleep(0.05)
        for alert in session.pop_alerts():
            if type(alert).__name__ == "dht_live_nodes_alert":
                return [(n["nid"].to_bytes(), tuple(n["endpoint"])) for n in alert.nodes]
    return []


def test_libtorrent_queries_our_node_and_keeps_it(lt_nodes):
    """libtorrent nodes query our node, get answers, keep it in their routing tables, accept our tokens."""
    router = lt_nodes("router", None, background_poll=None)
    ours = DHTNode(0, bootstrap=[(LOCALHOST, router.port)], host=LOCALHOST).start()
    try:
        other = lt_nodes("other", router.port, background_poll=None)
        assert ours.wait_bootstrapped(10)
        router_id = _ping(ours, (LOCALHOST, router.port))
        other_id = _ping(ours, (LOCALHOST, other.port))
        assert router_id and other_id, "libtorrent answers our pings"

        def known_to_both() -> bool:
            return all((ours.node_id, (LOCALHOST, ours.port)) in live_nodes(p, nid)
                       for p, nid in ((router, router_id), (other, other_id)))

        assert wait_until(known_to_both, 20, interval=0.5), dict(ours.stats)
        answered = sum(v for k, v in ours.stats.items() if k.startswith("answered_"))
        assert answered >= 1, f"libtorrent never queried us: {dict(ours.stats)}"
        assert ours.table.find(router_id) and ours.table.find(other_id), "libtorrent nodes joined our table"
        assert ours.stats["malformed"] == 0, "everything libtorrent sent us parsed"
        # libtorrent accepts our announce_peer (with the token it gave us) and returns us to others.
        info_hash = os.urandom(20)
        assert ours.announce(info_hash, 4321, timeout=10) >= 1
        probe = DHTNode(0, bootstrap=[(LOCALHOST, other.port)], host=LOCALHOST).start()
        try:
            assert wait_until(lambda: (LOCALHOST, 4321) in probe.get_peers(info_hash, timeout=5), 20, interval=0.5)
        finally:
            probe.stop()
    finally:
        ours.stop()


def test_torrentcore_finds_libtorrent_seeder_through_dht(tmp_path, lt_nodes, torrentcore):
    """A trackerless torrent: `torrentcore run --dht-bootstrap` finds the libtorrent seeder by get_peers alone."""
    payload = make_payload(tmp_path / "data", 3 * 1024 * 1024 + 777, name="dht-payload.bin")
    torrent_path = tmp_path / "dht.torrent"
    _data, info_hash = make_torrent(payload, out=torrent_path, piece_length=256 * 1024)  # no trackers
    router = lt_nodes("router", None)
    seeder = lt_nodes("seeder", router.port)
    seeder.add_torrent(torrent_path, tmp_path / "data", seed=True)
    probe = DHTNode(0, bootstrap=[(LOCALHOST, router.port)], host=LOCALHOST).start()
    try:  # the seeder has announced itself (bounded wait)
        assert wait_until(lambda: seeder.endpoint in probe.get_peers(info_hash, timeout=5), 20, interval=0.5), \
            seeder.describe()
    finally:
        probe.stop()
    out = tmp_path / "dl"
    proc = torrentcore.run(torrent_path, out, "--dht-bootstrap", f"{LOCALHOST}:{router.port}", dht=True)
    assert proc.wait(90) == 0, proc.describe()
    assert_same_tree(payload, out / "dht-payload.bin", proc.describe())
    connected = proc.events("peer connected")
    assert connected and {e["source"] for e in connected} == {"dht"}, connected
    assert any(int(e["port"] if "port" in e else e["peer"].rsplit(":", 1)[1]) == seeder.port for e in connected)
    found = proc.events("dht peers")
    assert found and found[0]["found"] >= 1, found
    assert "--peer" not in proc.args and (proc.state_dir / "dht.json").exists(), "state saved in the test's folder"


def test_libtorrent_leecher_finds_torrentcore_seeder_through_dht(tmp_path, lt_nodes, torrentcore):
    """`torrentcore seed` announces into the DHT; a libtorrent leecher finds it there and downloads."""
    payload = make_payload(tmp_path / "data", 2 * 1024 * 1024 + 5, name="dht-seed.bin")
    torrent_path = tmp_path / "seed.torrent"
    make_torrent(payload, out=torrent_path, piece_length=128 * 1024)
    router = lt_nodes("router", None)
    seed = torrentcore.seed(torrent_path, tmp_path / "data", "--dht-bootstrap", f"{LOCALHOST}:{router.port}",
                            dht=True)
    port = seed.wait_listening()

    def announced() -> bool:
        return any(e.get("announced_to", 0) >= 1 for e in seed.events("dht get_peers done"))

    assert wait_until(announced, 30, interval=0.2), seed.describe()
    leecher = lt_nodes("leecher", router.port)
    leecher.add_torrent(torrent_path, tmp_path / "lt-dl")
    assert leecher.wait_finished(60), leecher.describe() + seed.describe()
    assert_same_tree(payload, tmp_path / "lt-dl" / "dht-seed.bin")
    # Who sent the bytes, proved from the sender's side: libtorrent's per-peer download records are a lower
    # bound that can stay empty on a 2 MB transfer, but torrentcore counts every byte it uploads.
    sources = {(t["ip"], t["port"]) for t in leecher.transfers() if t["downloaded"]}
    assert sources <= {(LOCALHOST, port)}, (sources, port)
    assert seed.stop() is not None, seed.describe()
    summary = parse_summary(seed.stdout)
    assert summary is not None and summary["uploaded_min"] >= 0.95 * (2 * 1024 * 1024 + 5), seed.stdout


def test_private_torrent_never_uses_the_dht(tmp_path, torrentcore):
    """BEP 27: `seed` of a private torrent with DHT options given starts no DHT node and queries nobody."""
    payload = make_payload(tmp_path / "data", 300_000, name="private.bin")
    torrent_path = tmp_path / "private.torrent"
    make_torrent(payload, out=torrent_path, private=True)
    watcher = DHTNode(0, bootstrap=[], host=LOCALHOST).start()
    try:
        args = ("--dht-bootstrap", f"{LOCALHOST}:{watcher.port}")
        seed = torrentcore.seed(torrent_path, tmp_path / "data", *args, dht=True)
        seed.wait_listening()
        gevent.sleep(2.0)  # a public torrent's node queries its bootstrap node at once (see the tests above)
        assert not seed.events("dht node started") and not seed.events("dht peers"), seed.describe()
        assert not any(k.startswith("answered_") for k in watcher.stats), dict(watcher.stats)
        assert seed.stop() is not None
    finally:
        watcher.stop()


def test_unreachable_bootstrap_and_no_tracker_is_said_once(tmp_path, torrentcore):
    """The DHT is the only source and nobody answers it: one warning saying so, not a silent "0 peers"."""
    payload = make_payload(tmp_path / "data", 300_000, name="lonely.bin")
    torrent_path = tmp_path / "lonely.torrent"
    make_torrent(payload, out=torrent_path)
    silent = DHTNode(0, bootstrap=[], host=LOCALHOST).start()  # a port that answers nothing once stopped
    port = silent.port
    silent.stop()
    run = torrentcore.run(torrent_path, tmp_path / "out", "--dht-bootstrap", f"{LOCALHOST}:{port}", dht=True)

    def _warnings() -> list[dict]:
        return [e for e in run.logs() if e.get("level") == "warning" and "DHT knows no node" in e.get("event", "")]

    try:
        assert wait_until(lambda: _warnings() or run.returncode is not None, 60), run.describe()
        assert run.returncode is None, run.describe()
        gevent.sleep(1.0)
        assert len(_warnings()) == 1, run.describe()
    finally:
        run.stop()


def test_dht_options_in_help():
    from torrentcore_cli import run_cli

    for command in ("run", "seed"):
        out = run_cli([command, "-h"]).stdout
        assert "--no-dht" in out and "--dht-bootstrap" in out and "--dht-port" in out


def test_magnet_link_through_dht_only(tmp_path, lt_nodes, torrentcore):
    """A magnet link with no tracker and no peer: metadata and data both come from a peer the DHT found."""
    payload = make_payload(tmp_path / "data", 1_000_000, name="magnet-dht.bin")
    torrent_path = tmp_path / "m.torrent"
    _data, info_hash = make_torrent(payload, out=torrent_path)
    router = lt_nodes("router", None)
    seeder = lt_nodes("seeder", router.port)
    seeder.add_torrent(torrent_path, tmp_path / "data", seed=True)
    probe = DHTNode(0, bootstrap=[(LOCALHOST, router.port)], host=LOCALHOST).start()
    try:
        assert wait_until(lambda: seeder.endpoint in probe.get_peers(info_hash, timeout=5), 20, interval=0.5)
    finally:
        probe.stop()
    out = tmp_path / "dl"
    proc = torrentcore.run(f"magnet:?xt=urn:btih:{info_hash.hex()}", out,
                           "--dht-bootstrap", f"{LOCALHOST}:{router.port}", dht=True)
    assert proc.wait(90) == 0, proc.describe()
    assert_same_tree(payload, out / "magnet-dht.bin", proc.describe())
    assert any(e.get("peers", 0) >= 1 for e in proc.events("dht get_peers done")), proc.describe()


def test_port_messages_introduce_the_dht_nodes(tmp_path, lt_nodes, torrentcore):
    """BEP 5 PORT: over a plain peer connection, torrentcore and libtorrent tell each other their DHT ports,
    and each node ends up in the other's routing table (no other DHT contact exists: nothing to bootstrap from)."""
    payload = make_payload(tmp_path / "data", 200_000, name="port.bin")
    torrent_path = tmp_path / "port.torrent"
    make_torrent(payload, out=torrent_path)
    dead = DHTNode(0, bootstrap=[], host=LOCALHOST)  # bound, then stopped: a bootstrap address nobody answers on
    dead.start()
    dead_port = dead.port
    dead.stop()
    seed = torrentcore.seed(torrent_path, tmp_path / "data", "--dht-bootstrap", f"{LOCALHOST}:{dead_port}", dht=True)
    port = seed.wait_listening()
    assert seed.wait_event("dht node started", 10)
    dht_port = int(seed.events("dht node started")[0]["port"])
    leecher = lt_nodes("leecher", None, background_poll=None)
    leecher.add_torrent(torrent_path, tmp_path / "lt-dl")
    leecher.connect_peer(LOCALHOST, port)
    assert leecher.wait_finished(30), leecher.describe() + seed.describe()
    probe = DHTNode(0, bootstrap=[], host=LOCALHOST).start()
    try:
        lt_id = _ping(probe, (LOCALHOST, leecher.port))
        assert lt_id
        assert wait_until(lambda: any(ep == (LOCALHOST, dht_port) for _nid, ep in live_nodes(leecher, lt_id)), 20,
                          interval=0.5), "libtorrent never added our node after our PORT message"
    finally:
        probe.stop()
    assert seed.stop() is not None
    stopped = seed.events("dht node stopped")
    assert stopped and stopped[0]["nodes"] >= 1, seed.describe()
