"""Swapping the piece strategy through plugins, end to end against a real libtorrent seeder.

A third-party plugin module (given with ``--plugin``) offers a ``reverse`` strategy and a reporter that
records the order in which pieces are verified; the default ``sequential`` strategy is tried too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import realpeers as rp

PLUGIN = textwrap.dedent(
    '''
    import os
    from torrentcore.hookspec import hookimpl

    class Reverse:
        def next_pieces(self, swarm, peer_has):
            yield from sorted(swarm.partial, reverse=True)
            for i in range(swarm.num_pieces - 1, -1, -1):
                if swarm.wanted(i) and i not in swarm.partial:
                    yield i

    @hookimpl
    def torrentcore_piece_strategies():
        return {"reverse": lambda torrent, options: Reverse()}

    @hookimpl
    def torrentcore_on_piece_verified(torrent, index):
        with open(os.environ["ORDER_FILE"], "a") as fh:
            fh.write(f"{index}\\n")
    '''
)


@pytest.mark.parametrize("strategy", ["sequential", "reverse", "rarest-first"])
def test_strategy_plugins_drive_a_real_download(tmp_path, strategy):
    (tmp_path / "order_plugin.py").write_text(PLUGIN)
    order_file = tmp_path / "order.txt"
    root = rp.make_payload(str(tmp_path / "seed"), 8 * 1024 * 1024, seed=strategy)
    torrent_path = str(tmp_path / "t.torrent")
    rp.make_torrent(root, [], piece_length=64 * 1024, out=torrent_path)  # 128 pieces
    env = dict(os.environ, PYTHONPATH=str(tmp_path), ORDER_FILE=str(order_file))
    with rp.LibtorrentPeer(name="seed", ignore_limits_on_local_network=False, upload_rate_limit=4_000_000) as s:
        s.add_torrent(torrent_path, os.path.dirname(root), seed=True)
        out = subprocess.run(
            [sys.executable, "-m", "torrentcore", "run", torrent_path, "-o", str(tmp_path / "dl"), "--no-seed",
             "--quiet", "--port", str(rp.free_port()), "--peer", f"127.0.0.1:{s.port}",
             "--plugin", "order_plugin", "--strategy", strategy],
            capture_output=True, text=True, timeout=120, env=env,
        )
    assert out.returncode == 0, out.stderr
    rp.assert_same_tree(root, tmp_path / "dl" / "payload")
    order = [int(x) for x in order_file.read_text().split()]
    assert sorted(order) == list(range(128))
    first_quarter = order[:32]
    if strategy == "sequential":
        assert max(first_quarter) < 64 and order[:8] == sorted(order[:8]), order
    elif strategy == "reverse":
        assert min(first_quarter) >= 64, order
