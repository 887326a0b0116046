"""Hot-path properties found with the benchmarks (issue 6), and smoke runs of the benchmark scripts.

No test here asserts a timing: they check the behaviour that keeps costs bounded (how often the
rarest-first order is rebuilt, how many pieces wait for their hash check), and that the scripts in
``benchmarks/`` run end to end on tiny inputs with real clients.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys

import gevent
import pytest

from torrentcore import bencode, metainfo
from torrentcore.bitfield import Bitfield
from torrentcore.piecemanager import PieceManager
from torrentcore_plugins.rarest_first import RarestFirst

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
BENCH = os.path.join(ROOT, "benchmarks")
PL = 4 * 16384


def _meta(num_pieces: int) -> metainfo.Metainfo:
    info = {b"name": b"t", b"piece length": PL, b"pieces": b"\x00" * 20 * num_pieces,
            b"length": PL * num_pieces}
    return metainfo.parse(bencode.encode({b"info": info}))


class CountingRarestFirst(RarestFirst):
    """Rarest first that counts how often it rebuilds its order."""

    def __init__(self, n: int) -> None:
        super().__init__(n, random.Random(3))
        self.rebuilds = 0

    def _rebuild(self, swarm, random_phase) -> None:
        self.rebuilds += 1
        super()._rebuild(swarm, random_phase)


def test_have_messages_and_seeds_never_rebuild_the_rarest_first_order():
    n = 1024
    have = Bitfield(n)
    for i in range(8):  # past the random first pieces
        have.set(i)
    strategy = CountingRarestFirst(n)
    pm = PieceManager(_meta(n), have, strategy)
    leecher = Bitfield(n)
    pm.add_peer_pieces(leecher)
    seed = Bitfield.full(n)
    pm.add_peer_pieces(seed)
    pm.next_requests("seed", seed, 4)
    assert strategy.rebuilds == 1  # the first request builds the order
    for i in range(8, n):  # the leecher announces every piece, one HAVE each, while we keep requesting
        leecher.set(i)
        pm.add_peer_piece(i)
        pm.next_requests("seed", seed, 1)
    for _ in range(20):  # seeds joining and leaving change every piece alike: O(1), no reordering
        other = Bitfield.full(n)
        pm.add_peer_pieces(other)
        pm.next_requests("seed", seed, 1)
        pm.remove_peer_pieces(other)
    assert strategy.rebuilds == 1  # was one per HAVE (1016), then one per n/16 HAVEs and per seed
    assert pm.availability[n - 1] == 2 and pm.availability.seeds == 1  # availability itself is exact


def test_rarest_first_order_stays_exact_under_random_churn():
    """Bitfields, HAVEs, peers leaving and pieces verified in any order: the pieces offered to a seed are
    always in non-decreasing availability, exactly the wanted ones, each once."""
    n = 300
    rng = random.Random(7)
    have = Bitfield(n)
    for i in range(4):
        have.set(i)
    pm = PieceManager(_meta(n), have, RarestFirst(n, random.Random(5)))
    seed = Bitfield.full(n)
    pm.add_peer_pieces(seed)
    peers: list[Bitfield] = []
    for step in range(400):
        action = rng.random()
        if action < 0.2 or not peers:
            bf = Bitfield(n)
            for i in rng.sample(range(n), rng.randrange(n)):
                bf.set(i)
            peers.append(bf)
            pm.add_peer_pieces(bf)
        elif action < 0.3:
            pm.remove_peer_pieces(peers.pop(rng.randrange(len(peers))))
        elif action < 0.9:
            bf = rng.choice(peers)
            i = rng.randrange(n)
            if bf.set(i):
                pm.add_peer_piece(i)
        else:
            i = rng.randrange(n)
            if pm.wanted(i):
                pm.piece_verified(i)
        if step % 10 == 0:
            offered = list(pm.strategy.next_pieces(pm, seed))
            assert sorted(offered) == [i for i in range(n) if pm.wanted(i)], step
            levels = [pm.availability[i] for i in offered]
            assert levels == sorted(levels), step


def test_have_messages_still_reorder_rarest_first_eventually():
    n = 64
    have = Bitfield(n)
    for i in range(8):
        have.set(i)
    pm = PieceManager(_meta(n), have, RarestFirst(n, random.Random(1)))
    pm.add_peer_pieces(Bitfield.full(n))
    pm.next_requests("a", Bitfield.full(n), 0)
    for i in range(8, n):  # every piece but 63 becomes common
        if i != n - 1:
            for _ in range(3):
                pm.add_peer_piece(i)
    blocks = pm.next_requests("a", Bitfield.full(n), 4)
    assert {b[0] for b in blocks} == {n - 1}


def test_a_fast_peer_waits_while_pieces_queue_for_their_hash_check():
    """verify_piece blocks its caller once VERIFY_QUEUE_BYTES of pieces are pending (memory stays bounded)."""
    from torrentcore.piece_outcome import PieceOutcome
    from torrentcore.verifier import VERIFY_QUEUE_BYTES, Verifier

    class _Meta:
        piece_length = VERIFY_QUEUE_BYTES // 2
        pieces, info_hash_v2 = b"", None

    verifier = Verifier(_Meta(), object(), None, None, lambda: False, lambda i: None)  # room for 2 pieces
    verifier.submit = lambda piece, on_verdict: gevent.spawn_later(0.05, verifier.release_slot)  # a slow check
    outcome = PieceOutcome(None, verifier, None, None, None, None, None)
    started = []

    def reader() -> None:
        for k in range(5):
            outcome.verify_piece(k)
            started.append(k)

    g = gevent.spawn(reader)
    gevent.sleep(0.01)
    assert len(started) <= 2  # the third piece waits for a slot
    g.join(timeout=5)
    assert started == [0, 1, 2, 3, 4]


@pytest.mark.skipif(shutil.which("opentracker") is None, reason="opentracker is not installed")
def test_swarm_benchmark_runs_end_to_end(tmp_path):
    out = tmp_path / "swarm.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, "swarm.py"), "--size", "4M", "--seeders", "1", "--rounds", "1",
         "--clients", "torrentcore,libtorrent", "--workdir", str(tmp_path), "--json", str(out), "--timeout", "60"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    (summary,) = result["summaries"]
    assert summary["seeders"] == 1
    for client in ("torrentcore", "libtorrent"):
        stats = summary["clients"][client]
        assert stats["median_mb_s"] > 0 and stats["median_cpu_s"] > 0 and stats["peak_rss_mib"] > 0
    assert "torrentcore/libtorrent" in summary["speed_ratios"]
    low, high = summary["ratio_intervals"]["torrentcore/libtorrent"]
    assert low <= summary["speed_ratios"]["torrentcore/libtorrent"] <= high  # one round: the ratio itself
    assert "| torrentcore |" in proc.stdout
    assert not [p for p in os.listdir(tmp_path) if p.startswith("swarm-")]  # the work folder is gone


def test_median_interval_brackets_the_median_and_narrows_with_more_rounds():
    sys.path.insert(0, BENCH)
    try:
        from common import median_interval
    finally:
        sys.path.remove(BENCH)
    assert median_interval([1.0, 1.0, 1.0]) == (1.0, 1.0)
    few = [0.9, 1.0, 1.1]
    many = few * 10
    assert median_interval(few) == median_interval(few), "a fixed seed: the same report from the same rounds"
    assert median_interval(few)[0] <= 1.0 <= median_interval(few)[1]
    assert median_interval(many)[1] - median_interval(many)[0] < median_interval(few)[1] - median_interval(few)[0]
    with pytest.raises(ValueError):
        median_interval([])


def test_picker_benchmark_runs():
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, "picker.py"), "--pieces", "500,2000", "--measure", "200",
         "--json", "-"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout[proc.stdout.index("["):])
    assert {(r["scenario"], r["pieces"]) for r in rows} == {(s, n) for s in ("seeders", "swarm") for n in (500, 2000)}
    assert all(r["measured_pieces"] > 0 for r in rows)


def test_startup_benchmark_runs(tmp_path):
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, "startup.py"), "--pieces", "2000", "--check-size", "2M", "--runs", "1",
         "--workdir", str(tmp_path), "--json", "-"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout[proc.stdout.index("{\n"):])
    assert result["info"]["pieces"] == 2000
    assert result["check"]["size"] == 2 * 1024 * 1024


def test_many_torrents_benchmark_runs(tmp_path):
    out = tmp_path / "many.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, "many_torrents.py"), "--torrents", "3", "--size", str(512 * 1024),
         "--idle", "0.5", "--fetch", "2", "--timeout", "60", "--json", str(out)],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    for client in ("torrentcore", "libtorrent"):
        r = result["results"][client]
        assert r["startup_s"] > 0 and r["fetch_s"] > 0 and r["peak_rss_mib"] > 0
    assert "peak_rss_mib" in result["results"]["ratios_tc_over_lt"]


def _requested_in_pieces(pm: PieceManager) -> int:
    return sum(len(who) for piece in pm.partial.values() for who in piece.requesters.values())


def test_requests_from_all_peers_together_are_capped_and_counted_exactly():
    n = 512  # 2048 blocks
    have = Bitfield(n)
    pm = PieceManager(_meta(n), have, RarestFirst(n, random.Random(2)))
    pm.max_requested = 300
    full = Bitfield.full(n)
    peers = [f"p{k}" for k in range(48)]
    for _ in peers:
        pm.add_peer_pieces(full)
    given = {p: pm.next_requests(p, full, 1000) for p in peers}
    assert sum(len(v) for v in given.values()) == 300 == pm.requested_blocks  # 48 x 1000 asked for
    rng = random.Random(4)
    steps = 0
    while not have.complete and steps < 20_000:  # deliver, release and re-request at random until done
        steps += 1
        p = rng.choice(peers)
        if given[p] and rng.random() < 0.9:
            block = given[p].pop(rng.randrange(len(given[p])))
            if pm.block_buffer(*block) is not None:
                others, piece = pm.block_received(p, block[0], block[1])
                for other in others:
                    if block in given[other]:
                        given[other].remove(block)
                if piece is not None:
                    pm.piece_verified(piece.index)
                    pm.recycle(piece)
        elif given[p]:
            pm.release(p, given[p])
            given[p] = []
        given[p] += pm.next_requests(p, full, rng.randrange(1, 64))
        assert pm.requested_blocks == _requested_in_pieces(pm) <= 300
    assert have.complete, f"stuck after {steps} steps: {pm.requested_blocks} requested"
    assert pm.requested_blocks == 0


def test_a_read_error_while_checking_in_worker_threads_is_one_clear_line(tmp_path):
    """The check reads in worker threads: a storage error there is still one line and exit code 1."""
    piece = 16384
    info = {b"name": b"a.bin", b"piece length": piece, b"length": 4 * piece, b"pieces": bytes(20 * 4)}
    torrent = tmp_path / "a.torrent"
    torrent.write_bytes(bencode.encode({b"info": info}))
    out = tmp_path / "out"
    (out / "a.bin").mkdir(parents=True)  # a folder where the file should be: opening it fails
    (out / "a.bin" / "x").write_bytes(b"x" * 5000)
    proc = subprocess.run(
        [sys.executable, "-m", "torrentcore", "run", str(torrent), "-o", str(out), "--no-seed", "--quiet",
         "--no-dht", "--port", "0", "--listen-host", "127.0.0.1"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode in (1, 2), proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "a.bin" in proc.stderr


class _CountingPool:
    """The session's thread pool, counting hand-overs."""

    def __init__(self) -> None:
        import gevent.threadpool

        self.pool = gevent.threadpool.ThreadPool(2)
        self.tasks = 0

    def spawn(self, fn, *args):
        self.tasks += 1
        return self.pool.spawn(fn, *args)


class _Store:
    """A storage recording writes (thread-safe or not, failing on request)."""

    def __init__(self, threaded: bool, fail: bool = False) -> None:
        if threaded:
            self.thread_safe_writes = True
        self.fail = fail
        self.written: list[int] = []
        self.complete: list[int] = []

    def write(self, index, offset, data):
        from torrentcore.errors import StorageError

        if self.fail:
            raise StorageError("disk full")
        self.written.append(index)

    def mark_complete(self, index):
        self.complete.append(index)


@pytest.mark.parametrize("threaded", [True, False])
def test_downloaded_pieces_are_checked_in_batches_and_every_verdict_comes_back(threaded):
    """Several pieces per hand-over to the worker thread; each piece gets its verdict once, only good pieces
    are written and marked complete, and every slot is released (shutdown's wait_idle returns)."""
    import hashlib

    from torrentcore.piecemanager import Piece
    from torrentcore.verifier import Verifier

    n = 12
    meta = _meta(n)
    good = bytes(range(256)) * (PL // 256)
    meta.pieces = b"".join(hashlib.sha1(good).digest() for _ in range(n))  # every piece holds ``good``
    pool, store = _CountingPool(), _Store(threaded)
    verifier = Verifier(meta, store, Bitfield(n), pool, lambda: False, lambda i: None)
    verdicts: dict[int, object] = {}
    for i in range(n):
        piece = Piece(i, PL, bytearray(good if i % 3 else b"\x00" * PL))  # pieces 0, 3, 6, 9 are corrupt
        verifier.acquire_slot()
        verifier.submit(piece, lambda p, v: verdicts.setdefault(p.index, v))
    assert verifier.wait_idle(10)
    assert verdicts == {i: bool(i % 3) for i in range(n)}
    assert sorted(store.written) == sorted(store.complete) == [i for i in range(n) if i % 3]
    assert pool.tasks < n  # batched: fewer hand-overs than pieces


def test_a_storage_error_in_the_worker_comes_back_as_the_verdict():
    import hashlib

    from torrentcore.errors import StorageError
    from torrentcore.piecemanager import Piece
    from torrentcore.verifier import Verifier

    meta = _meta(1)
    data = bytearray(PL)
    meta.pieces = hashlib.sha1(data).digest()
    verifier = Verifier(meta, _Store(True, fail=True), Bitfield(1), _CountingPool(), lambda: False, lambda i: None)
    got = []
    verifier.acquire_slot()
    verifier.submit(Piece(0, PL, data), lambda p, v: got.append(v))
    assert verifier.wait_idle(10)
    assert len(got) == 1 and isinstance(got[0], StorageError)
