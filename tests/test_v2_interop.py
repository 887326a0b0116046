"""BitTorrent v2 and hybrid torrents (BEP 52) against libtorrent 2.x, byte for byte, in both directions.

libtorrent makes the torrents (its ``create_torrent``: ``v2_only`` or its default, hybrid) and seeds or
leeches them on 127.0.0.1; torrentcore runs as a subprocess. A v2-only torrent is known on the wire by
its truncated SHA-256 info-hash and checked with Merkle piece hashes; a hybrid is checked with both
kinds of hash. Payloads are 1-3 MiB.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import libtorrent as lt
import pytest
from realpeers import LibtorrentPeer, assert_same_tree, make_payload
from torrentcore_cli import torrentcore_factory  # noqa: F401  (fixture "torrentcore")

from torrentcore import metainfo

KiB = 1024
MiB = 1024 * KiB
#: Files of odd sizes (pad files between them), one smaller than a piece, one empty.
TREE = {"a.bin": MiB + 12_345, "sub/b.bin": 700_001, "sub/c.txt": 5_000, "sub/empty": 0, "z.bin": 300_000}
RUN_TIMEOUT = 60


def lt_torrent(root: str, out: Path, kind: str, piece_length: int = 64 * KiB) -> metainfo.Metainfo:
    """A .torrent of ``root`` made by libtorrent (``kind``: ``v2`` or ``hybrid``), written to ``out``."""
    flags = lt.create_torrent.v2_only if kind == "v2" else 0
    ct = lt.create_torrent(lt.list_files(os.path.abspath(root)), piece_length, flags=flags)
    lt.set_piece_hashes(ct, os.path.dirname(os.path.abspath(root)))
    out.write_bytes(bytes(lt.bencode(ct.generate())))
    meta = metainfo.load(str(out))
    assert meta.v2 and (meta.v2_only == (kind == "v2"))
    return meta


def lt_hashes(path: Path) -> lt.info_hash_t:
    return lt.torrent_info(str(path)).info_hashes()


CASES = [
    pytest.param("v2", TREE, id="v2-multi"),
    pytest.param("v2", 2 * MiB + 777, id="v2-single"),
    pytest.param("hybrid", TREE, id="hybrid-multi"),
    pytest.param("hybrid", MiB + 4321, id="hybrid-single"),
]


@pytest.mark.parametrize("kind,spec", CASES)
def test_download_from_libtorrent_seeder(tmp_path, torrentcore, kind, spec):
    root = make_payload(tmp_path / "seed", spec, seed=5)
    torrent = tmp_path / "x.torrent"
    meta = lt_torrent(root, torrent, kind)
    hashes = lt_hashes(torrent)
    assert meta.info_hash_v2 == hashes.v2.to_bytes()
    if kind == "hybrid":
        assert meta.info_hash == hashes.v1.to_bytes()
    with LibtorrentPeer(name="lt-seeder") as seeder:
        seeder.add_torrent(torrent, tmp_path / "seed", seed=True)
        proc = torrentcore.run(torrent, tmp_path / "dl", peers=[seeder.endpoint])
        assert proc.wait(RUN_TIMEOUT) == 0, proc.describe()
    assert_same_tree(root, tmp_path / "dl" / os.path.basename(root))
    # Sizes shown count no pad bytes: the size announced at the start is the size verified at the end.
    start = re.search(r": (\d+\.\d \w+) in \d+ files?", proc.stdout)
    end = re.search(r"complete[^,\n]*, (\d+\.\d \w+) verified", proc.stdout)
    assert start and end and start[1] == end[1], proc.stdout


@pytest.mark.parametrize("kind,spec", [CASES[0], CASES[2]])
def test_libtorrent_downloads_from_torrentcore_seeder(tmp_path, torrentcore, kind, spec):
    root = make_payload(tmp_path / "seed", spec, seed=6)
    torrent = tmp_path / "x.torrent"
    lt_torrent(root, torrent, kind)
    seeder = torrentcore.seed(torrent, tmp_path / "seed")
    port = seeder.wait_listening()
    with LibtorrentPeer(name="lt-leecher") as leecher:
        leecher.add_torrent(torrent, tmp_path / "lt")
        leecher.connect_peer("127.0.0.1", port)
        assert leecher.wait_finished(RUN_TIMEOUT), leecher.describe() + seeder.describe()
    assert_same_tree(root, tmp_path / "lt" / os.path.basename(root))


# --------------------------------------------------------------------------------------------------
# Magnet links with btmh: the metadata has no piece layers, so they come as hash request / hashes
# --------------------------------------------------------------------------------------------------

#: Files over one piece (each needs its piece layer from the peer) and one under (its root suffices).
MAGNET_TREE = {"big.bin": MiB + 5_000, "sub/mid.bin": 400_000, "small.txt": 9_000}


def _btmh(meta: metainfo.Metainfo, peer: tuple[str, int] | None = None, hybrid: bool = False) -> str:
    parts = [f"xt=urn:btmh:1220{meta.info_hash_v2_hex}"]
    if hybrid:
        parts.insert(0, f"xt=urn:btih:{meta.info_hash_hex}")
    if peer:
        parts.append(f"x.pe={peer[0]}:{peer[1]}")
    return "magnet:?" + "&".join(parts)


@pytest.mark.parametrize("kind", ["v2", "hybrid"])
def test_btmh_magnet_download_from_libtorrent_seeder(tmp_path, torrentcore, kind):
    root = make_payload(tmp_path / "seed", MAGNET_TREE, seed=8)
    torrent = tmp_path / "x.torrent"
    meta = lt_torrent(root, torrent, kind, piece_length=32 * KiB)
    assert meta.missing_layers() == []  # the .torrent has them; the magnet link will not
    with LibtorrentPeer(name="lt-seeder") as seeder:
        seeder.add_torrent(torrent, tmp_path / "seed", seed=True)
        link = _btmh(meta, seeder.endpoint, hybrid=kind == "hybrid")
        proc = torrentcore.run(link, tmp_path / "dl")
        assert proc.wait(RUN_TIMEOUT) == 0, proc.describe()
    assert_same_tree(root, tmp_path / "dl" / os.path.basename(root))
    # A hybrid too gets its layers from libtorrent (over a connection made with its v2 hash: libtorrent takes
    # hash requests on no other) and is complete only once its pieces are checked with both hashes.
    assert proc.events("piece layers complete"), proc.describe()
    names = [e.get("event") for e in proc.logs()]
    assert names.index("piece layers complete") < names.index("download complete"), names
    assert not re.search(r"never arrived|SHA-1 only", proc.stdout), proc.stdout
    # The saved .torrent now holds them: a later run on the folder can check the data at once.
    saved = metainfo.load(str(tmp_path / "dl" / f"{meta.name}.torrent"))
    assert saved.info_hash_v2 == meta.info_hash_v2 and not saved.missing_layers()
    assert saved.piece_layers == meta.piece_layers


def test_libtorrent_btmh_magnet_download_from_torrentcore_seeder(tmp_path, torrentcore):
    root = make_payload(tmp_path / "seed", MAGNET_TREE, seed=9)
    torrent = tmp_path / "x.torrent"
    meta = lt_torrent(root, torrent, "v2", piece_length=32 * KiB)
    seeder = torrentcore.seed(torrent, tmp_path / "seed", "--no-dht")
    port = seeder.wait_listening()
    with LibtorrentPeer(name="lt-leecher") as leecher:
        params = lt.parse_magnet_uri(_btmh(meta))
        params.save_path = str(tmp_path / "lt")
        params.flags &= ~lt.torrent_flags.paused
        params.flags &= ~lt.torrent_flags.auto_managed
        handle = leecher.session.add_torrent(params)
        handle.connect_peer(("127.0.0.1", port))
        assert leecher.wait_finished(timeout=RUN_TIMEOUT, handle=handle), leecher.describe() + seeder.describe()
        assert handle.torrent_file().info_hashes().v2.to_bytes() == meta.info_hash_v2
    assert_same_tree(root, tmp_path / "lt" / os.path.basename(root))


def test_daemon_stores_the_piece_layers_a_btmh_magnet_got_from_libtorrent(tmp_path):
    """The daemon's database keeps the piece layers fetched from peers, not only the info dictionary: after
    a restart the torrent's pieces can be checked with their Merkle hashes at once."""
    import sqlite3

    from daemon_harness import DaemonProcess

    from torrentcore.daemon.database import DB_NAME

    root = make_payload(tmp_path / "seed", MAGNET_TREE, seed=10)
    torrent = tmp_path / "x.torrent"
    meta = lt_torrent(root, torrent, "hybrid", piece_length=32 * KiB)
    daemon = DaemonProcess(tmp_path / "d")
    try:
        with LibtorrentPeer(name="lt-seeder") as seeder:
            seeder.add_torrent(torrent, tmp_path / "seed", seed=True)
            link = _btmh(meta, seeder.endpoint, hybrid=True)
            tid = daemon.rpc("torrent-add", filename=link)["torrent-added"]["id"]
            daemon.wait_torrent(tid, lambda t: t["percentDone"] == 1, RUN_TIMEOUT, "percentDone")
    finally:
        assert daemon.terminate() == 0, daemon.stderr()[-2000:]
    with sqlite3.connect(daemon.config_dir / DB_NAME) as db:
        (stored,) = db.execute("SELECT metainfo FROM torrents").fetchone()
    path = tmp_path / "stored.torrent"
    path.write_bytes(stored)
    saved = metainfo.load(str(path))
    assert saved.info_hash == meta.info_hash and not saved.missing_layers()
    assert saved.piece_layers == meta.piece_layers
