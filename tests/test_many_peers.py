"""Many peers on one torrent (issue 17, item 4): the work per verified piece does not grow with the number of
connected seeds, and a smoke run of benchmarks/many_peers.py on a tiny swarm (end to end with real clients,
every peer count it was asked for). No timing is asserted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from torrentcore.bitfield import Bitfield
from torrentcore.swarm import Swarm


class _Peer:
    def __init__(self, n: int, seed: bool) -> None:
        self.has = Bitfield.full(n) if seed else Bitfield(n)
        self.haves: list[int] = []

    def send_have(self, index: int) -> None:
        self.haves.append(index)


class _HaveCounting(dict):
    """A peers dict that counts how often it is listed (a look at every peer)."""

    listed = 0

    def values(self):
        self.listed += 1
        return super().values()


def test_verified_pieces_are_announced_to_leechers_only_without_a_look_at_every_seed_per_piece():
    n = 16
    swarm = object.__new__(Swarm)  # broadcast_have needs only the peers and its list of leechers
    peers = _HaveCounting({("127.0.0.1", 6000 + i): _Peer(n, seed=True) for i in range(50)})
    leecher = _Peer(n, seed=False)
    peers[("127.0.0.1", 7000)] = leecher
    swarm.peers, swarm._leechers = peers, None
    for index in range(8):
        swarm.broadcast_have(index)
    assert peers.listed == 1  # listed once, not once per piece
    assert leecher.haves == list(range(8))
    assert all(not p.haves for p in peers.values() if p is not leecher)
    for index in range(n):
        leecher.has.set(index)  # it became a seed: no HAVE for it from now on
    swarm.broadcast_have(8)
    swarm.broadcast_have(9)
    assert leecher.haves == list(range(8))
    newcomer = _Peer(n, seed=False)
    peers[("127.0.0.1", 7001)] = newcomer
    swarm._leechers = None  # what admitting a peer does (Swarm.run_peer)
    swarm.broadcast_have(10)
    assert newcomer.haves == [10] and leecher.haves == list(range(8))


BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "benchmarks")


@pytest.mark.skipif(shutil.which("opentracker") is None, reason="opentracker is not installed")
def test_many_peers_benchmark_runs_end_to_end(tmp_path):
    out = tmp_path / "many_peers.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, "many_peers.py"), "--size", "4M", "--piece-kib", "64", "--seeders", "4",
         "--peers", "1,4", "--rounds", "1", "--json", str(out), "--timeout", "60"],
        capture_output=True, text=True, timeout=150,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    result = json.loads(out.read_text())
    assert set(result["clients"]) == {"torrentcore-1", "torrentcore-4", "libtorrent-1", "libtorrent-4"}
    assert result["clients"]["torrentcore-1"]["connected"] == [1]
    (four,) = result["clients"]["torrentcore-4"]["connected"]
    assert 2 <= four <= 4  # the seeders came through the tracker (a tiny download may end before the last one)
    assert all(c["cpu_s_per_gib"] > 0 for c in result["clients"].values())
    assert "| torrentcore | 4 |" in proc.stdout
