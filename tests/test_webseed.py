"""Web seeds (BEP 19 ``url-list``, BEP 17 ``httpseeds``) against Debian's nginx, a libtorrent seeder, and a
misbehaving HTTP server (tests/webseed_servers.py).

Every download is checked byte for byte; nginx's access log proves what it served, libtorrent's counters
what the seeder served. The hostile web seeds must each cost one warning line, and the download must go
on from the good sources.
"""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import pytest
from realpeers import assert_same_tree, make_payload, peers_fixture  # noqa: F401  (fixture "peers")
from torrentcore_cli import TorrentcoreProcess, run_cli, torrentcore_factory  # noqa: F401  (fixture "torrentcore")
from webseed_servers import NGINX, HostileServer, Nginx

from torrentcore import metainfo
from torrentcore.bencode import encode
from torrentcore.bitfield import Bitfield
from torrentcore.create import create_torrent
from torrentcore.errors import BadInputError
from torrentcore.piecemanager import PieceManager
from torrentcore.webseed import WebSeeds, _Assembler, default_run, left_over_run
from torrentcore.webseed_urls import UrlMap, bep17_url, file_urls
from torrentcore_plugins.rarest_first import RandomOrder, RarestFirst, Sequential

needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (scripts/test.sh installs it)")

RUN_TIMEOUT = 60
#: A tree with a name that needs percent-encoding, a nested folder, an empty file and a short last piece.
TREE = {"a b.bin": 1_500_123, "sub/\u00fcber.bin": 2_000_000, "empty": 0, "z.bin": 77}


def _finish(run: TorrentcoreProcess, timeout: float = RUN_TIMEOUT) -> None:
    rc = run.wait(timeout)
    assert rc == 0, run.describe()
    summary = run.summary()
    assert summary is not None and summary["verdict"] == "done", run.describe()
    assert summary["pieces_done"] == summary["num_pieces"], run.describe()
    assert "Traceback" not in run.stdout + run.stderr, run.describe()
    assert not [e for e in run.logs() if str(e.get("event", "")).startswith("internal error")], run.describe()


def _warnings(run: TorrentcoreProcess, needle: str) -> list[str]:
    return [line for line in run.stdout.splitlines() if "warning:" in line and needle in line]


def _create(path: Path, out: Path, web_seeds: list[str], piece_length: int | None = None) -> metainfo.Metainfo:
    """In-process (``torrentcore create --web-seed`` itself is tested once, below: each command costs seconds)."""
    data, meta = create_torrent(path, web_seeds=web_seeds, piece_length=piece_length)
    out.write_bytes(data)
    return meta


# --- URL mapping (BEP 19, BEP 17) -------------------------------------------------------------------


def _meta(info: dict, **top) -> metainfo.Metainfo:
    return metainfo.parse(encode({"info": info, **top}))


def test_url_mapping_single_and_multi_file_with_pad_files():
    one = _meta({"name": "a b.iso", "piece length": 16384, "pieces": b"\0" * 40, "length": 20000},
                **{"url-list": ["http://m/x/", "http://m/file.iso"], "httpseeds": "http://h/seed"})
    assert one.url_list == ["http://m/x/", "http://m/file.iso"] and one.http_seeds == ["http://h/seed"]
    assert file_urls("http://m/x/", one) == ["http://m/x/a%20b.iso"]  # ends in /: the name is appended
    assert file_urls("http://m/file.iso", one) == ["http://m/file.iso"]  # else the URL is the file
    assert [(s.url, s.kind) for s in WebSeeds(one, None, print).seeds] == [
        ("http://m/x/", "url-list"), ("http://m/file.iso", "url-list"), ("http://h/seed", "httpseeds")]
    assert not WebSeeds(one, None, print, enabled=False).seeds  # run --no-web-seeds
    ftp = _meta({"name": "f", "piece length": 16384, "pieces": b"\0" * 20, "length": 1}, **{"url-list": "ftp://m/f"})
    assert ftp.url_list == ["ftp://m/f"] and not WebSeeds(ftp, None, print).seeds  # only http(s) is asked
    files = [{"length": 10000, "path": [b"d\xc3\xbc", b"f#1"]}, {"length": 6384, "path": [b".pad", b"6384"],
                                                                     "attr": b"p"},
             {"length": 0, "path": [b"empty"]}, {"length": 20000, "path": [b"two"]}]
    # Names as the torrent has them, never as made safe for the disk ("..", "a/b" would be renamed there).
    many = _meta({"name": "top dir", "piece length": 16384, "pieces": b"\0" * 60, "files": files})
    urls = file_urls("http://m/base", many)  # a slash is added for a multi-file torrent
    assert urls == ["http://m/base/top%20dir/d%C3%BC/f%231", None, "http://m/base/top%20dir/empty",
                    "http://m/base/top%20dir/two"]
    spans = UrlMap("http://m/base/", many).spans(0, 2)  # pieces 0-1: the first file, the pad, 16384 of "two"
    assert [(s.url, s.offset, s.length) for s in spans] == [
        (urls[0], 0, 10000), (None, 0, 6384), (urls[3], 0, 16384)]
    assert [(s.url, s.offset, s.length) for s in UrlMap("http://m/base/", many).spans(2, 1)] == [
        (urls[3], 16384, 3616)]  # the short last piece
    url = bep17_url("http://h/seed", b"\x01" * 20, 7, 16384)
    assert url == "http://h/seed?info_hash=%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01" \
                  "&piece=7&ranges=0-16383"


def test_create_web_seed_is_written_and_shown_by_info(tmp_path):
    root = make_payload(tmp_path, 40_000, seed=3, name="f.bin")
    out = tmp_path / "f.torrent"
    res = run_cli(["create", root, "-o", str(out), "--web-seed", "http://127.0.0.1:1/f.bin",
                   "-w", "https://mirror.example/f.bin"])
    assert res.returncode == 0, res.stderr
    assert "the web seeds serve the data" in res.stderr  # the no-tracker warning says they are a source
    meta = metainfo.load(str(out))
    assert meta.url_list == ["http://127.0.0.1:1/f.bin", "https://mirror.example/f.bin"]
    info = run_cli(["info", str(out)])
    assert "web seed:     http://127.0.0.1:1/f.bin" in info.stdout
    assert "web seed:     https://mirror.example/f.bin" in info.stdout
    data = json.loads(run_cli(["info", "--json", str(out)]).stdout)
    assert data["url_list"] == meta.url_list and data["http_seeds"] == []
    for bad in ("ftp://x/f.bin", "not a url", "http://"):
        with pytest.raises(BadInputError, match="invalid web seed URL"):  # the CLI's exit code 2, one line
            create_torrent(root, web_seeds=[bad])


def test_a_runs_bytes_become_whole_blocks_however_the_reads_cut_them():
    meta = _meta({"name": "t", "piece length": 32768, "pieces": b"\0" * 120, "length": 5 * 32768 + 1000})
    delivered: list[tuple[int, int, bytes]] = []

    class Seeds:  # what the assembler calls: WebSeeds.deliver
        def __init__(self) -> None:
            self.meta = meta

        def deliver(self, seed, index, begin, data) -> None:
            delivered.append((index, begin, bytes(data)))

    class Seed:
        dropped = None

    stream = random.Random(1).randbytes(meta.total_length - 32768)  # pieces 1-5, the last one short
    expected = [(i, b) for i in range(1, 6) for b in range(0, meta.piece_size(i), 16384)]
    rng = random.Random(2)
    for _trial in range(50):
        delivered.clear()
        assembler = _Assembler(Seeds(), Seed(), 32768, meta.total_length)
        i = 0
        while i < len(stream):
            n = rng.choice([1, 100, 16383, 16384, 16385, 50000, 300000])
            assembler.feed(memoryview(stream[i : i + n]))
            i += n
        assembler.finish()
        assert b"".join(d for _i, _b, d in delivered) == stream
        assert [(i, b) for i, b, _d in delivered] == expected


# --- what a web seed is asked for: the strategy's runs -----------------------------------------------------


def _manager(strategy, num_pieces: int = 20, have=(), peer_has=()):
    info = {"name": "t", "piece length": 32768, "pieces": b"\0" * 20 * num_pieces, "length": 32768 * num_pieces}
    meta = _meta(info)
    have_bits = Bitfield(num_pieces)
    for i in have:
        have_bits.set(i)
    pm = PieceManager(meta, have_bits, strategy)
    if peer_has:
        bf = Bitfield(num_pieces)
        for i in peer_has:
            bf.set(i)
        pm.add_peer_pieces(bf)
    return pm


def test_rarest_first_run_starts_at_a_piece_no_peer_has_and_runs_never_overlap():
    pm = _manager(RarestFirst(20), have=range(4), peer_has=range(4, 12))  # 12-19: no peer has them
    run = pm.strategy.web_seed_run(pm, 5)
    assert 1 <= len(run) <= 5 and run[0] >= 12 and run == list(range(run[0], run[0] + len(run))), run
    blocks = pm.take_pieces("seed", run)
    assert len(blocks) == 2 * len(run) and pm.requested_blocks == len(blocks)  # every block, claimed
    second = pm.strategy.web_seed_run(pm, 20)
    assert second and not set(second) & set(run), (run, second)  # claimed pieces are started: never twice
    # A failed request gives its blocks back: nobody holds the piece now, the engine's left-over run takes it
    # (the strategy asks only for unstarted pieces).
    pm.release("seed", blocks)
    assert pm.requested_blocks == 0 and left_over_run(pm, 64)[: len(run)] == run


def test_sequential_run_is_in_order_and_random_gets_the_engines_default():
    pm = _manager(Sequential(window=4), have=(0, 2))
    assert pm.strategy.web_seed_run(pm, 3) == [1]  # piece 2 is verified: the run stops before it
    pm.take_pieces("seed", [1])
    assert pm.strategy.web_seed_run(pm, 3) == [3, 4, 5]
    pm = _manager(RandomOrder(20), have=(0,))
    assert not hasattr(pm.strategy, "web_seed_run") and default_run(pm, 4) == [1, 2, 3, 4]


# --- a real mirror: nginx ------------------------------------------------------------------------------


@needs_nginx
def test_only_a_web_seed_single_and_multi_file_byte_exact(tmp_path, torrentcore):
    www = tmp_path / "www"
    one = make_payload(www, (3 << 20) + 4321, seed=1, name="one.bin")
    tree = make_payload(www, TREE, seed=2, name="tree")
    with Nginx(www, tmp_path / "nginx") as nginx:
        t1, t2 = tmp_path / "one.torrent", tmp_path / "tree.torrent"
        _create(Path(one), t1, [nginx.url + "one.bin"])  # the URL is the file
        _create(Path(tree), t2, [nginx.url], 32 * 1024)  # the folder holding it
        run = torrentcore.run([t1, t2], tmp_path / "out")  # no peers, no trackers: only the web seeds
        _finish(run)
        assert_same_tree(one, tmp_path / "out" / "one.bin", run.describe())
        assert_same_tree(tree, tmp_path / "out" / "tree", run.describe())
        access = nginx.access()
    size = os.path.getsize(one) + sum(TREE.values())
    assert {status for _uri, status, _n in access} == {206}, access  # Range requests, all answered as such
    assert size <= sum(n for _uri, _status, n in access) <= size + (1 << 20), access  # little fetched twice
    assert any(uri.startswith("/tree/sub/%C3%BCber.bin") for uri, _s, _n in access), access
    assert not _warnings(run, "web seed"), run.stdout


@needs_nginx
def test_web_seed_and_libtorrent_seeder_both_serve(tmp_path, peers, torrentcore):
    www = tmp_path / "www"
    root = make_payload(www, 6 << 20, seed=4, name="both.bin")
    with Nginx(www, tmp_path / "nginx", limit_rate=1_000_000) as nginx:  # per connection: the seeder has a share
        torrent = tmp_path / "both.torrent"
        _create(Path(root), torrent, [nginx.url + "both.bin"], 64 * 1024)
        seeder = peers.libtorrent("seeder", ignore_limits_on_local_network=False, upload_rate_limit=1_000_000)
        seeder.add_torrent(torrent, www, seed=True)
        run = torrentcore.run(torrent, tmp_path / "out", peers=[seeder.endpoint])
        _finish(run)
        assert_same_tree(root, tmp_path / "out" / "both.bin", run.describe())
        from_nginx = nginx.bytes_sent()
    from_seeder = sum(t["uploaded"] for t in seeder.transfers())
    assert from_nginx >= 64 * 1024 and from_seeder >= 64 * 1024, (from_nginx, from_seeder)  # a piece each, at least
    assert from_nginx + from_seeder >= 6 << 20


@needs_nginx
def test_magnet_ws_web_seed_is_shown_and_asked_once_the_metadata_arrives(tmp_path, peers, torrentcore):
    """A magnet link's ``ws=`` (BEP 19): ``info`` shows it; the metadata comes from a libtorrent seeder (slow
    on purpose), then nginx, named only by the link, is asked for the file's data (its access log)."""
    import json
    import subprocess
    import sys
    from urllib.parse import quote

    www = tmp_path / "www"
    root = make_payload(www, 3 << 20, seed=7, name="ws.bin")
    torrent = tmp_path / "ws.torrent"
    _create(Path(root), torrent, [], 64 * 1024)  # no url-list of its own: the web seed is the link's only
    seeder = peers.libtorrent("seeder", ignore_limits_on_local_network=False, upload_rate_limit=200_000)
    seeder.add_torrent(torrent, www, seed=True)
    ih = metainfo.load(str(torrent)).info_hash_hex
    with Nginx(www, tmp_path / "nginx") as nginx:
        ws = nginx.url + "ws.bin"
        link = (f"magnet:?xt=urn:btih:{ih}&x.pe=127.0.0.1:{seeder.endpoint[1]}&ws={quote(ws, safe='')}"
                "&ws=ftp%3A%2F%2Fm%2Fws.bin")
        info = subprocess.run([sys.executable, "-m", "torrentcore", "info", link], capture_output=True, text=True,
                              timeout=60)
        assert info.returncode == 0 and f"web seed:   {ws}\n" in info.stdout and "ftp:" not in info.stdout, info
        shown = subprocess.run([sys.executable, "-m", "torrentcore", "info", "--json", link], capture_output=True,
                               text=True, timeout=60)
        assert json.loads(shown.stdout)["web_seeds"] == [ws], shown
        run = torrentcore.run(link, tmp_path / "out", peers=[seeder.endpoint])
        _finish(run)
        assert_same_tree(root, tmp_path / "out" / "ws.bin", run.describe())
        access = nginx.access()
    assert [status for uri, status, _n in access if uri == "/ws.bin"] and \
        {status for uri, status, _n in access if uri == "/ws.bin"} == {206}, access
    assert sum(n for uri, _s, n in access if uri == "/ws.bin") >= 64 * 1024, access  # a piece at least


# --- BEP 17 and misbehaving servers -------------------------------------------------------------------------


def test_bep17_httpseed_with_busy_answers_byte_exact(tmp_path, torrentcore):
    www = tmp_path / "www"
    root = make_payload(www, (1 << 20) + 999, seed=5, name="h.bin")
    with HostileServer(www, tmp_path / "hostile", bep17_file=root, piece_length=32 * 1024) as server:
        data, _meta_ = create_torrent(root, piece_length=32 * 1024)
        top = metainfo.bencode.decode(data)
        top[b"httpseeds"] = [server.url("/bep17busy").encode()]
        torrent = tmp_path / "h.torrent"
        torrent.write_bytes(encode(top))
        run = torrentcore.run(torrent, tmp_path / "out")
        _finish(run)
        hits = server.hits()
    assert_same_tree(root, tmp_path / "out" / "h.bin", run.describe())
    # The first answer is "503, retry in 1 s": the seed backed off (one line) and came back.
    assert hits["bep17busy"] >= 2, hits
    assert len(_warnings(run, "HTTP 503")) == 1, run.stdout


@needs_nginx
def test_hostile_web_seeds_cost_one_line_each_and_the_download_goes_on(tmp_path, torrentcore):
    www = tmp_path / "www"
    root = make_payload(www, 3 << 20, seed=6, name="h.bin")
    with Nginx(www, tmp_path / "nginx", limit_rate=1_000_000) as nginx, \
            HostileServer(www, tmp_path / "hostile") as bad:
        modes = ("wrong", "404", "503", "loop", "ftp", "endless")
        seeds = [bad.url(f"/{mode}/h.bin") for mode in modes] + [nginx.url + "h.bin"]
        torrent = tmp_path / "h.torrent"
        _create(Path(root), torrent, seeds, 32 * 1024)
        run = torrentcore.run(torrent, tmp_path / "out")
        _finish(run)
        hits = bad.hits()
    assert_same_tree(root, tmp_path / "out" / "h.bin", run.describe())
    for mode in modes:
        lines = _warnings(run, f"/{mode}/h.bin")
        assert len(lines) == 1, (mode, run.stdout)
        if mode in ("404", "503"):
            assert "retrying in" in lines[0], lines
        else:
            assert "dropped" in lines[0], lines
    assert re.search(r"redirect loop", _warnings(run, "/loop/")[0])
    assert "another scheme" in _warnings(run, "/ftp/")[0] and "ftp://" in _warnings(run, "/ftp/")[0]
    assert "more than the" in _warnings(run, "/endless/")[0]
    assert "failed their hash" in _warnings(run, "/wrong/")[0] or "corrupt" in _warnings(run, "/wrong/")[0]
    # Backing off: a few requests over the download (two connections, exponential waits; Retry-After 3600 is
    # cut to the 300 s bound), not one per second.
    assert hits.get("404", 0) <= 6 and hits.get("503", 0) <= 2, hits
    assert hits.get("loop", 0) <= 2 * 6 and hits.get("ftp", 0) <= 2, hits  # redirects bounded, then dropped
    assert "Traceback" not in run.stdout + run.stderr


@needs_nginx
def test_lying_web_seed_is_dropped_and_the_peer_is_not_blamed(tmp_path, peers, torrentcore):
    www = tmp_path / "www"
    root = make_payload(www, 3 << 20, seed=7, name="lie.bin")
    with HostileServer(www, tmp_path / "hostile") as bad:
        torrent = tmp_path / "lie.torrent"
        _create(Path(root), torrent, [bad.url("/wrong/lie.bin")], 32 * 1024)
        seeder = peers.libtorrent("seeder", ignore_limits_on_local_network=False, upload_rate_limit=2_000_000)
        seeder.add_torrent(torrent, www, seed=True)
        run = torrentcore.run(torrent, tmp_path / "out", peers=[seeder.endpoint])
        _finish(run)
    assert_same_tree(root, tmp_path / "out" / "lie.bin", run.describe())
    assert len(_warnings(run, "/wrong/lie.bin")) == 1, run.stdout
    assert "banned" not in run.stdout, run.stdout  # smart ban blamed the web seed, not the peer
    assert not [e for e in run.logs() if e.get("event") == "peer banned"], run.describe()
    failed = [line for line in run.stdout.splitlines() if "failed its hash check" in line]
    assert failed and all("/wrong/lie.bin" in line for line in failed), failed
    assert sum(t["uploaded"] for t in seeder.transfers()) >= 3 << 20
