"""``torrentcore create`` / :func:`torrentcore.create.create_torrent` checked against real clients.

What we build must be read the same way by libtorrent (same v1 info-hash, file list, piece length, and
its own hash check of the data passes) and by aria2; a torrent made by the command is downloaded by
libtorrent from a torrentcore seeder.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import gevent.monkey
import libtorrent as lt
import pytest
from opentracker_fixture import opentracker_factory  # noqa: F401  (fixture "opentracker")
from realpeers import LibtorrentPeer, RealPeers, assert_same_tree, make_payload
from torrentcore_cli import parse_summary, run_cli, torrentcore_factory, wait_tracker_count  # noqa: F401  (fixture "torrentcore")

from torrentcore import bencode, hash_pool
from torrentcore import create as create_mod
from torrentcore.create import auto_piece_length, create_torrent
from torrentcore.errors import BadInputError, TorrentcoreError

KiB = 1024
MiB = 1024 * 1024

needs_aria2 = pytest.mark.skipif(shutil.which("aria2c") is None, reason="aria2c is not installed")

#: Nested folders, zero-length files first, in the middle, last and in a subfolder, a hidden file, and a
#: total that is not a multiple of the piece length.
TREE = {
    "0-empty-first": 0,
    ".hidden": 5,
    "a.bin": 100_000,
    "sub/b.bin": 300_000,
    "sub/deeper/c.bin": 123_457,
    "sub/deeper/zero": 0,
    "sub/mid-empty": 0,
    "z.bin": 70_001,
    "zz-empty-last": 0,
}


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def expected_files(spec, name: str = "payload") -> list[tuple[str, int]]:
    """The (path, size) list a torrent of ``make_payload(spec)`` must have, in our sorted order."""
    if isinstance(spec, int):
        return [(name, spec)]
    items = sorted(spec.items(), key=lambda kv: tuple(p.encode() for p in kv[0].split("/")))
    return [(f"{name}/{rel}", size) for rel, size in items]


def libtorrent_view(data: bytes) -> tuple[bytes, int, int, list[tuple[str, int]]]:
    """How libtorrent reads a .torrent: (v1 info-hash, piece length, piece count, [(path, size)])."""
    ti = lt.torrent_info(lt.bdecode(data))
    fs = ti.layout()
    files = [(fs.file_path(i).replace(os.sep, "/"), fs.file_size(i)) for i in range(fs.num_files())]
    return ti.info_hashes().v1.to_bytes(), ti.piece_length(), ti.num_pieces(), files


def libtorrent_checks_data(data: bytes, save_path, workdir) -> None:
    """libtorrent hashes the data in place (no seed mode) and must find every piece good."""
    with RealPeers(workdir) as pool:
        peer = pool.libtorrent("checker")
        peer.add_torrent(data, save_path)
        assert peer.wait_finished(timeout=15), peer.describe()
        status = peer.status()
        assert status["is_seeding"] and status["progress"] == 1.0, peer.describe()
        assert status["total_payload_download"] == 0


def aria2_show_files(torrent_path) -> dict:
    """Parse ``aria2c --show-files=true FILE``: info-hash, piece length, count, [(path, size)], trackers."""
    proc = subprocess.run(
        ["aria2c", "--no-conf=true", "--show-files=true", os.fspath(torrent_path)],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    files = [
        (path, int(size.replace(",", "")))
        for path, size in re.findall(r"^\s*\d+\|\./(.+)\n\s*\|.*\(([\d,]+)\)\s*$", out, re.M)
    ]
    announce = re.search(r"^Announce:\n((?: .+\n)*)", out, re.M)
    return {
        "info_hash": bytes.fromhex(re.search(r"^Info Hash: ([0-9a-f]{40})$", out, re.M).group(1)),
        "pieces": int(re.search(r"^The Number of Pieces: (\d+)$", out, re.M).group(1)),
        "total": int(re.search(r"^Total Length: .*\(([\d,]+)\)$", out, re.M).group(1).replace(",", "")),
        "mode": re.search(r"^Mode: (\w+)$", out, re.M).group(1),
        "files": files,
        "trackers": announce.group(1).split() if announce else [],
        "raw": out,
    }


# --------------------------------------------------------------------------------------------------
# libtorrent reads what we make exactly as we do
# --------------------------------------------------------------------------------------------------

CASES = {
    # name: (payload spec, piece length given, piece length expected)
    "single-partial-last-piece": ((5 * 64 * KiB) + 123, 64 * KiB, 64 * KiB),
    "single-exactly-one-piece": (16 * KiB, 16 * KiB, 16 * KiB),
    "single-smaller-than-a-piece": (1, None, 16 * KiB),
    "single-auto-piece-length": ((3 * MiB) + 7, None, 16 * KiB),
    "nested-with-empty-files": (TREE, 32 * KiB, 32 * KiB),
    "nested-auto-piece-length": (TREE, None, 16 * KiB),
    "one-piece-file-among-empty": ({"0": 0, "one-piece": 16 * KiB, "sub/z": 0}, 16 * KiB, 16 * KiB),
    # Every file boundary on a piece boundary and the total a multiple of the piece length.
    "aligned": ({"a": 32 * KiB, "b/c": 64 * KiB, "b/d": 0, "e": 16 * KiB}, 16 * KiB, 16 * KiB),
}


@pytest.mark.parametrize("case", list(CASES))
def test_libtorrent_reads_our_torrent_the_same(tmp_path, case):
    spec, given, expected_piece_length = CASES[case]
    root = make_payload(tmp_path / "data", spec, seed=7)
    data, meta = create_torrent(root, ["http://127.0.0.1:1/announce"], piece_length=given)

    info_hash, piece_length, num_pieces, files = libtorrent_view(data)
    assert info_hash == meta.info_hash
    assert piece_length == meta.piece_length == expected_piece_length
    assert num_pieces == meta.num_pieces == -(-meta.total_length // piece_length)
    assert files == expected_files(spec)
    assert [(f.relpath, f.length) for f in meta.files] == files
    assert meta.multi_file == (not isinstance(spec, int))
    # The strongest check of the piece hashes: libtorrent hashes the files itself and agrees.
    libtorrent_checks_data(data, tmp_path / "data", tmp_path / "lt")


def test_file_order_is_bytewise_by_path_components(tmp_path):
    spec = {"b": 1, "B": 1, "a/x": 1, "a.txt": 1, "a-b": 1, "_": 1, "é": 1, "Z/1": 1, "a/A/y": 1, ".h": 1}
    root = make_payload(tmp_path, spec)
    _, meta = create_torrent(root, [])
    got = [f.path[1:] for f in meta.files]
    assert got == [
        (".h",), ("B",), ("Z", "1"), ("_",), ("a", "A", "y"), ("a", "x"), ("a-b",), ("a.txt",), ("b",), ("é",),
    ]
    # The directory listing order of the filesystem plays no part.
    assert [f.relpath for f in meta.files] == [p for p, _ in expected_files(spec)]


def test_same_input_same_bytes(tmp_path):
    root = make_payload(tmp_path, TREE, seed=3)
    a, _ = create_torrent(root, ["http://t/announce"], comment="c", created_by="me", creation_date=1_700_000_000)
    b, _ = create_torrent(root, ["http://t/announce"], comment="c", created_by="me", creation_date=1_700_000_000)
    assert a == b


# --------------------------------------------------------------------------------------------------
# the fields of the metainfo
# --------------------------------------------------------------------------------------------------


def test_fields_trackers_private_comment(tmp_path):
    root = make_payload(tmp_path, 40_000)
    urls = ["http://a.example/announce", "udp://b.example:6969/announce", "https://c.example/announce"]
    data, meta = create_torrent(
        root, urls, private=True, comment="hello", created_by="torrentcore test", creation_date=1_234_567
    )
    top = bencode.decode(data, strict_order=True)  # keys sorted at every level
    assert top[b"announce"] == urls[0].encode()
    assert top[b"announce-list"] == [[u.encode()] for u in urls]  # one tier each, in order
    assert top[b"comment"] == b"hello"
    assert top[b"created by"] == b"torrentcore test"
    assert top[b"creation date"] == 1_234_567
    info = top[b"info"]
    assert set(info) == {b"name", b"piece length", b"pieces", b"length", b"private"}
    assert info[b"private"] == 1 and info[b"length"] == 40_000 and info[b"name"] == b"payload"
    assert meta.trackers == [[u] for u in urls] and meta.private and meta.comment == "hello"

    ti = lt.torrent_info(lt.bdecode(data))
    assert ti.priv()
    atp = lt.load_torrent_buffer(data)
    assert (list(atp.trackers), list(atp.tracker_tiers)) == (urls, [0, 1, 2])
    assert ti.comment() == "hello" and ti.creator() == "torrentcore test"


def test_fields_minimal(tmp_path):
    root = make_payload(tmp_path, {"x": 10, "y/z": 20})
    data, meta = create_torrent(root, ["http://only.example/announce"])
    top = bencode.decode(data, strict_order=True)
    # One tracker: 'announce' only, as libtorrent writes it. Nothing that was not asked for.
    assert set(top) == {b"announce", b"info"}
    assert set(top[b"info"]) == {b"name", b"piece length", b"pieces", b"files"}
    assert top[b"info"][b"files"] == [{b"length": 10, b"path": [b"x"]}, {b"length": 20, b"path": [b"y", b"z"]}]
    assert meta.creation_date is None and meta.created_by is None and not meta.private

    data, meta = create_torrent(root, [])  # trackerless
    assert set(bencode.decode(data)) == {b"info"} and meta.trackers == []
    assert create_torrent(root, None)[0] == data
    assert create_torrent(root, "http://only.example/announce")[1].trackers == [["http://only.example/announce"]]


def test_auto_piece_length():
    assert auto_piece_length(1) == 16 * KiB
    assert auto_piece_length(2000 * 16 * KiB) == 16 * KiB
    assert auto_piece_length(2000 * 16 * KiB + 1) == 32 * KiB
    assert auto_piece_length(10**9) == 512 * KiB  # libtorrent picks the same for 1 GB
    assert auto_piece_length(10**13) == 16 * MiB  # the cap
    for total in (50 * MiB, 700 * MiB + 1, 4 * 1024 * MiB, 20 * 1024 * MiB):
        length = auto_piece_length(total)
        assert length & (length - 1) == 0
        assert 1000 < -(-total // length) <= 2000, (total, length)


@pytest.mark.parametrize("bad", [0, 1, 1000, 8 * KiB, 20_000, 48 * KiB, -16 * KiB, 1024 * MiB])
def test_bad_piece_length(tmp_path, bad):
    root = make_payload(tmp_path, 100)
    with pytest.raises(BadInputError, match="piece length"):
        create_torrent(root, [], piece_length=bad)


def test_large_explicit_piece_length_is_fine(tmp_path):
    root = make_payload(tmp_path, 100)
    data, meta = create_torrent(root, [], piece_length=32 * MiB)
    assert meta.piece_length == 32 * MiB and meta.num_pieces == 1
    assert libtorrent_view(data)[1] == 32 * MiB


def test_nothing_to_share(tmp_path):
    (tmp_path / "empty-folder" / "empty-sub").mkdir(parents=True)
    with pytest.raises(BadInputError, match="nothing to share: .* contains no files"):
        create_torrent(tmp_path / "empty-folder", [])
    root = make_payload(tmp_path, {"a": 0, "b/c": 0}, name="zeros")
    with pytest.raises(BadInputError, match="nothing to share: .*empty"):
        create_torrent(root, [])
    empty_file = make_payload(tmp_path, 0, name="empty.bin")
    with pytest.raises(BadInputError, match="nothing to share: .*empty"):
        create_torrent(empty_file, [])


def test_missing_and_special_paths(tmp_path):
    with pytest.raises(BadInputError, match="cannot read .*missing.*No such file"):
        create_torrent(tmp_path / "missing", [])
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(BadInputError, match="neither a regular file nor a folder"):
        create_torrent(tmp_path / "fifo", [])
    root = make_payload(tmp_path, {"a": 10}, name="with-fifo")
    os.mkfifo(os.path.join(root, "pipe"))
    with pytest.raises(BadInputError, match="pipe.*not a regular file"):  # never skipped silently, never read
        create_torrent(root, [])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file(tmp_path):
    root = make_payload(tmp_path, {"a": 10, "b": 10})
    os.chmod(os.path.join(root, "b"), 0)
    with pytest.raises(BadInputError, match="cannot read .*b: Permission denied"):
        create_torrent(root, [])


@pytest.mark.parametrize("kind", ["v1", "v2", "hybrid"])
def test_unreadable_file_simulated(tmp_path, monkeypatch, kind):
    """The same as above where permissions cannot stop us (root): opening the file fails (in a worker)."""
    root = make_payload(tmp_path, {"a": 10, "b": 10})
    real_open = hash_pool.os.open

    def failing_open(path, *args, **kwargs):
        if os.path.basename(path) == "b":
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(hash_pool.os, "open", failing_open)
    with pytest.raises(BadInputError, match="cannot read .*b: Permission denied"):
        create_torrent(root, [], kind=kind)


def test_names_we_would_rename_are_refused(tmp_path):
    root = make_payload(tmp_path, {"ok": 10}, name="odd")
    bad = os.path.join(os.fsencode(root), b"bad\xffname")
    with open(bad, "wb") as fh:
        fh.write(b"x")
    with pytest.raises(BadInputError, match="not valid UTF-8"):
        create_torrent(root, [])
    os.unlink(bad)
    with open(os.path.join(root, "back\\slash"), "wb") as fh:
        fh.write(b"x")
    with pytest.raises(BadInputError, match="would be changed"):
        create_torrent(root, [])


def test_bad_tracker_url(tmp_path):
    root = make_payload(tmp_path, 10)
    for url in ("tracker.example", "http://", "http://a b/announce", ""):
        with pytest.raises(BadInputError, match="tracker URL"):
            create_torrent(root, [url])


def test_symlinks_are_skipped_not_followed(tmp_path):
    root = make_payload(tmp_path / "d", {"real.bin": 50_000, "sub/x": 3})
    outside = make_payload(tmp_path, 1000, name="outside.bin")
    os.symlink("real.bin", os.path.join(root, "link-to-file"))
    os.symlink(outside, os.path.join(root, "link-outside"))
    os.symlink("sub", os.path.join(root, "link-to-dir"))
    os.symlink("/nonexistent/target", os.path.join(root, "dangling"))
    data, meta = create_torrent(root, [])
    assert [f.relpath for f in meta.files] == ["payload/real.bin", "payload/sub/x"]
    assert meta.total_length == 50_003
    libtorrent_checks_data(data, tmp_path / "d", tmp_path / "lt")
    # The path named by the user may itself be a symlink: it is what they asked for.
    os.symlink(root, tmp_path / "alias")
    _, meta2 = create_torrent(tmp_path / "alias", [])
    assert meta2.name == "alias" and [f.length for f in meta2.files] == [50_000, 3]


def test_progress_after_each_piece_and_hashing_off_the_hub_thread(tmp_path, monkeypatch):
    root = make_payload(tmp_path, TREE)
    get_ident = gevent.monkey.get_original("_thread", "get_ident")
    hub_thread = get_ident()
    threads = []
    original = create_mod._sha1

    def recording_sha1(data):
        threads.append(get_ident())
        return original(data)

    monkeypatch.setattr(create_mod, "_sha1", recording_sha1)
    calls = []
    _, meta = create_torrent(root, [], piece_length=16 * KiB, progress=lambda done, total: calls.append((done, total)))
    n = meta.num_pieces
    assert n > 10 and calls == [(i, n) for i in range(1, n + 1)]
    assert len(threads) == n and hub_thread not in threads  # SHA-1 ran in the thread pool


def test_file_changing_while_hashing_is_an_error(tmp_path, monkeypatch):
    root = make_payload(tmp_path, {"a": 1000, "b": 2000})
    real = create_mod.list_files

    def lying_list_files(path, *args, **kwargs):
        listing = real(path, *args, **kwargs)
        files = listing.files
        files[0] = create_mod.SourceFile(files[0].path, files[0].disk_path, 1500)  # "a" shrank to 1000
        return listing

    monkeypatch.setattr(create_mod, "list_files", lying_list_files)
    with pytest.raises(TorrentcoreError, match="changed while hashing"):
        create_torrent(root, [])


# --------------------------------------------------------------------------------------------------
# aria2
# --------------------------------------------------------------------------------------------------


@needs_aria2
@pytest.mark.parametrize("spec", [TREE, 300_001], ids=["nested", "single"])
def test_aria2_reads_our_torrent(tmp_path, spec):
    root = make_payload(tmp_path / "data", spec, seed=5)
    urls = ["http://127.0.0.1:1/announce", "http://127.0.0.1:2/announce"]
    data, meta = create_torrent(root, urls, piece_length=32 * KiB)
    path = tmp_path / "t.torrent"
    path.write_bytes(data)
    shown = aria2_show_files(path)
    assert shown["info_hash"] == meta.info_hash, shown["raw"]
    assert shown["pieces"] == meta.num_pieces and shown["total"] == meta.total_length
    assert shown["mode"] == ("multi" if isinstance(spec, dict) else "single")
    if isinstance(spec, dict):
        assert shown["files"] == expected_files(spec), shown["raw"]
    else:
        assert shown["files"] == [("payload", spec)], shown["raw"]
    assert shown["trackers"] == urls, shown["raw"]


# --------------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------------


def test_cli_create_and_determinism(tmp_path):
    root = make_payload(tmp_path / "data", TREE, seed=9)
    url = "http://127.0.0.1:1/announce"
    outs = []
    for n in range(2):
        out = tmp_path / f"out{n}.torrent"
        threads = ["--threads", "1"] if n else []
        proc = run_cli(["create", root, "-t", url, "-o", str(out), "--no-date", "--piece-length", "32k", *threads])
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]  # --no-date: byte-for-byte reproducible, whatever the number of threads
    # The command line makes hybrids by default (as libtorrent 2.x and qBittorrent do).
    data, meta = create_torrent(root, [url], piece_length=32 * KiB, created_by="torrentcore 0.1.0", kind="hybrid")
    assert outs[0] == data
    assert f"info-hash {meta.info_hash_hex}, v2 info-hash {meta.info_hash_v2_hex}" in proc.stdout
    assert libtorrent_view(outs[0])[0] == meta.info_hash

    # With the date (the default), and the default output name NAME.torrent in the current folder.
    before = int(time.time())
    proc = run_cli(["create", root, "-t", url], cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    top = bencode.decode((tmp_path / "payload.torrent").read_bytes())
    assert before - 1 <= top[b"creation date"] <= int(time.time()) + 1
    assert top[b"created by"].startswith(b"torrentcore ")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--piece-length", "20k"], "invalid piece length"),
        (["--piece-length", "8k"], "invalid piece length"),
        (["--piece-length", "lots"], "invalid rate"),  # argparse's own error
        (["MISSING"], "cannot read"),
        (["EMPTY"], "nothing to share"),
        (["-t", "not-a-url"], "invalid tracker URL"),
        (["--threads", "0"], "invalid number of threads"),
    ],
)
def test_cli_bad_input_exits_2_without_traceback(tmp_path, args, message):
    root = make_payload(tmp_path, 1000)
    (tmp_path / "empty").mkdir()
    path = {"MISSING": str(tmp_path / "missing"), "EMPTY": str(tmp_path / "empty")}
    argv = ["create"]
    argv += [path.get(a, a) for a in args] if args[0] in path else [root, *args]
    proc = run_cli([*argv, "-o", str(tmp_path / "out.torrent")])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert message in lines[-1], proc.stderr
    if message != "invalid rate":
        assert len(lines) == 1, proc.stderr
    assert not (tmp_path / "out.torrent").exists()


def test_cli_unwritable_output_exits_1(tmp_path):
    root = make_payload(tmp_path, 1000)
    proc = run_cli(["create", root, "-o", str(tmp_path / "no" / "such" / "dir" / "x.torrent")])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "cannot write" in proc.stderr


# --------------------------------------------------------------------------------------------------
# end to end: made by `torrentcore create`, seeded by `torrentcore seed`, downloaded by libtorrent
# --------------------------------------------------------------------------------------------------


def test_libtorrent_downloads_created_torrent_from_torrentcore_seeder(tmp_path, opentracker, torrentcore):
    spec = {"a.bin": 700_000, "sub/b.bin": 1_300_000, "sub/empty": 0, "sub/deeper/c.bin": 54_321}
    root = make_payload(tmp_path / "seed", spec, seed=12)
    tracker = opentracker()
    torrent_path = tmp_path / "made.torrent"
    proc = run_cli(["create", root, "-t", tracker.http_url, "-o", str(torrent_path), "--piece-length", "32k"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = torrent_path.read_bytes()
    info_hash = libtorrent_view(data)[0]
    assert f"info-hash {info_hash.hex()}" in proc.stdout
    tracker.add(info_hash)

    seeder = torrentcore.seed(torrent_path, tmp_path / "seed", name="seeder")
    with LibtorrentPeer(name="leecher") as leecher:
        seeder.wait_listening()
        # The leecher finds the seeder through the tracker only: the seeder must have announced first.
        assert wait_tracker_count(tracker, info_hash, seeders=1), seeder.describe()
        leecher.add_torrent(torrent_path, tmp_path / "leech")
        assert leecher.wait_finished(timeout=20), leecher.describe() + "\n" + seeder.describe()
        assert leecher.handle.info_hashes().v1.to_bytes() == info_hash
        assert_same_tree(root, tmp_path / "leech" / "payload", seeder.describe())
        # Who sent the bytes, proved from the sender's side: libtorrent's leecher may drop a seed and
        # miss its per-block alerts on a 2 MB transfer, but torrentcore counts every byte it uploads.
        senders = {t["pid"][:8] for t in leecher.transfers()}
        assert senders <= {b"-TC0001-"}, leecher.transfers()
        assert seeder.stop() == 0, seeder.describe()  # stopping the seeding of complete data is success
        summary = parse_summary(seeder.stdout)
        assert summary is not None, seeder.stdout
        assert summary["uploaded_min"] >= sum(spec.values()) * 0.95, seeder.stdout
