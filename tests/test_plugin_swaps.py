"""Swapping strategy and storage through plugins, end to end against a real libtorrent seeder.

Third-party plugin modules (given with ``--plugin``) offer a ``reverse`` strategy with a reporter that
records the order in which pieces are verified, and a ``one-blob`` storage backend written against the
hookspec contract only; the default ``sequential`` strategy is tried too.
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


@pytest.mark.parametrize("strategy", ["sequential", "reverse", "rarest-first", "random"])
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
        assert max(first_quarter) < 64, order  # hashing in the thread pool may swap neighbours
    elif strategy == "reverse":
        assert min(first_quarter) >= 64, order


STORAGE_PLUGIN = textwrap.dedent(
    '''
    import os
    from torrentcore.hookspec import hookimpl

    class OneBlob:
        """Everything in one flat file (a third-party backend using only the hookspec contract)."""

        def __init__(self, torrent, save_path):
            self.t = torrent
            os.makedirs(save_path, exist_ok=True)
            self.path = os.path.join(save_path, torrent.info_hash_hex + ".blob")
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            self.done = set()

        def read(self, piece, offset, length):
            data = os.pread(self.fd, length, piece * self.t.piece_length + offset)
            return data + bytes(length - len(data))

        def write(self, piece, offset, data):
            os.pwrite(self.fd, bytes(data), piece * self.t.piece_length + offset)

        def mark_complete(self, piece):
            self.done.add(piece)

        def mark_incomplete(self, piece):
            self.done.discard(piece)

        def completed_pieces(self):
            return None

        def pieces_with_data(self):
            return range(self.t.num_pieces) if os.fstat(self.fd).st_size else []

        def flush(self):
            pass

        def close(self):
            os.close(self.fd)

    @hookimpl
    def torrentcore_storage_backends():
        return {"one-blob": lambda torrent, save_path, options: OneBlob(torrent, save_path)}
    '''
)


def test_third_party_storage_backend(tmp_path):
    (tmp_path / "blob_plugin.py").write_text(STORAGE_PLUGIN)
    spec = {"a.bin": 3_000_000, "sub/b.bin": 1_234_567, "sub/empty": 0}
    root = rp.make_payload(str(tmp_path / "seed"), spec, seed="blob")
    torrent_path = str(tmp_path / "t.torrent")
    _, info_hash = rp.make_torrent(root, [], piece_length=64 * 1024, out=torrent_path)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    cmd = [sys.executable, "-m", "torrentcore", "run", torrent_path, "-o", str(tmp_path / "dl"), "--no-seed",
           "--quiet", "--port", str(rp.free_port()), "--plugin", "blob_plugin", "--storage", "one-blob"]
    with rp.LibtorrentPeer(name="seed") as s:
        s.add_torrent(torrent_path, os.path.dirname(root), seed=True)
        out = subprocess.run([*cmd, "--peer", f"127.0.0.1:{s.port}"], capture_output=True, text=True,
                             timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    blob = (tmp_path / "dl" / f"{info_hash.hex()}.blob").read_bytes()
    expected = b"".join((tmp_path / "seed" / "payload" / p).read_bytes() for p in ("a.bin", "sub/b.bin"))
    assert blob == expected
    assert sorted(os.listdir(tmp_path / "dl")) == [f"{info_hash.hex()}.blob"]
    # A second run checks the blob through the same backend and downloads nothing.
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert again.returncode == 0, again.stderr
