"""Seeding and choking: torrentcore uploads to real clients (libtorrent, aria2) on 127.0.0.1.

Every transfer is checked byte for byte; nothing asserts a timing. The choker itself is tested as a unit
with fake peers and an injected clock (real rotation takes 30 s per step).
"""

from __future__ import annotations

import os
import random
import re
import shutil
from types import SimpleNamespace

import libtorrent as lt
import pytest
from opentracker_fixture import opentracker_factory  # noqa: F401  (fixture "opentracker")
from realpeers import RealPeers, assert_same_tree, free_port, make_payload, make_torrent, wait_until
from torrentcore_cli import (  # noqa: F401  (fixture "torrentcore")
    TorrentcoreLauncher,
    TorrentcoreProcess,
    parse_summary,
    run_cli,
    torrentcore_factory,
    wait_tracker_count,
)

from torrentcore.choker import OPTIMISTIC_INTERVAL, Choker

KiB = 1024
MiB = 1024 * 1024

needs_aria2 = pytest.mark.skipif(shutil.which("aria2c") is None, reason="aria2c is not installed")

#: Nested folders, zero-length files (one in a subfolder), sizes that are not multiples of a piece.
TREE = {
    "a.bin": 1 * MiB,
    "sub/b.bin": 2 * MiB + 4321,
    "sub/deeper/c.bin": 123_457,
    "sub/deeper/zero": 0,
    "empty.txt": 0,
    "z.bin": 70_001,
}


@pytest.fixture
def peers(tmp_path):
    """Real peers of the test, stopped at teardown (their diagnostics printed there)."""
    with RealPeers(tmp_path / "peers") as pool:
        yield pool
        print(pool.describe())


def start_seeder(torrentcore: TorrentcoreLauncher, torrent_path, data_dir, *extra: str) -> TorrentcoreProcess:
    """``torrentcore seed`` on 127.0.0.1 with a fresh port; returns once it listens."""
    seeder = torrentcore.seed(torrent_path, data_dir, "--seed-ratio", "0", "--seed-time", "5", *extra, name="seeder")
    seeder.wait_listening()
    return seeder


def payload_size(spec) -> int:
    return spec if isinstance(spec, int) else sum(spec.values())


def tree_state(folder) -> dict[str, tuple[int, int]]:
    """``relative path -> (size, mtime)`` of every file under ``folder`` except torrentcore's resume records."""
    out = {}
    for d, _, files in os.walk(folder):
        for name in files:
            if not name.startswith(".torrentcore-"):
                st = os.stat(os.path.join(d, name))
                out[os.path.relpath(os.path.join(d, name), folder)] = (st.st_size, st.st_mtime_ns)
    return out


# --------------------------------------------------------------------------------------------------
# 1. libtorrent leecher <- torrentcore seeder (direct connection)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [3 * MiB + 12_345, TREE], ids=["single-file", "multi-file"])
def test_libtorrent_downloads_from_torrentcore_seeder(tmp_path, peers, torrentcore, spec):
    root = make_payload(tmp_path / "seed", spec, seed=21)
    torrent_path = tmp_path / "t.torrent"
    make_torrent(root, [], piece_length=64 * KiB, out=torrent_path)

    seeder = start_seeder(torrentcore, torrent_path, tmp_path / "seed")
    leecher = peers.libtorrent("leecher")
    leecher.add_torrent(torrent_path, tmp_path / "leech")
    leecher.connect_peer("127.0.0.1", seeder.listening_port())
    assert leecher.wait_finished(timeout=20), peers.describe() + seeder.describe()
    assert_same_tree(root, tmp_path / "leech" / "payload", seeder.describe())
    assert leecher.status()["total_payload_download"] >= payload_size(spec)
    received = leecher.transfers()
    assert [t["pid"] for t in received] == [seeder.peer_id()], received
    assert seeder.returncode is None, "the seeder keeps seeding until its --seed-time"
    assert seeder.stop() == 0, seeder.describe()  # stopping the seeding of complete data is success (as aria2c)
    summary = seeder.summary()
    assert summary is not None and summary["downloaded_text"] == "0 B", seeder.stdout


# --------------------------------------------------------------------------------------------------
# 2. aria2 leecher <- torrentcore seeder, found through opentracker (HTTP)
# --------------------------------------------------------------------------------------------------


def seeder_on_tracker(tmp_path, opentracker, torrentcore, spec, piece_length: int, seed: int):
    """A ``torrentcore seed`` of a new payload, registered with a new opentracker (aria2 learns about the
    seeder only from the tracker, so it must be registered first). Returns ``(root, torrent_path, seeder)``."""
    root = make_payload(tmp_path / "seed", spec, seed=seed)
    tracker = opentracker()
    torrent_path = tmp_path / "t.torrent"
    _, info_hash = make_torrent(root, [tracker.http_url], piece_length=piece_length, out=torrent_path)
    tracker.add(info_hash)
    seeder = start_seeder(torrentcore, torrent_path, tmp_path / "seed")
    assert wait_tracker_count(tracker, info_hash, seeders=1), seeder.describe()
    return root, torrent_path, seeder


@needs_aria2
def test_aria2_downloads_from_torrentcore_seeder_via_opentracker(tmp_path, peers, opentracker, torrentcore):
    root, torrent_path, seeder = seeder_on_tracker(tmp_path, opentracker, torrentcore, TREE, 32 * KiB, seed=22)
    leecher = peers.aria2(torrent_path, tmp_path / "leech")
    rc = leecher.wait(timeout=20)
    assert rc == 0, peers.describe() + seeder.describe()
    assert_same_tree(root, tmp_path / "leech" / "payload", peers.describe())


@needs_aria2
def test_aria2_leecher_sending_bitfields_instead_of_haves_is_never_dropped(tmp_path, peers, opentracker, torrentcore):
    """aria2c announces its new pieces with a whole bitfield once that is no longer than the HAVEs would be (15
    pieces of a 1,024-piece torrent): downloading 256 MiB on loopback it sends dozens a second. The seeder takes
    them as HAVEs and keeps the connection to the end. A flat late-bitfield budget (32, then 2 a second)
    dropped it for flooding half a second in, in every run here with 256 MiB (none with 128 MiB: aria2c sends
    fewer), and each round of ``benchmarks/seed.py`` lost about a second to the reconnection. The deterministic
    form of the same stream: tests/test_wire_fairness.py."""
    root, torrent_path, seeder = seeder_on_tracker(tmp_path, opentracker, torrentcore, 256 * MiB, 256 * KiB, seed=24)
    leecher = peers.aria2(torrent_path, tmp_path / "leech", debug_log=False)  # its trace slows it down
    assert leecher.wait(timeout=60) == 0, peers.describe() + seeder.describe()
    assert_same_tree(root, tmp_path / "leech" / "payload", peers.describe())
    assert not seeder.events("peer dropped for flooding"), seeder.describe()


# --------------------------------------------------------------------------------------------------
# 3. mixed swarm: torrentcore seeder (throttled), libtorrent leecher, torrentcore leecher
# --------------------------------------------------------------------------------------------------


def test_mixed_swarm_torrentcore_leecher_uploads_to_libtorrent(tmp_path, peers, opentracker, torrentcore):
    size = 3 * MiB + 999
    root = make_payload(tmp_path / "seed", size, seed=23)
    tracker = opentracker()
    torrent_path = tmp_path / "t.torrent"
    _, info_hash = make_torrent(root, [tracker.http_url], piece_length=32 * KiB, out=torrent_path)
    tracker.add(info_hash)

    # The seeder alone would need several seconds to upload the data once: leechers must trade pieces.
    seeder = start_seeder(torrentcore, torrent_path, tmp_path / "seed", "--max-upload-rate", "384k")
    assert wait_tracker_count(tracker, info_hash, seeders=1), seeder.describe()
    lt_leecher = peers.libtorrent("lt-leecher")
    lt_leecher.add_torrent(torrent_path, tmp_path / "lt")
    assert lt_leecher.wait_announced(timeout=10), lt_leecher.describe()
    # Announced after libtorrent: the tracker gives it both the seeder and the libtorrent leecher.
    tc_leecher = torrentcore.run(torrent_path, tmp_path / "tc", "--seed-ratio", "0", "--seed-time", "5",
                                 "--seed-idle", "0", no_seed=False, name="tc-leecher")
    assert lt_leecher.wait_finished(timeout=25), peers.describe() + seeder.describe() + tc_leecher.describe()
    assert tc_leecher.wait_event("download complete", 20), tc_leecher.describe()
    assert_same_tree(root, tmp_path / "lt" / "payload", peers.describe())
    assert_same_tree(root, tmp_path / "tc" / "payload", tc_leecher.describe())
    assert tc_leecher.returncode is None, "seeding is on: the torrentcore leecher keeps running"

    # Who sent libtorrent its data, by peer id (whichever side dialled, whatever the port): the
    # seeder and the torrentcore leecher both did.
    received = lt_leecher.transfers()
    seeder_id, leecher_id = seeder.peer_id(), tc_leecher.peer_id()
    assert seeder_id and leecher_id and seeder_id != leecher_id, (seeder_id, leecher_id)
    by_id = {pid: sum(t["downloaded"] for t in received if t["pid"] == pid) for pid in (seeder_id, leecher_id)}
    assert by_id[seeder_id] > 0 and by_id[leecher_id] > 0, received
    assert {t["pid"] for t in received} <= {seeder_id, leecher_id}, received
    assert tc_leecher.stop() == 0, tc_leecher.describe()  # complete: stopping its seeding is success
    # The torrentcore leecher's own account agrees: it uploaded something.
    summary = tc_leecher.summary()
    assert summary is not None and summary["uploaded_text"] != "0 B", tc_leecher.describe()
    assert summary["downloaded_text"] != "0 B"


# --------------------------------------------------------------------------------------------------
# 4. choking
# --------------------------------------------------------------------------------------------------


class FakePeer:
    """What the choker looks at in a peer."""

    def __init__(self, name: str, interested: bool = True, down: float = 0.0, up: float = 0.0,
                 snubbed: bool = False, seed: bool = False) -> None:
        self.name = name
        self.peer_interested = interested
        self.down = SimpleNamespace(rate=down)
        self.up = SimpleNamespace(rate=up)
        self.snubbed = snubbed
        self.has = SimpleNamespace(complete=seed)
        self.conn = SimpleNamespace(closed=False)
        self.am_choking = True
        self.choke_messages = 0
        self.unchoke_messages = 0

    def choke(self) -> None:
        if not self.am_choking:
            self.am_choking = True
            self.choke_messages += 1

    def unchoke(self) -> None:
        if self.am_choking:
            self.am_choking = False
            self.unchoke_messages += 1

    def __repr__(self) -> str:
        return f"<{self.name}>"


def make_choker(peer_list, seeding: bool = False, slots: int = 4, seed: int = 1):
    torrent = SimpleNamespace(
        peers={("127.0.0.1", 1000 + n): p for n, p in enumerate(peer_list)},
        complete=seeding,
    )
    return Choker(torrent, slots=slots, rng=random.Random(seed)), torrent


def unchoked(peer_list) -> set[str]:
    return {p.name for p in peer_list if not p.am_choking}


def test_choker_unchokes_slots_plus_one_optimistic():
    ps = [FakePeer(f"p{n}", down=100.0 * n) for n in range(8)]
    ps += [FakePeer("bored", interested=False, down=10_000.0), FakePeer("seed", seed=True, down=20_000.0)]
    choker, _ = make_choker(ps, slots=4)
    choker.rechoke(now=1000.0)
    open_ = unchoked(ps)
    assert len(open_) == 4 + 1
    assert {"p7", "p6", "p5", "p4"} <= open_  # the four fastest uploaders to us
    assert choker.optimistic is not None and choker.optimistic.name in {"p0", "p1", "p2", "p3"}
    assert "bored" not in open_ and "seed" not in open_  # not interested / has everything


def test_choker_optimistic_rotates_every_30_seconds():
    ps = [FakePeer(f"p{n}", down=1000.0 * n) for n in range(7)]  # 2 regular slots, 5 candidates
    choker, _ = make_choker(ps, slots=2, seed=7)
    now = 5000.0
    choker.rechoke(now=now)
    first = choker.optimistic
    seen = {first.name}
    for step in range(1, 3):  # regular rounds within the 30 s keep the same optimistic peer
        choker.rechoke(now=now + 10.0 * step)
        assert choker.optimistic is first
        assert len(unchoked(ps)) == 3
    previous = first
    for n in range(1, 13):
        choker.rechoke(now=now + OPTIMISTIC_INTERVAL * n)
        assert choker.optimistic is not previous, f"round {n}: the optimistic peer must change"
        assert choker.optimistic.name not in {"p6", "p5"}  # never one of the regular slots
        assert unchoked(ps) == {"p6", "p5", choker.optimistic.name}
        assert previous.am_choking  # the old optimistic peer was choked again
        previous = choker.optimistic
        seen.add(previous.name)
    assert seen == {"p0", "p1", "p2", "p3", "p4"}  # over time everybody gets a chance
    assert choker.rotations >= 12


def test_choker_ranks_by_download_rate_while_leeching():
    fast_giver = FakePeer("fast-giver", down=900.0, up=1.0)
    taker = FakePeer("taker", down=1.0, up=900.0)
    medium = FakePeer("medium", down=500.0, up=500.0)
    others = [FakePeer(f"o{n}", down=0.0, up=0.0) for n in range(3)]
    ps = [taker, fast_giver, medium, *others]
    choker, _ = make_choker(ps, slots=2)
    choker.rechoke(now=100.0)
    regular = unchoked(ps) - {choker.optimistic.name}
    assert regular == {"fast-giver", "medium"}


def test_choker_ranks_by_upload_rate_while_seeding():
    fast_giver = FakePeer("fast-giver", down=900.0, up=1.0)
    taker = FakePeer("taker", down=1.0, up=900.0)
    medium = FakePeer("medium", down=500.0, up=500.0)
    others = [FakePeer(f"o{n}") for n in range(3)]
    ps = [fast_giver, taker, medium, *others]
    choker, torrent = make_choker(ps, seeding=True, slots=2)
    choker.rechoke(now=100.0)
    regular = unchoked(ps) - {choker.optimistic.name}
    assert regular == {"taker", "medium"}


def test_choker_snubbed_peers_lose_regular_slots_while_leeching():
    snubber = FakePeer("snubber", down=10_000.0, snubbed=True)  # its rate is history: it stopped sending
    ps = [snubber, FakePeer("a", down=10.0), FakePeer("b", down=20.0)]
    for seed in range(20):  # whatever the optimistic draw
        for p in ps:
            p.am_choking = True
        choker, _ = make_choker(ps, slots=4, seed=seed)
        choker.rechoke(now=100.0)
        assert {"a", "b"} <= unchoked(ps)
        # Free regular slots do not go to a snubbing peer; only the optimistic unchoke can reach it.
        assert snubber.am_choking or choker.optimistic is snubber
    # Still snubbed once the optimistic turn passed: choked again.
    choker, _ = make_choker(ps, slots=4, seed=0)
    choker.rechoke(now=100.0)
    assert choker.optimistic is snubber and not snubber.am_choking
    choker.rechoke(now=100.0 + OPTIMISTIC_INTERVAL)
    assert choker.optimistic is snubber  # the only candidate outside the regular slots keeps the turn
    snubber.snubbed = False  # it sends again: a regular slot, by rate
    choker.rechoke(now=110.0 + OPTIMISTIC_INTERVAL)
    assert not snubber.am_choking and choker.optimistic is None


def test_choker_snubbing_is_irrelevant_while_seeding():
    ps = [FakePeer("snubbed", up=900.0, snubbed=True), FakePeer("a", up=10.0), FakePeer("b", up=5.0)]
    choker, _ = make_choker(ps, seeding=True, slots=1)
    choker.rechoke(now=100.0)
    assert "snubbed" in unchoked(ps) and choker.optimistic.name in {"a", "b"}


def test_choker_reacts_to_interest_at_once():
    ps = [FakePeer(f"p{n}", interested=False) for n in range(7)]
    choker, _ = make_choker(ps, slots=2)
    choker.rechoke(now=100.0)
    assert unchoked(ps) == set()
    for p in ps:  # interest arrives between rounds: free slots (2 + 1 optimistic) are given at once
        p.peer_interested = True
        choker.peer_interest_changed(p)
    assert len(unchoked(ps)) == 3
    for p in ps:
        if not p.am_choking and p is not choker.optimistic:
            p.peer_interested = False  # an unchoked peer loses interest: its slot is passed on
            choker.peer_interest_changed(p)
            assert p.am_choking
            break
    assert len(unchoked(ps)) == 3


def test_choker_never_has_more_than_slots_plus_one_unchoked_while_slots_change_hands():
    # The messages leave in the order the choker sends them: an unchoke before the choke it replaces would let
    # a leecher see slots + 2 peers unchoked for a moment (the real-leecher test below once saw 3 of 1 + 1).
    ps = [FakePeer(f"p{n}", down=1000.0 * n) for n in range(7)]
    most = 0

    def counting(peer: FakePeer) -> None:
        nonlocal most
        FakePeer.unchoke(peer)
        most = max(most, len(unchoked(ps)))

    for p in ps:
        p.unchoke = lambda p=p: counting(p)
    choker, _ = make_choker(ps, slots=2, seed=3)
    for n in range(24):  # the optimistic slot changes hands every round, regular slots when rates change
        ps[n % 7].down.rate = 10_000.0 * ((n * 5) % 7)
        choker.rechoke(now=1000.0 + OPTIMISTIC_INTERVAL * n)
        assert len(unchoked(ps)) == 3
    assert choker.rotations >= 20 and most == 3


def test_choker_sends_no_redundant_messages():
    ps = [FakePeer(f"p{n}", down=float(n)) for n in range(3)]
    choker, _ = make_choker(ps, slots=4)
    for step in range(5):
        choker.rechoke(now=100.0 + 10 * step)
    assert [p.unchoke_messages for p in ps] == [1, 1, 1]
    assert [p.choke_messages for p in ps] == [0, 0, 0]


def test_more_leechers_than_slots_all_complete(tmp_path, peers, torrentcore):
    """``--upload-slots 1``: 3 libtorrent leechers that only know the seeder; at most 1 + 1 optimistic
    are unchoked at any time, the third waits its turn, and everyone completes."""
    size = 2 * MiB + 5
    root = make_payload(tmp_path / "seed", size, seed=24)
    torrent_path = tmp_path / "t.torrent"
    make_torrent(root, [], piece_length=32 * KiB, out=torrent_path)
    # Throttled so that the transfers overlap long enough to watch the choke states (the limiter's
    # one-second burst alone would serve a whole 1 MiB copy before the other leechers connect).
    seeder = start_seeder(torrentcore, torrent_path, tmp_path / "seed", "--upload-slots", "1",
                          "--max-upload-rate", "1M", "--no-pex")  # no PEX: the leechers know only the seeder
    port = seeder.listening_port()
    leechers = []
    for n in range(3):
        leecher = peers.libtorrent(f"leecher{n}")
        leecher.add_torrent(torrent_path, tmp_path / f"leech{n}")
        leecher.connect_peer("127.0.0.1", port)
        leechers.append(leecher)

    most_unchoked = 0
    waited = 0  # samples in which an interested, connected leecher was choked by the seeder

    def choke_states() -> dict[int, bool]:
        """Leecher number -> whether the seeder chokes it, for the leechers still interested in it."""
        states = {}
        for n, leecher in enumerate(leechers):
            if leecher.handle.status().is_seeding:
                continue
            for p in leecher.handle.get_peer_info():
                if p.ip[1] == port and p.flags & lt.peer_info.interesting:
                    states[n] = bool(p.flags & lt.peer_info.remote_choked)
        return states

    def sample() -> bool:
        nonlocal most_unchoked, waited
        # The leechers are read one after the other: a slot that changes hands between two reads shows both
        # its old and its new holder unchoked. Two reads in a row, and a leecher counts as unchoked only if
        # unchoked in both: a real excess lasts, a hand-over seen mid-way does not.
        first, second = choke_states(), choke_states()
        unchoked_both = [n for n in second if not second[n] and first.get(n) is False]
        most_unchoked = max(most_unchoked, len(unchoked_both))
        waited += list(second.values()).count(True) > 0 and len(second) == 3
        return all(leecher.handle.status().is_seeding for leecher in leechers)

    assert wait_until(sample, 25, interval=0.02), peers.describe() + seeder.describe()
    for n, leecher in enumerate(leechers):
        assert leecher.wait_finished(timeout=5), peers.describe() + seeder.describe()
        assert_same_tree(root, tmp_path / f"leech{n}" / "payload", peers.describe())
        assert {t["pid"] for t in leecher.transfers()} == {seeder.peer_id()}
    assert most_unchoked <= 2, "1 regular slot + 1 optimistic unchoke"
    assert waited > 0, "with 3 interested leechers and 2 unchokes, one must have been choked"


# --------------------------------------------------------------------------------------------------
# 5. checking data before seeding; a complete folder is not downloaded again
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["corrupt-byte", "truncated-file", "missing-file", "empty-folder"])
def test_seed_refuses_incomplete_data(tmp_path, damage):
    root = make_payload(tmp_path / "data", TREE, seed=25)
    torrent_path = tmp_path / "t.torrent"
    make_torrent(root, ["http://127.0.0.1:1/announce"], piece_length=32 * KiB, out=torrent_path)
    target = os.path.join(root, "sub", "b.bin")
    if damage == "corrupt-byte":
        with open(target, "r+b") as fh:
            fh.seek(100_000)
            byte = fh.read(1)
            fh.seek(100_000)
            fh.write(bytes([byte[0] ^ 0xFF]))
    elif damage == "truncated-file":
        os.truncate(target, 1_000_000)
    elif damage == "missing-file":
        os.unlink(target)
    else:
        shutil.rmtree(tmp_path / "data")
        os.mkdir(tmp_path / "data")
    before = tree_state(tmp_path / "data")
    proc = run_cli(["seed", str(torrent_path), "-d", str(tmp_path / "data"), "--port", str(free_port()),
                    "--listen-host", "127.0.0.1"], timeout=30)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    if damage == "empty-folder":  # nothing of the torrent there: bad input naming the expected path
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert lines[0].startswith(f"torrentcore: error: no data for payload in {tmp_path / 'data'}: expected ")
    else:
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert re.fullmatch(r"torrentcore: error: the data in .* is incomplete \(\d+/\d+ pieces verified\)",
                            lines[0])
    # Seeding never writes the data: nothing created, resized or rewritten (the resume record aside).
    assert tree_state(tmp_path / "data") == before


def test_seed_missing_data_folder_is_bad_input(tmp_path):
    root = make_payload(tmp_path / "data", 100_000)
    torrent_path = tmp_path / "t.torrent"
    make_torrent(root, [], out=torrent_path)
    proc = run_cli(["seed", str(torrent_path), "-d", str(tmp_path / "nowhere")])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "does not exist" in proc.stderr


@pytest.mark.parametrize("spec", [1 * MiB + 3, TREE], ids=["single-file", "multi-file"])
def test_run_on_complete_data_downloads_nothing(tmp_path, spec):
    root = make_payload(tmp_path / "data", spec, seed=26)
    torrent_path = tmp_path / "t.torrent"
    # A tracker nobody answers: with the data complete and --no-seed no network is needed at all.
    make_torrent(root, ["http://127.0.0.1:1/announce"], piece_length=32 * KiB, out=torrent_path)
    before = tree_state(root)
    proc = run_cli(["run", str(torrent_path), "-o", str(tmp_path / "data"), "--no-seed",
                    "--port", str(free_port()), "--listen-host", "127.0.0.1"], timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    summary = parse_summary(proc.stdout)
    assert summary is not None and summary["verdict"] == "done" and summary["downloaded_text"] == "0 B", proc.stdout
    assert tree_state(root) == before  # no file was rewritten
    make_payload(tmp_path / "expected", spec, seed=26)
    assert_same_tree(tmp_path / "expected" / "payload", root)


# --------------------------------------------------------------------------------------------------
# 6. upload rate limit: a smoke test that limited transfers still complete correctly
# --------------------------------------------------------------------------------------------------


def test_upload_rate_limit_still_completes(tmp_path, peers, torrentcore):
    size = 2 * MiB + 777
    root = make_payload(tmp_path / "seed", size, seed=27)
    torrent_path = tmp_path / "t.torrent"
    make_torrent(root, [], piece_length=64 * KiB, out=torrent_path)
    seeder = start_seeder(torrentcore, torrent_path, tmp_path / "seed", "--max-upload-rate", "1M")
    leecher = peers.libtorrent("leecher")
    leecher.add_torrent(torrent_path, tmp_path / "leech")
    leecher.connect_peer("127.0.0.1", seeder.listening_port())
    assert leecher.wait_finished(timeout=20), peers.describe() + seeder.describe()
    assert_same_tree(root, tmp_path / "leech" / "payload", seeder.describe())
    assert leecher.status()["total_payload_download"] >= size
