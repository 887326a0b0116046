"""Connection slots and upload fairness under floods (issue 13), with libtorrent as the honest party.

The attackers are ``tests/flooder.py`` in their own process: connections that never send a byte, handshakes
sent one byte a second, and greedy peers that request without end. The honest libtorrent peer must finish;
its rate next to a clean run is printed as a ratio (never asserted: the machine is shared), while the
number of file descriptors of the engine under the flood is asserted to stay bounded. The slots themselves
are tested as units.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import types

import gevent
import gevent.event
import pytest
from realpeers import RealPeers, assert_same_tree, free_port, make_payload, make_torrent, wait_until
from torrentcore_cli import torrentcore_factory  # noqa: F401  (fixture "torrentcore")

from torrentcore.peer.handshake import Identity
from torrentcore.peer_list import PeerList
from torrentcore.slots import HALF_OPEN_IN, ConnectionSlots, HalfOpen, direction_limit, least_useful
from torrentcore.swarm import Swarm

MiB = 1 << 20
FLOODER = os.path.join(os.path.dirname(__file__), "flooder.py")
#: The engine's fds under a flood: both half-open caps, the established peers of one torrent, and ~64 others.
FD_BOUND = HALF_OPEN_IN + 32 + 50 + 80


@pytest.fixture
def peers(tmp_path):
    with RealPeers(tmp_path / "peers") as pool:
        yield pool
        print(pool.describe())


# --- units ------------------------------------------------------------------------------------------


def test_half_open_pushes_out_the_oldest_and_slots_keep_a_share_per_direction():
    closed = []
    half = HalfOpen(3)
    keys = [half.add(lambda n=n: closed.append(n)) for n in range(5)]
    assert closed == [0, 1] and len(half) == 3 and half.evicted == 2
    half.done(keys[3])
    assert len(half) == 2
    slots = ConnectionSlots(8, max_per_ip=2)
    incoming = [slots.acquire(incoming=True) for _ in range(8)]
    assert sum(s is not None for s in incoming) == direction_limit(8) == 6  # 2 kept for dialling
    out = [slots.acquire(incoming=False) for _ in range(3)]
    assert sum(s is not None for s in out) == 2 and slots.full
    incoming[0].release()
    incoming[0].release()  # idempotent
    assert slots.incoming == 5 and slots.room(incoming=True) == 1
    assert slots.open_from("127.0.0.1") and slots.open_from("127.0.0.1") and not slots.open_from("127.0.0.1")
    assert slots.open_from("127.0.0.2") and slots.refused_per_ip == 1
    slots.closed_from("127.0.0.1")
    assert slots.open_from("127.0.0.1")


class _P:
    def __init__(self, name, down=0, up=0, interested=False, choking=True):
        self.name = name
        self.down = type("R", (), {"total": down})()
        self.up = type("R", (), {"total": up})()
        self.peer_interested = interested
        self.peer_choking = choking
        self.am_interested = False
        self.conn = type("C", (), {"closed": False})()


def test_least_useful_is_an_idle_peer_past_its_grace():
    idle_old, idle_new = _P("idle-old"), _P("idle-new")
    useful = [_P("gives", down=1), _P("takes", up=1), _P("wants", interested=True), _P("unchokes", choking=False),
              _P("has-what-we-want")]
    useful[-1].am_interested = True
    since = {"idle-old": 0.0, "idle-new": 99.0, **{p.name: 0.0 for p in useful}}
    assert least_useful([*useful, idle_new, idle_old], now=100.0, since=lambda p: since[p.name]) is idle_old
    assert least_useful([*useful, idle_new], now=100.0, since=lambda p: since[p.name]) is None


def _swarm_dialling(slots: ConnectionSlots, dial) -> tuple[Swarm, PeerList, gevent.Greenlet]:
    """A torrent's swarm with 6 candidates on 2 addresses, its connect loop (returned) run once: its dials
    are spawned, not run yet (until the caller lets the hub run)."""
    port = types.SimpleNamespace(peers={})
    peers = PeerList(lambda: 6881)
    peers.add([(ip, 1000 + n) for ip in ("192.0.2.1", "192.0.2.2") for n in range(3)])
    swarm = Swarm(port, peers, Identity(bytes(20), bytes(20), bytes(8)), 50, slots, reporter=None,
                  complete=lambda: False, may_connect=lambda: True, dial=dial)
    swarm.connect_interval = None
    swarm.connect_now.set()
    loop = gevent.spawn(swarm.connect_loop)
    gevent.sleep(0)  # the loop spawned its dials and waits; the dials are scheduled, not run yet
    return swarm, peers, loop


@pytest.mark.parametrize("when", ["before their first run", "while dialling"])
def test_dials_killed_give_back_their_slots_and_per_ip_counts(when):
    """A torrent stopped (its pool killed) while its dials are only scheduled, or while they dial: the
    session's dial count and per-IP counts, and the candidates, are all given back."""
    slots = ConnectionSlots(100, max_per_ip=2)
    dialled, hang = [], gevent.event.Event()

    def dial(address, identity, **kwargs):
        dialled.append(address)
        hang.wait(10)
        raise OSError("not reached")

    swarm, peers, loop = _swarm_dialling(slots, dial)
    assert slots.dialing == 4 and peers.dialing() == 4  # 2 per address: the per-IP cap
    assert slots.room_to("192.0.2.1") == slots.room_to("192.0.2.2") == 0
    if when == "while dialling":
        assert wait_until(lambda: len(dialled) == 4, 5)
    swarm.stop()  # (no switch to the hub before: dials not run yet are never run)
    loop.kill()
    gevent.sleep(0)  # the pool's links run
    assert len(dialled) == (0 if when == "before their first run" else 4)
    assert slots.dialing == 0 and peers.dialing() == 0
    assert slots.room_to("192.0.2.1") == slots.room_to("192.0.2.2") == 2


# --- per IP -----------------------------------------------------------------------------------------


def test_default_per_ip_limit_applies_to_loopback(tmp_path):
    """Twenty connections from 127.0.0.1 to a session with the default settings: 8 stay, the rest are closed."""
    from torrentcore import Session, SessionConfig

    with Session(SessionConfig(listen_port=0, listen_hosts=("127.0.0.1",), dht=False)) as session:
        socks = [socket.create_connection(("127.0.0.1", session.port), timeout=5) for _ in range(20)]
        try:
            assert wait_until(lambda: session.slots.refused_per_ip >= 12, 5)
            gevent.sleep(0.2)
            open_ = 0
            for s in socks:
                s.setblocking(False)
                try:
                    open_ += s.recv(1) != b""
                except BlockingIOError:
                    open_ += 1
                except OSError:
                    pass
            assert open_ == SessionConfig().max_connections_per_ip == 8
            assert session.slots.refused_per_ip == 12
        finally:
            for s in socks:
                s.close()


# --- floods with libtorrent --------------------------------------------------------------------------


#: The engine's resident memory under a flood: a seed of 4 MiB idles at about 60 MiB here, 56 MiB were seen
#: under 1,300 half-open connections and 139 MiB with 200 greedy peers connected (their buffers).
RSS_BOUND = 256 * MiB


def _rss(pid: int) -> int:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


class Flood:
    """``tests/flooder.py`` against ``port``; ``max_fds``: the most fds seen in ``watch_pid`` meanwhile."""

    def __init__(self, port: int, seconds: float, watch_pid: int, **kinds) -> None:
        args = [sys.executable, FLOODER, "--port", str(port), "--seconds", str(seconds)]
        for key, value in kinds.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.max_fds = 0
        self.max_rss = 0
        self._watch = gevent.spawn(self._watch_fds, watch_pid)

    def watch(self, pid: int) -> None:
        """Measure this process instead (one started after the crowd)."""
        self._watch.kill()
        self.max_fds = self.max_rss = 0
        self._watch = gevent.spawn(self._watch_fds, pid)

    def _watch_fds(self, pid: int) -> None:
        while self.process.poll() is None:
            self.max_fds = max(self.max_fds, _fds(pid))
            self.max_rss = max(self.max_rss, _rss(pid))
            gevent.sleep(0.1)

    def wait_started(self) -> None:
        line = self.process.stdout.readline()
        assert "flooding" in line, self.process.stderr.read()

    def stop(self) -> dict:
        self.process.terminate()
        try:
            out, _err = self.process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _err = self.process.communicate(timeout=5)
        self._watch.kill()
        lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
        return lines[-1] if lines else {}


def _leech(peers: RealPeers, name: str, torrent: bytes, seeder_port: int, timeout: float) -> float | None:
    """A fresh libtorrent leecher downloads from ``seeder_port``; seconds taken, or None if it did not finish."""
    leecher = peers.libtorrent(name)
    save = peers.path(name)
    leecher.add_torrent(torrent, save)
    start = time.monotonic()
    leecher.connect_peer("127.0.0.1", seeder_port)
    # libtorrent does not retry a refused or evicted dial quickly by itself: ask again while it has no peer.
    deadline = start + timeout
    while time.monotonic() < deadline:
        if leecher.wait_finished(timeout=1.0):
            return time.monotonic() - start
        if not leecher.peer_info():
            leecher.connect_peer("127.0.0.1", seeder_port)
    return None


@pytest.fixture
def payload(tmp_path):
    data = make_payload(tmp_path / "data", 4 * MiB, seed=13)
    torrent, info_hash = make_torrent(data, piece_length=256 * 1024, out=tmp_path / "p.torrent")
    return data, torrent, info_hash


def test_seed_serves_libtorrent_through_1000_idle_and_300_slow_connections(tmp_path, peers, torrentcore, payload):
    """Also 60 peers that handshake and then say nothing: they hold the torrent's incoming peer slots until
    a newcomer evicts them (they are of no use); they reconnect at once."""
    data, torrent, info_hash = payload
    seeder = torrentcore.seed(tmp_path / "p.torrent", tmp_path / "data", "--max-connections-per-ip", "5000",
                              "--seed-ratio", "0", "--seed-time", "0", "--seed-idle", "0", name="seeder")
    port = seeder.wait_listening()
    clean = _leech(peers, "clean", torrent, port, 60)
    assert clean is not None, seeder.describe()
    flood = Flood(port, 40, seeder.process.pid, idle=1000, slow=300, handshaken=60, info_hash=info_hash.hex())
    flood.wait_started()
    gevent.sleep(2)  # the crowd is connected
    flooded = _leech(peers, "flooded", torrent, port, 60)
    stats = flood.stop()
    print(f"seed: clean {clean:.2f} s, flooded {flooded} s, ratio of rates "
          f"{(clean / flooded) if flooded else 0:.2f}; flooder {stats}; "
          f"max fds {flood.max_fds}, max rss {flood.max_rss >> 20} MiB")
    assert flooded is not None, seeder.describe()
    assert_same_tree(data, os.path.join(peers.path("flooded"), "payload"))
    assert stats.get("opened", 0) >= 1300 and stats.get("closed_by_peer", 0) > 0  # the crowd was there
    assert 0 < flood.max_fds <= FD_BOUND and 0 < flood.max_rss <= RSS_BOUND
    assert seeder.returncode is None  # still serving


def _run_once(tmp_path, peers, torrentcore, torrent, name: str, flood: dict | None):
    """``torrentcore run`` with a libtorrent seed given by ``--peer``, whose torrent is added only once the run
    listens and (with ``flood``) the crowd is connected: the engine must dial it through the flood.
    Returns (exit code, seconds from the seed's first connection to completion, the Flood or None, the process)."""
    lt_seed = peers.libtorrent(f"seed-{name}")
    run = torrentcore.run(tmp_path / "p.torrent", tmp_path / name, "--max-connections-per-ip", "5000",
                          peers=[lt_seed.endpoint], name=name)
    port = run.wait_listening()
    crowd = None
    if flood is not None:
        crowd = Flood(port, 60, run.process.pid, **flood)
        crowd.wait_started()
    gevent.sleep(1)  # the crowd holds its connections (the same wait without one)
    lt_seed.add_torrent(torrent, tmp_path / "data", seed=True)
    code = run.wait(60)
    connected = [e for e in run.events("peer connected") if e.get("client", "").startswith("LT")]
    done = run.events("download complete")
    took = _ts(done[0]) - _ts(connected[0]) if connected and done else None
    return code, took, crowd, run


def _ts(event: dict) -> float:
    from datetime import datetime

    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def test_run_downloads_from_libtorrent_through_1000_idle_and_300_slow_connections(tmp_path, peers, torrentcore,
                                                                                 payload):
    data, torrent, _ = payload
    code, clean_s, _, clean = _run_once(tmp_path, peers, torrentcore, torrent, "clean", None)
    assert code == 0, clean.describe()
    code, flooded_s, flood, run = _run_once(tmp_path, peers, torrentcore, torrent, "flooded",
                                            {"idle": 1000, "slow": 300})
    stats = flood.stop()
    print(f"run: clean {clean_s:.3f} s, flooded {flooded_s:.3f} s (first connection to the seed to completion), "
          f"ratio of rates {clean_s / max(flooded_s, 1e-3):.2f}; "
          f"flooder {stats}; max fds {flood.max_fds}")
    assert code == 0, run.describe()
    assert_same_tree(data, tmp_path / "flooded" / "payload")
    assert stats.get("opened", 0) >= 1300 and stats.get("closed_by_peer", 0) > 0  # the crowd was there
    assert 0 < flood.max_fds <= FD_BOUND and 0 < flood.max_rss <= RSS_BOUND


def test_greedy_requesters_do_not_starve_a_libtorrent_leecher(tmp_path, peers, torrentcore, payload):
    data, torrent, info_hash = payload
    seeder = torrentcore.seed(tmp_path / "p.torrent", tmp_path / "data", "--max-connections-per-ip", "5000",
                              "--max-peers", "300", "--seed-ratio", "0", "--seed-time", "0", "--seed-idle", "0",
                              name="seeder")
    port = seeder.wait_listening()
    flood = Flood(port, 60, seeder.process.pid, greedy=200, info_hash=info_hash.hex(), pieces=16,
                  piece_length=256 * 1024, length=4 * MiB)
    flood.wait_started()
    gevent.sleep(3)  # the greedy crowd holds its slots
    took = _leech(peers, "honest", torrent, port, 60)
    stats = flood.stop()
    print(f"greedy: the honest leecher took {took} s; flooder {stats}; "
          f"max fds {flood.max_fds}, max rss {flood.max_rss >> 20} MiB")
    assert took is not None, seeder.describe()
    assert_same_tree(data, os.path.join(peers.path("honest"), "payload"))
    assert stats.get("requests", 0) > 10_000  # they did ask, endlessly


def test_a_trusted_piece_that_is_bad_is_hashed_before_upload_and_downloaded_again(tmp_path, peers, monkeypatch):
    """Issue 13, 7c: the resume record claims a piece whose bytes changed (size and time kept). The first
    upload read hashes it: the libtorrent leecher never gets the bad bytes, and the piece comes again from a
    libtorrent seed."""
    from torrentcore import Session, SessionConfig, TorrentConfig
    from torrentcore_plugins import _resume_record

    data = make_payload(tmp_path / "data", 4 * MiB, seed=21)
    torrent, _ = make_torrent(data, piece_length=256 * 1024, out=tmp_path / "p.torrent")
    good = open(data, "rb").read()
    state = tmp_path / "state"
    cfg = SessionConfig(listen_port=0, listen_hosts=("127.0.0.1",), dht=False, state_dir=str(state))
    with Session(cfg) as session:  # a first run checks the data and writes the resume record
        handle = session.add_torrent(str(tmp_path / "p.torrent"), tmp_path / "data",
                                     TorrentConfig.seeding_forever())
        assert wait_until(lambda: handle.status().state == "seeding", 30)
    bad_piece = 7
    st = os.stat(data)
    with open(data, "r+b") as f:
        f.seek(bad_piece * 256 * 1024 + 1000)
        f.write(b"\xff" * 64)
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))
    monkeypatch.setattr(_resume_record, "RESUME_SAMPLE", 2)  # only the first and last piece are sampled
    lt_seed = peers.libtorrent("seed")
    good_dir = tmp_path / "good"
    os.makedirs(good_dir)
    with open(good_dir / "payload", "wb") as f:
        f.write(good)
    lt_seed.add_torrent(torrent, good_dir, seed=True)
    with Session(cfg) as session:
        handle = session.add_torrent(str(tmp_path / "p.torrent"), tmp_path / "data",
                                     TorrentConfig(seed_ratio=None, seed_time=None, seed_idle=None,
                                                   peers=(lt_seed.endpoint,)))
        assert wait_until(lambda: handle.status().state == "seeding", 30)
        assert bad_piece in handle.torrent.verifier.unconfirmed  # trusted from the record, not hashed yet
        leecher = peers.libtorrent("leecher")
        leecher.add_torrent(torrent, peers.path("leecher"))
        leecher.connect_peer("127.0.0.1", session.port)
        assert leecher.wait_finished(60), leecher.describe()
        assert wait_until(lambda: handle.status().state == "seeding", 30)
        assert open(data, "rb").read() == good  # downloaded again from the libtorrent seed
        # libtorrent never saw a bad piece from us (its hash_failed alerts) and has the right bytes.
        assert leecher._alert_count("hash_failed_alert", leecher.handle) == 0
        assert_same_tree(tmp_path / "good", peers.path("leecher"))


def test_out_of_file_descriptors_the_seed_backs_off_and_still_serves(tmp_path, peers, payload):
    """``ulimit -n`` 40 and 400 idle connections: accept fails with EMFILE. The engine logs it once per
    episode, frees the oldest half-open connection, backs off (it does not spin: well under a core of CPU
    while flooded), and a libtorrent leecher still gets the data."""
    from torrentcore_cli import COMMAND, cli_env, dht_args

    data, torrent, _ = payload
    port = free_port()
    args = ["prlimit", "--nofile=40:40", *COMMAND, *dht_args(["seed", str(tmp_path / "p.torrent"), "-d",
            str(tmp_path / "data"), "--port", str(port), "--listen-host", "127.0.0.1", "--max-connections-per-ip",
            "5000", "--log-level", "info", "--log-format", "json"])]
    err_path = tmp_path / "seed.stderr"
    with open(err_path, "wb") as err:
        seeder = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                  env=cli_env(tmp_path / "state"))
    try:
        assert wait_until(lambda: b'"listening"' in err_path.read_bytes(), 20)
        flood = Flood(port, 30, seeder.pid, idle=400)
        flood.wait_started()
        gevent.sleep(1)
        cpu0, wall0 = _cpu_seconds(seeder.pid), time.monotonic()
        gevent.sleep(4)
        cpu_share = (_cpu_seconds(seeder.pid) - cpu0) / (time.monotonic() - wall0)
        took = _leech(peers, "leecher", torrent, port, 60)
        stats = flood.stop()
        log = err_path.read_text()
        print(f"emfile: cpu share {cpu_share:.2f}, leecher {took} s, flooder {stats}")
        assert "out of file descriptors" in log, log[-3000:]
        assert "Traceback" not in log
        assert cpu_share < 0.8  # a spinning accept loop takes a whole core
        assert took is not None, log[-3000:]
        assert seeder.poll() is None
    finally:
        seeder.kill()
        seeder.wait(10)


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- upload fairness (the choker) -----------------------------------------------------------------------


class _ChokerPeer:
    def __init__(self, name, up_total=0, choked_requests=0):
        from types import SimpleNamespace

        self.name = name
        self.peer_interested = True
        self.down = SimpleNamespace(rate=0.0, total=0)
        self.up = SimpleNamespace(rate=float(up_total), total=up_total)
        self.snubbed = False
        self.has = SimpleNamespace(complete=False)
        self.conn = SimpleNamespace(closed=False)
        self.am_choking = True
        self.choked_requests = choked_requests

    def choke(self):
        self.am_choking = True

    def unchoke(self):
        self.am_choking = False


def test_greedy_peers_get_no_slot_and_the_optimistic_turn_goes_to_the_longest_waiting():
    import random
    from types import SimpleNamespace

    from torrentcore.choker import GREEDY_CHOKED_REQUESTS, OVERSERVE_SLACK, Choker

    size = 4 * MiB
    greedy = [_ChokerPeer(f"g{n}", choked_requests=GREEDY_CHOKED_REQUESTS) for n in range(50)]
    hoarders = [_ChokerPeer(f"h{n}", up_total=size + OVERSERVE_SLACK + 1) for n in range(50)]  # fastest by rate
    honest = _ChokerPeer("honest")
    ps = [*greedy, *hoarders, honest]
    swarm = SimpleNamespace(peers={("127.0.0.1", n): p for n, p in enumerate(ps)}, complete=True)
    choker = Choker(swarm, slots=4, rng=random.Random(3), total_length=size)
    choker.rechoke(now=100.0)
    assert [p.name for p in ps if not p.am_choking] == ["honest"]
    choker.peer_interest_changed(greedy[0])  # the immediate unchoke of a free slot skips greedy peers too
    assert greedy[0].am_choking
    # Newcomers that keep reconnecting wait behind peers connected (and choked) for longer.
    old = [_ChokerPeer(f"old{n}") for n in range(5)]
    swarm.peers = {("127.0.0.2", n): p for n, p in enumerate(old)}
    choker = Choker(swarm, slots=1, rng=random.Random(3), total_length=size)
    choker.rechoke(now=100.0)
    first_round = {p.name for p in old if not p.am_choking}
    for n in range(20):
        swarm.peers[("127.0.0.3", n)] = _ChokerPeer(f"new{n}")
    choker.rechoke(now=200.0)
    opt = choker.optimistic
    assert opt.name.startswith("old") and opt.name not in first_round


def test_a_resumed_download_hashes_its_trusted_pieces_before_it_says_complete(tmp_path, peers, monkeypatch):
    """Issue 13, 7c at completion: a record from a download of file a only; a piece of a then changes (size
    and time kept). Resumed with every file, the engine downloads b from libtorrent, and before calling the
    torrent complete hashes a's trusted pieces, finds the bad one and downloads it again."""
    from torrentcore import Session, SessionConfig, TorrentConfig
    from torrentcore_plugins import _resume_record

    root = make_payload(tmp_path / "data", {"a.bin": 2 * MiB, "b.bin": 2 * MiB}, seed=5)
    torrent, _ = make_torrent(root, piece_length=256 * 1024, out=tmp_path / "p.torrent")
    lt_seed = peers.libtorrent("seed")
    lt_seed.add_torrent(torrent, tmp_path / "data", seed=True)
    state, out = tmp_path / "state", tmp_path / "out"
    cfg = SessionConfig(listen_port=0, listen_hosts=("127.0.0.1",), dht=False, state_dir=str(state))
    with Session(cfg) as session:
        handle = session.add_torrent(str(tmp_path / "p.torrent"), out,
                                     TorrentConfig(seed=False, selected_files=(0,), peers=(lt_seed.endpoint,)))
        assert handle.wait_until_complete(60)
    a = out / "payload" / "a.bin"
    st = os.stat(a)
    with open(a, "r+b") as f:
        f.seek(3 * 256 * 1024 + 5)
        f.write(b"\x00" * 32)
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    monkeypatch.setattr(_resume_record, "RESUME_SAMPLE", 2)  # only the first and last claimed piece are sampled
    with Session(cfg) as session:
        handle = session.add_torrent(str(tmp_path / "p.torrent"), out,
                                     TorrentConfig(seed=False, peers=(lt_seed.endpoint,)))
        assert wait_until(lambda: handle.torrent is not None and 3 in handle.torrent.verifier.unconfirmed, 30)
        assert handle.wait_until_complete(60)
        assert not handle.torrent.verifier.unconfirmed
    assert_same_tree(root, out / "payload")
