"""Input mistakes of issue 11 through the real command: one line naming the cause and the fix, exit code 2,
no traceback.

* near-magnets (``magnet:xt=...`` without the ``?``, a bare ``magnet:``) are malformed magnet links, not
  missing files, in ``info``, ``run`` and ``seed``;
* ``seed -d FILE`` says that ``-d`` takes the folder holding the data and suggests it;
* ``seed`` on a folder holding none of the torrent's files names the path the data was expected at.
"""

from __future__ import annotations

import os

import pytest
from realpeers import LOCALHOST, free_port, make_payload, make_torrent
from torrentcore_cli import run_cli

HEX = "08ada5a7a6183aae1e09d831df6748d566095a10"
EXPECTED = "(expected magnet:?xt=urn:btih:<40 hex or 32 base32 characters>)"
SPEC = {"a.bin": 40_000, "sub/b.bin": 30_000, "sub/empty": 0}


def _one_error(proc) -> str:
    """The single stderr line of a command that failed with bad input (exit code 2)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("torrentcore: error: "), lines
    return lines[0].removeprefix("torrentcore: error: ")


def _net() -> list[str]:
    return ["--port", str(free_port()), "--listen-host", LOCALHOST, "--no-dht"]


@pytest.mark.parametrize("command", ["info", "run", "seed"])
@pytest.mark.parametrize(
    "link, why",
    [
        (f"magnet:xt=urn:btih:{HEX}", "the '?' after 'magnet:' is missing"),
        (f"MAGNET:xt=urn:btih:{HEX}&dn=x", "the '?' after 'magnet:' is missing"),
        ("magnet:", "nothing follows 'magnet:'"),
        ("magnet:?", "no 'xt=urn:btih:' or 'xt=urn:btmh:' info-hash"),
        ("magnet:?xt=urn:btih:1234", "invalid info-hash '1234'"),
    ],
    ids=["no-question-mark", "upper-case", "bare", "empty-query", "short-hash"],
)
def test_near_magnet_is_a_malformed_magnet_link(tmp_path, command, link, why):
    args = {"info": ["info", link], "run": ["run", link, "-o", str(tmp_path / "dl"), "--no-seed", *_net()],
            "seed": ["seed", link, "-d", str(tmp_path), *_net()]}[command]
    message = _one_error(run_cli(args, timeout=30))
    assert message == f"malformed magnet link {link!r}: {why} {EXPECTED}"
    assert not (tmp_path / "dl").exists()


def test_long_malformed_link_is_shown_shortened():
    link = "magnet:xt=urn:btih:" + HEX + "&tr=" + "x" * 5000
    message = _one_error(run_cli(["info", link]))
    assert message.startswith("malformed magnet link 'magnet:xt=urn:btih:") and len(message) < 250


def test_seed_wellformed_magnet_still_asks_for_a_torrent(tmp_path):
    message = _one_error(run_cli(["seed", f"magnet:?xt=urn:btih:{HEX}", "-d", str(tmp_path), *_net()]))
    assert message.startswith("'seed' needs a .torrent file")


@pytest.mark.parametrize("spec", [70_001, SPEC], ids=["single-file", "multi-file"])
def test_seed_with_the_data_file_as_folder_suggests_its_folder(tmp_path, spec):
    root = make_payload(tmp_path / "data", spec, seed=4)
    torrent = tmp_path / "t.torrent"
    make_torrent(root, [], piece_length=16 * 1024, out=torrent)
    data_file = root if isinstance(spec, int) else os.path.join(root, "sub", "b.bin")
    message = _one_error(run_cli(["seed", str(torrent), "-d", data_file, *_net()], timeout=30))
    assert message == (f"{data_file} is a file, not a folder: -d takes the folder holding the data (for a "
                       f"single-file torrent, the folder the file is in): try -d {tmp_path / 'data'}")
    # The suggested folder works: the data is complete there (seeding starts; stopped at once by a limit).
    proc = run_cli(["seed", str(torrent), "-d", str(tmp_path / "data"), "--seed-time", "0.001", *_net()],
                   timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_seed_with_a_missing_folder_says_what_d_takes(tmp_path):
    root = make_payload(tmp_path / "data", 1000)
    torrent = tmp_path / "t.torrent"
    make_torrent(root, [], out=torrent)
    message = _one_error(run_cli(["seed", str(torrent), "-d", str(tmp_path / "nowhere"), *_net()]))
    assert message == (f"data folder {tmp_path / 'nowhere'} does not exist; -d takes the folder holding the data "
                       "(for a single-file torrent, the folder the file is in)")


def test_seed_with_entirely_missing_data_names_the_expected_path(tmp_path):
    single = make_payload(tmp_path / "data", 3 * 1024 * 1024 + 5, seed=6, name="movie.bin")
    tree = make_payload(tmp_path / "data", SPEC, seed=6, name="album")
    for root in (single, tree):
        make_torrent(root, [], piece_length=16 * 1024, out=f"{root}.torrent")
    empty = tmp_path / "empty"
    empty.mkdir()
    message = _one_error(run_cli(["seed", f"{single}.torrent", "-d", str(empty), *_net()], timeout=30))
    assert message == (f"no data for movie.bin in {empty}: expected {empty / 'movie.bin'} (a file of 3.0 MiB); "
                       "-d takes the folder holding the data")
    message = _one_error(run_cli(["seed", f"{tree}.torrent", "-d", str(empty), *_net()], timeout=30))
    assert message == (f"no data for album in {empty}: expected {empty / 'album'} (a folder of 2 files, 68.4 KiB); "
                       "-d takes the folder holding the data")
    # The torrent's own folder instead of the one holding it: the parent is suggested.
    message = _one_error(run_cli(["seed", f"{tree}.torrent", "-d", tree, *_net()], timeout=30))
    assert message == (f"no data for album in {tree}: expected {os.path.join(tree, 'album')} (a folder of 2 files, "
                       f"68.4 KiB); that is the torrent's own folder: -d takes the folder holding it (try -d "
                       f"{tmp_path / 'data'})")
    assert sorted(os.listdir(empty)) == []  # nothing written, not even a resume record
