"""``torrentcore create`` through the real command: an existing output is kept unless ``--force``, a
trackerless torrent gets one warning, and torrentcore's own files in a seeded folder are never packed.

What is written is checked with libtorrent (file list, info-hash).
"""

from __future__ import annotations

import os
import signal

import libtorrent as lt
from realpeers import make_payload, make_torrent
from torrentcore_cli import run_cli, torrentcore_factory  # noqa: F401  (fixture "torrentcore")

from torrentcore import bencode

TRACKER = "http://127.0.0.1:1/announce"
SPEC = {"a.bin": 200_000, "sub/b.bin": 70_001}


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _lt_files(path) -> list[tuple[str, int]]:
    """(path inside the torrent, size) as libtorrent reads the .torrent at ``path`` (pad files left out)."""
    fs = lt.torrent_info(str(path)).layout()
    return sorted((fs.file_path(i).replace(os.sep, "/"), fs.file_size(i)) for i in range(fs.num_files())
                  if not fs.file_flags(i) & lt.file_storage.flag_pad_file)


def test_existing_output_is_refused_without_force(tmp_path):
    root = make_payload(tmp_path / "data", SPEC, seed=1)
    out = tmp_path / "out.torrent"
    first = run_cli(["create", root, "-t", TRACKER, "-o", str(out), "--piece-length", "16k"])
    assert first.returncode == 0 and not first.stderr, first.stderr
    before = out.read_bytes()

    again = run_cli(["create", root, "-t", TRACKER, "-o", str(out), "--piece-length", "32k"])
    assert again.returncode == 2, again.stdout + again.stderr
    assert _lines(again.stderr) == [f"torrentcore: error: {out} already exists: add --force to overwrite it "
                                    "(or write elsewhere with -o FILE)"]
    assert not again.stdout and out.read_bytes() == before

    forced = run_cli(["create", root, "-t", TRACKER, "-o", str(out), "--piece-length", "32k", "--force"])
    assert forced.returncode == 0 and not forced.stderr, forced.stderr
    assert lt.torrent_info(str(out)).piece_length() == 32 * 1024
    assert sorted(os.listdir(tmp_path)) == ["data", "out.torrent"]  # no temporary file left behind

    # The default name (NAME.torrent in the current folder) is protected the same way; -f is --force.
    assert run_cli(["create", root, "-t", TRACKER], cwd=str(tmp_path)).returncode == 0
    refused = run_cli(["create", root, "-t", TRACKER], cwd=str(tmp_path))
    assert refused.returncode == 2 and "--force" in refused.stderr and len(_lines(refused.stderr)) == 1
    assert run_cli(["create", root, "-t", TRACKER, "-f"], cwd=str(tmp_path)).returncode == 0


def test_output_that_is_a_folder_is_bad_input(tmp_path):
    root = make_payload(tmp_path / "data", 1000)
    proc = run_cli(["create", root, "-t", TRACKER, "-o", str(tmp_path), "--force"])
    assert proc.returncode == 2 and _lines(proc.stderr) == [
        f"torrentcore: error: {tmp_path} is a folder: give -o the name of the .torrent file to write"]


def test_trackerless_torrent_is_made_with_one_warning(tmp_path):
    root = make_payload(tmp_path / "data", 50_000)
    out = tmp_path / "t.torrent"
    proc = run_cli(["create", root, "-o", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert _lines(proc.stderr) == ["torrentcore: warning: no tracker given (-t URL): peers will have to find each "
                                   "other through the DHT, PEX or --peer"]
    assert proc.stdout.startswith(f"created {out}")
    top = bencode.decode(out.read_bytes())
    assert b"announce" not in top and b"announce-list" not in top

    private = run_cli(["create", root, "-o", str(tmp_path / "p.torrent"), "--private"])
    assert private.returncode == 0 and len(_lines(private.stderr)) == 1
    assert "private" in private.stderr and "--peer" in private.stderr

    with_tracker = run_cli(["create", root, "-o", str(tmp_path / "w.torrent"), "-t", TRACKER])
    assert with_tracker.returncode == 0 and with_tracker.stderr == ""


def test_seeded_folder_with_our_own_files_is_packed_without_them(tmp_path, torrentcore):
    # A folder a user shares after seeding from it: the data, the resume record the engine wrote beside it
    # (whatever its format), planted old-style records, their .tmp and a magnet fetch's leftover .part.
    folder = tmp_path / "share"
    data = make_payload(folder, 300_000, seed=2, name="movie.bin")
    make_payload(folder, SPEC, seed=3, name="extras")
    torrent = tmp_path / "movie.torrent"
    info_hash = make_torrent(data, [], piece_length=16 * 1024, out=torrent)[1]
    seeder = torrentcore.seed(torrent, folder)
    seeder.wait_listening()
    assert seeder.stop(signal.SIGTERM) == 0, seeder.describe()  # stopping a complete seed is success
    planted = [f".torrentcore-{info_hash.hex()}.resume", f".torrentcore-{info_hash.hex()}.resume.tmp",
               f".torrentcore-{'ab' * 20}.resume", ".torrentcore-x1y2.torrent.part"]
    for name in planted:
        (folder / name).write_bytes(b'{"version": 1}')
    (folder / "extras" / planted[0]).write_bytes(b"{}")  # also in a subfolder
    assert set(planted) <= set(os.listdir(folder))

    out = folder / "share.torrent"  # written into the very folder it describes
    for force in ([], ["--force"]):  # the second time the output exists in the folder: still not packed
        proc = run_cli(["create", str(folder), "-t", TRACKER, "-o", str(out), "--piece-length", "16k", *force])
        assert proc.returncode == 0 and not proc.stderr, proc.stderr
        expected = [("share/extras/a.bin", 200_000), ("share/extras/sub/b.bin", 70_001), ("share/movie.bin", 300_000)]
        assert _lt_files(out) == expected

    # The same bytes as a torrent of a clean copy of the data.
    clean = tmp_path / "clean" / "share"
    make_payload(clean, 300_000, seed=2, name="movie.bin")
    make_payload(clean, SPEC, seed=3, name="extras")
    reference = tmp_path / "clean.torrent"
    assert run_cli(["create", str(clean), "-t", TRACKER, "-o", str(reference), "--piece-length", "16k"]).returncode == 0
    assert lt.torrent_info(str(out)).info_hashes().v1 == lt.torrent_info(str(reference)).info_hashes().v1

    # Naming one of our files directly is refused; a folder holding only ours has nothing to share.
    proc = run_cli(["create", str(folder / planted[0]), "-t", TRACKER, "-o", str(tmp_path / "x.torrent")])
    assert proc.returncode == 2 and "torrentcore's own files" in proc.stderr and len(_lines(proc.stderr)) == 1
    only = tmp_path / "only"
    only.mkdir()
    (only / planted[0]).write_bytes(b"{}")
    proc = run_cli(["create", str(only), "-t", TRACKER, "-o", str(tmp_path / "y.torrent")])
    assert proc.returncode == 2 and _lines(proc.stderr) == [
        f"torrentcore: error: nothing to share: {only} contains no files (only torrentcore's own files)"]
