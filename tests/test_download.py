"""The download path against real swarms: ``torrentcore run`` (a subprocess, as a user runs it) fetching
from libtorrent and aria2c seeders found through opentracker (HTTP and UDP) or given with ``--peer``.

Everything runs on 127.0.0.1. Every test compares the downloaded files byte for byte with the seeders'
payload; none asserts on timing. Scenarios: one tracker per protocol, several seeders of two kinds, a
tracker that is down or answers garbage, a seeder that goes away mid-download and comes back, and
interrupted downloads (SIGKILL, SIGINT) resumed on the same folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import gevent.pywsgi
import pytest
from opentracker_fixture import OpenTracker, opentracker_factory  # noqa: F401  (fixture "opentracker")
from realpeers import (
    LOCALHOST,
    Aria2Peer,
    LibtorrentPeer,
    RealPeers,
    assert_same_tree,
    free_port,
    make_payload,
    make_torrent,
    peers_fixture,  # noqa: F401  (fixture "peers")
    wait_until,
)
from torrentcore_cli import TorrentcoreProcess, resume_record, torrentcore_factory  # noqa: F401  (fixture "torrentcore")

from torrentcore import metainfo

needs_aria2 = pytest.mark.skipif(shutil.which("aria2c") is None, reason="aria2c is not installed")
needs_opentracker = pytest.mark.skipif(shutil.which("opentracker") is None, reason="opentracker is not installed")

#: Nested folders, odd sizes and zero-length files (one at the top, one deep down).
TREE = {
    "a.bin": (1 << 20) + 1,
    "docs/readme.txt": 5_000,
    "docs/empty.txt": 0,
    "sub/b.bin": 2 << 20,
    "sub/deeper/c.bin": 123_457,
    "sub/deeper/deepest/zero": 0,
    "z.bin": 70_001,
}

#: Most seconds any single torrentcore process may run in these tests.
RUN_TIMEOUT = 30


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _torrent(root: Path | str, trackers, out: Path, piece_length: int = 128 * 1024) -> tuple[bytes, bytes]:
    return make_torrent(root, trackers, piece_length=piece_length, out=out)


def _tracked_torrent(
    opentracker, root: Path | str, out: Path, urls: Callable[[OpenTracker], list], piece_length: int = 128 * 1024
) -> tuple[OpenTracker, bytes]:
    """Start opentracker whitelisting the payload's info-hash, then write the .torrent naming it.

    The info-hash covers the info dictionary only, so it is known before the tracker URL is.
    """
    info_hash = make_torrent(root, [], piece_length=piece_length)[1]
    tracker = opentracker([info_hash])
    data, again = make_torrent(root, urls(tracker), piece_length=piece_length, out=out)
    assert again == info_hash
    return tracker, data


def _lt_seeder(peers: RealPeers, torrent: Path, data_dir: Path, name: str = "seeder", **settings) -> LibtorrentPeer:
    seeder = peers.libtorrent(name, **settings)
    seeder.add_torrent(torrent, data_dir, seed=True)
    return seeder


def _rate_limited(limit: int) -> dict:
    """libtorrent settings capping its upload on loopback (local peers are exempt by default)."""
    return {"ignore_limits_on_local_network": False, "upload_rate_limit": limit}


def _uploaded_to_us(seeder: LibtorrentPeer) -> int:
    """Payload bytes ``seeder`` sent to torrentcore peers (peer id ``-TC``), over every connection so far."""
    return sum(t["uploaded"] for t in seeder.transfers() if t["pid"].startswith(b"-TC"))


def _connections_from_us(seeder: LibtorrentPeer) -> int:
    """How many distinct torrentcore connections ``seeder`` served (each has its own remote port)."""
    return sum(1 for t in seeder.transfers() if t["pid"].startswith(b"-TC") and t["uploaded"])


def _finish(run: TorrentcoreProcess, peers: RealPeers, timeout: float = RUN_TIMEOUT) -> None:
    """Wait for a successful exit: code 0, a "done" summary, no traceback."""
    rc = run.wait(timeout)
    context = f"{run.describe()}\n{peers.describe()}"
    assert rc == 0, context
    summary = run.summary()
    assert summary is not None and summary["verdict"] == "done", context
    assert summary["pieces_done"] == summary["num_pieces"], context
    assert "Traceback" not in run.stderr, context
    assert not [e for e in run.logs() if str(e.get("event", "")).startswith("internal error")], context


def _aria2_blocks_sent(aria2: Aria2Peer) -> int:
    """PIECE messages an aria2 seeder sent (its info-level log traces each one)."""
    return len(re.findall(r"To: \S+ piece index=", Path(aria2.debug_log_path).read_text(errors="replace")))


def _piece_bytes(num_pieces: int, piece_length: int, total: int, pieces) -> int:
    return sum(min(piece_length, total - i * piece_length) for i in pieces if 0 <= i < num_pieces)


def _resume_pieces(path: Path, num_pieces: int) -> set[int]:
    bits = bytes.fromhex(json.loads(path.read_text())["pieces"])
    return {i for i in range(num_pieces) if bits[i >> 3] & (0x80 >> (i & 7))}


# --------------------------------------------------------------------------------------------------
# Trackers and seeders
# --------------------------------------------------------------------------------------------------


@needs_opentracker
def test_http_tracker_one_libtorrent_seeder_single_file(tmp_path, peers, opentracker, torrentcore):
    size = (5 << 20) + 12_345  # a short last piece
    root = make_payload(tmp_path / "seed", size, seed=1, name="single.bin")
    torrent = tmp_path / "single.torrent"
    _tracked_torrent(opentracker, root, torrent, lambda t: [t.http_url], piece_length=128 * 1024)
    seeder = _lt_seeder(peers, torrent, tmp_path / "seed")
    assert seeder.wait_announced(timeout=10), peers.describe()

    run = torrentcore.run(torrent, tmp_path / "out")  # no --peer: the seeder comes from the tracker
    _finish(run, peers)
    assert_same_tree(root, tmp_path / "out" / "single.bin", run.describe())
    assert _uploaded_to_us(seeder) >= size, seeder.transfers()


@needs_opentracker
def test_udp_tracker_multi_file_tree_with_empty_files(tmp_path, peers, opentracker, torrentcore):
    root = make_payload(tmp_path / "seed", TREE, seed=2, name="tree")
    torrent = tmp_path / "tree.torrent"
    _tracked_torrent(opentracker, root, torrent, lambda t: [t.udp_url], piece_length=64 * 1024)
    seeder = _lt_seeder(peers, torrent, tmp_path / "seed")
    assert seeder.wait_announced(timeout=10), peers.describe()

    run = torrentcore.run(torrent, tmp_path / "out")
    _finish(run, peers)
    assert_same_tree(root, tmp_path / "out" / "tree", run.describe())
    for rel, length in TREE.items():  # including both zero-length files
        path = tmp_path / "out" / "tree" / rel
        assert path.is_file() and path.stat().st_size == length, rel
    assert _uploaded_to_us(seeder) >= sum(TREE.values()), seeder.transfers()


@needs_aria2
@needs_opentracker
def test_several_seeders_libtorrent_and_aria2(tmp_path, peers, opentracker, torrentcore):
    size = 12 << 20
    root = make_payload(tmp_path / "seed", size, seed=3, name="big.bin")
    torrent = tmp_path / "big.torrent"
    _tracked_torrent(opentracker, root, torrent, lambda t: [t.http_url], piece_length=64 * 1024)
    # Capped seeders: none of them can serve the whole file quickly alone, so the engine must use several. At
    # 3 MB/s each the download took ~1.5 s, and aria2c (connected 0.6-1.4 s after the libtorrent seeders in the
    # failing runs, at load 3-5) had sometimes served nothing by then.
    cap = 1_500_000
    seeders = [_lt_seeder(peers, torrent, tmp_path / "seed", f"seeder-{n}", **_rate_limited(cap)) for n in (1, 2)]
    aria2 = peers.aria2(torrent, tmp_path / "seed", seed=True, extra_args=[f"--max-upload-limit={cap}"])
    for seeder in seeders:
        assert seeder.wait_announced(timeout=10), peers.describe()
    assert aria2.wait_listening(timeout=10), peers.describe()
    assert aria2.wait_announced(timeout=10), peers.describe()

    run = torrentcore.run(torrent, tmp_path / "out")
    _finish(run, peers)
    assert_same_tree(root, tmp_path / "out" / "big.bin", run.describe())
    uploads = [_uploaded_to_us(seeder) for seeder in seeders] + [_aria2_blocks_sent(aria2) * 16384]
    print(f"payload bytes sent by libtorrent, libtorrent, aria2: {uploads}")
    assert all(uploads), f"every seeder should have served us: {uploads}\n{peers.describe()}"


@needs_aria2
@needs_opentracker
def test_aria2_only_seeder(tmp_path, peers, opentracker, torrentcore):
    size = (3 << 20) + 777
    root = make_payload(tmp_path / "seed", size, seed=4, name="aria.bin")
    torrent = tmp_path / "aria.torrent"
    _tracked_torrent(opentracker, root, torrent, lambda t: [t.http_url], piece_length=256 * 1024)
    aria2 = peers.aria2(torrent, tmp_path / "seed", seed=True)
    assert aria2.wait_listening(timeout=10), peers.describe()
    assert aria2.wait_announced(timeout=10), peers.describe()

    run = torrentcore.run(torrent, tmp_path / "out")
    _finish(run, peers)
    assert_same_tree(root, tmp_path / "out" / "aria.bin", run.describe())
    assert aria2.returncode is None, "the aria2 seeder died"


@needs_opentracker
def test_dead_tracker_in_first_tier_then_working_one(tmp_path, peers, opentracker, torrentcore):
    size = 3 << 20
    root = make_payload(tmp_path / "seed", size, seed=5, name="tiers.bin")
    torrent = tmp_path / "tiers.torrent"
    dead = f"http://{LOCALHOST}:{free_port()}/announce"  # nothing listens there
    _tracked_torrent(opentracker, root, torrent, lambda t: [[dead], [t.http_url]])
    seeder = _lt_seeder(peers, torrent, tmp_path / "seed")
    assert seeder.wait_announced(timeout=10), peers.describe()

    run = torrentcore.run(torrent, tmp_path / "out")
    _finish(run, peers)
    assert_same_tree(root, tmp_path / "out" / "tiers.bin", run.describe())
    assert _uploaded_to_us(seeder) >= size, seeder.transfers()
    # The dead tracker was really tried first (and failed), it was not skipped.
    assert any(e.get("url") == dead for e in run.events("tracker failed")), run.describe()


class _GarbageTracker:
    """An HTTP "tracker" on 127.0.0.1 that answers every announce with something that is not one.

    ``hits`` counts torrentcore's announces per path (its peer id starts with ``-TC``).
    """

    BODIES = {
        "/html/announce": (b"<!DOCTYPE html><html><body><h1>It works!</h1></body></html>", "text/html"),
        "/truncated/announce": (b"d8:intervali1800e5:peers12:\x7f\x00", "text/plain"),
    }

    def __init__(self) -> None:
        self.hits: dict[str, int] = {path: 0 for path in self.BODIES}
        self.server = gevent.pywsgi.WSGIServer((LOCALHOST, 0), self._app, log=None, error_log=None)
        self.server.start()

    def url(self, path: str) -> str:
        return f"http://{LOCALHOST}:{self.server.server_port}{path}"

    def _app(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        body, kind = self.BODIES.get(path, (b"not found", "text/plain"))
        if path in self.hits and "peer_id=-TC" in environ.get("QUERY_STRING", ""):  # torrentcore's, not libtorrent's
            self.hits[path] += 1
        start_response("200 OK", [("Content-Type", kind), ("Content-Length", str(len(body)))])
        return [body]

    def stop(self) -> None:
        self.server.stop(timeout=1)


def test_garbage_tracker_is_a_warning_and_the_peer_still_serves(tmp_path, peers, torrentcore):
    size = 5 << 20
    root = make_payload(tmp_path / "seed", size, seed=6, name="garbage.bin")
    garbage = _GarbageTracker()
    try:
        torrent = tmp_path / "garbage.torrent"
        _torrent(root, [[garbage.url("/html/announce")], [garbage.url("/truncated/announce")]], torrent)
        seeder = _lt_seeder(peers, torrent, tmp_path / "seed")
        # Rate-limited (about 4 s) so that the announce and its warning surely come before the end.
        run = torrentcore.run(torrent, tmp_path / "out", "--max-download-rate", "1M", peers=[seeder.endpoint])
        _finish(run, peers)
    finally:
        garbage.stop()
    assert_same_tree(root, tmp_path / "out" / "garbage.bin", run.describe())
    assert all(garbage.hits.values()), garbage.hits  # both tiers were asked
    # ... and then left alone during their back-off (10 s and more), not asked again every second; one more
    # announce is allowed when the download completes.
    assert sum(garbage.hits.values()) <= 3, garbage.hits
    warnings = [line for line in run.stdout.splitlines() if "warning" in line and "tracker" in line]
    assert warnings, run.describe()
    assert "Traceback" not in run.stdout + run.stderr


# --------------------------------------------------------------------------------------------------
# A seeder that goes away and comes back
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["pause", "restart"])
def test_seeder_disappears_and_comes_back(tmp_path, peers, torrentcore, how):
    size = 8 << 20
    root = make_payload(tmp_path / "seed", size, seed=7, name="flaky.bin")
    torrent = tmp_path / "flaky.torrent"
    _torrent(root, [], torrent, piece_length=128 * 1024)
    seeder = _lt_seeder(peers, torrent, tmp_path / "seed", "seeder", **_rate_limited(2_000_000))
    run = torrentcore.run(torrent, tmp_path / "out", peers=[seeder.endpoint])

    assert wait_until(lambda: _uploaded_to_us(seeder) >= size // 4 or run.returncode is not None, 15), (
        run.describe() + peers.describe())
    assert run.returncode is None, run.describe()
    if how == "pause":
        seeder.pause()  # its connections close; its port still accepts but it serves nothing
    else:
        seeder.close()  # gone: connections refused until a new session opens the same port
    time.sleep(0.5)  # blocks already on their way when it went are still counted
    sent_before = _uploaded_to_us(seeder) if how == "pause" else None
    time.sleep(2.5)
    assert run.returncode is None, f"torrentcore gave up or finished without its only seeder\n{run.describe()}"
    if how == "pause":
        assert _uploaded_to_us(seeder) == sent_before
        seeder.session.apply_settings({"upload_rate_limit": 0})
        seeder.resume()
    else:
        seeder = _lt_seeder(peers, torrent, tmp_path / "seed", "seeder-again", port=seeder.port)
    _finish(run, peers)
    assert_same_tree(root, tmp_path / "out" / "flaky.bin", run.describe())
    if how == "pause":
        assert _connections_from_us(seeder) >= 2, seeder.transfers()  # it reconnected, after the pause
    else:
        assert _uploaded_to_us(seeder) > 0, seeder.transfers()  # the new seeder served the rest


# --------------------------------------------------------------------------------------------------
# Interrupted downloads, resumed on the same folder
# --------------------------------------------------------------------------------------------------


def _run_on_completed_folder(torrentcore, torrent: Path, out: Path, seeder: LibtorrentPeer, peers) -> None:
    """A third run on a finished folder: exit 0 at once, nothing downloaded, the seeder not asked."""
    sent = _uploaded_to_us(seeder)
    run = torrentcore.run(torrent, out, peers=[seeder.endpoint])
    _finish(run, peers, timeout=15)
    summary = run.summary()
    assert summary["downloaded"] == 0, run.describe()
    assert run.events("resume record trusted"), run.describe()
    assert not run.events("peer connected"), run.describe()  # finished without talking to any peer
    time.sleep(0.2)
    assert _uploaded_to_us(seeder) == sent


def test_sigkill_then_restart_downloads_only_what_is_missing(tmp_path, peers, torrentcore):
    size = 8 << 20
    piece_length = 64 * 1024
    root = make_payload(tmp_path / "seed", size, seed=8, name="killed.bin")
    torrent = tmp_path / "killed.torrent"
    _torrent(root, [], torrent, piece_length=piece_length)
    seeder = _lt_seeder(peers, torrent, tmp_path / "seed", **_rate_limited(2_000_000))
    out = tmp_path / "out"

    first = torrentcore.run(torrent, out, peers=[seeder.endpoint])
    assert wait_until(lambda: _uploaded_to_us(seeder) >= size * 2 // 5 or first.returncode is not None, 15), (
        first.describe() + peers.describe())
    assert first.stop(signal.SIGKILL, 10) == -signal.SIGKILL, first.describe()
    assert (out / "killed.bin").is_file(), "nothing was written before the kill"

    seeder.session.apply_settings({"upload_rate_limit": 0})
    time.sleep(0.3)  # let the seeder's last alerts of the killed connection arrive
    sent_before = _uploaded_to_us(seeder)
    second = torrentcore.run(torrent, out, peers=[seeder.endpoint])
    _finish(second, peers)
    assert_same_tree(root, out / "killed.bin", second.describe())
    checked = second.events("checking existing data")
    assert checked and checked[0]["candidates"] > 0, second.describe()  # no resume record: re-hashed
    summary = second.summary()
    assert 0 < summary["downloaded_min"] < size, second.describe()
    time.sleep(0.3)
    assert 0 < _uploaded_to_us(seeder) - sent_before < size, seeder.transfers()

    _run_on_completed_folder(torrentcore, torrent, out, seeder, peers)


def test_sigint_then_restart_trusts_the_resume_record(tmp_path, peers, torrentcore):
    size = 8 << 20
    piece_length = 64 * 1024
    num_pieces = size // piece_length
    root = make_payload(tmp_path / "seed", size, seed=9, name="paused.bin")
    torrent = tmp_path / "paused.torrent"
    _torrent(root, [], torrent, piece_length=piece_length)
    seeder = _lt_seeder(peers, torrent, tmp_path / "seed", **_rate_limited(2_000_000))
    out = tmp_path / "out"
    record = resume_record(torrentcore.state_dir, out, metainfo.load(str(torrent)))

    first = torrentcore.run(torrent, out, peers=[seeder.endpoint])
    assert wait_until(lambda: _uploaded_to_us(seeder) >= size * 2 // 5 or first.returncode is not None, 15), (
        first.describe() + peers.describe())
    assert first.stop(signal.SIGINT, 15) == 130, first.describe()
    assert "Traceback" not in first.stderr, first.describe()
    assert first.summary()["verdict"] == "interrupted", first.describe()
    assert record.is_file(), f"no resume record after a clean stop: {os.listdir(out)}"
    assert os.listdir(out) == ["paused.bin"], "nothing of ours beside the user's data"
    verified = _resume_pieces(record, num_pieces)
    assert 0 < len(verified) < num_pieces, verified
    assert len(verified) == first.summary()["pieces_done"], first.describe()

    seeder.session.apply_settings({"upload_rate_limit": 0})
    time.sleep(0.3)
    sent_before = _uploaded_to_us(seeder)
    second = torrentcore.run(torrent, out, peers=[seeder.endpoint])
    _finish(second, peers)
    assert_same_tree(root, out / "paused.bin", second.describe())
    trusted = second.events("resume record trusted")
    assert trusted and trusted[0]["pieces"] == len(verified), second.describe()
    # Exactly the missing pieces were fetched again, never a verified one (one seeder: no endgame duplicates).
    missing = size - _piece_bytes(num_pieces, piece_length, size, verified)
    time.sleep(0.3)
    assert _uploaded_to_us(seeder) - sent_before <= missing, (seeder.transfers(), missing)
    summary = second.summary()
    assert summary["downloaded_min"] <= missing <= summary["downloaded_max"], (missing, second.describe())

    _run_on_completed_folder(torrentcore, torrent, out, seeder, peers)


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------

MALFORMED = {
    "empty": b"",
    "text": b"this is not a torrent\n",
    "html": b"<html><body>404</body></html>",
    "truncated": b"d8:announce35:http://127.0.0.1:1/announce4:infod6:length",
    "no-info": b"d8:announce35:http://127.0.0.1:1/announcee",
    "bad-pieces": b"d4:infod6:lengthi100e4:name1:x12:piece lengthi16384e6:pieces3:abcee",
    "zero-piece-length": b"d4:infod6:lengthi100e4:name1:x12:piece lengthi0e6:pieces20:" + b"\0" * 20 + b"ee",
    "list": b"l4:spame",
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_torrent_is_bad_input(tmp_path, torrentcore, kind):
    torrent = tmp_path / f"{kind}.torrent"
    torrent.write_bytes(MALFORMED[kind])
    out = tmp_path / "out"
    run = torrentcore.run(torrent, out)
    rc = run.wait(20)
    assert rc == 2, run.describe()
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.describe()
    assert "Traceback" not in run.stderr and lines[0].startswith("torrentcore: error:"), run.describe()
    assert not out.exists(), f"created {list(out.rglob('*'))}"
