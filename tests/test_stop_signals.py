"""Stopping at awkward moments (issue 13): a signal during the start-up check, SIGHUP, stdout closed.

* SIGTERM in the middle of the check of data already on disk must not leave a record listing only the
  pieces checked so far (``seed`` then said "incomplete (436/1024)" of complete data): the next start
  checks again and finds everything. The signal is real, sent by the process to itself from a ``--plugin``
  module (``tc_signal_during_check``) when the N-th piece is verified, so it lands mid-check every time.
* SIGHUP stops ``run`` like SIGTERM: trackers told, resume record written, exit code 129.
* ``torrentcore info`` with standard output closed (``>&-``) or full exits 1 with one line on stderr.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from realpeers import make_payload, make_torrent, peers_fixture, wait_until  # noqa: F401  (fixture "peers")
from torrentcore_cli import resume_record, torrentcore_factory  # noqa: F401  (fixture "torrentcore")

from torrentcore import metainfo

RUN_TIMEOUT = 60
TESTS = Path(__file__).parent


def _plugin_path(monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))


def _record_pieces(path: Path) -> int:
    bits = bytes.fromhex(json.loads(path.read_text())["pieces"])
    return sum(bin(b).count("1") for b in bits)


def test_sigterm_during_the_start_up_check_then_seed_finds_all_the_data(tmp_path, torrentcore, monkeypatch):
    piece_length = 64 * 1024
    pieces = 1024
    root = Path(make_payload(tmp_path / "data", pieces * piece_length, seed=21, name="big.bin"))
    torrent = tmp_path / "big.torrent"
    make_torrent(root, [], piece_length=piece_length, out=torrent)
    meta = metainfo.load(str(torrent))
    data = tmp_path / "data"
    record = resume_record(torrentcore.state_dir, data, meta)
    _plugin_path(monkeypatch)
    monkeypatch.setenv("TC_SIGNAL_AFTER_PIECES", "300")
    monkeypatch.setenv("TC_SIGNAL", str(int(signal.SIGTERM)))

    # No peer and no record: `run` checks the data on disk and is stopped by SIGTERM part of the way.
    run = torrentcore.run(torrent, data, "--plugin", "tc_signal_during_check")
    assert run.wait(RUN_TIMEOUT) == 128 + signal.SIGTERM, run.describe()
    assert "Traceback" not in run.stderr, run.describe()
    done = run.summary()["pieces_done"]
    assert 300 <= done < pieces, run.describe()  # interrupted in the middle of the check
    assert not record.exists() or _record_pieces(record) == pieces, "a record of a partial check"
    assert os.listdir(data) == ["big.bin"]

    # The same with a trusted record of complete data before (its file touched, so it is checked again).
    monkeypatch.delenv("TC_SIGNAL_AFTER_PIECES")
    full = torrentcore.seed(torrent, data, "--seed-time", "0.001")
    assert full.wait(RUN_TIMEOUT) == 0, full.describe()
    assert record.is_file() and _record_pieces(record) == pieces, full.describe()
    os.utime(root)
    monkeypatch.setenv("TC_SIGNAL_AFTER_PIECES", "200")
    again = torrentcore.run(torrent, data, "--plugin", "tc_signal_during_check")
    assert again.wait(RUN_TIMEOUT) == 128 + signal.SIGTERM, again.describe()
    assert not record.exists() or _record_pieces(record) == pieces, "fewer pieces than were trusted before"

    monkeypatch.delenv("TC_SIGNAL_AFTER_PIECES")
    seed = torrentcore.seed(torrent, data, "--seed-time", "0.001")
    assert seed.wait(RUN_TIMEOUT) == 0, seed.describe()
    checked = seed.events("checking existing data")
    assert checked and checked[0]["candidates"] == pieces, seed.describe()  # checked again, in full
    assert seed.summary()["pieces_done"] == pieces, seed.describe()
    assert "incomplete" not in seed.stderr, seed.describe()


def test_sighup_stops_a_run_cleanly_and_the_restart_resumes(tmp_path, peers, torrentcore):
    size = 8 << 20
    root = Path(make_payload(tmp_path / "seed", size, seed=17, name="hup.bin"))
    torrent = tmp_path / "hup.torrent"
    make_torrent(root, [], piece_length=64 * 1024, out=torrent)
    meta = metainfo.load(str(torrent))
    seeder = peers.libtorrent("seeder", ignore_limits_on_local_network=False, upload_rate_limit=2_000_000)
    seeder.add_torrent(torrent, tmp_path / "seed", seed=True)
    out = tmp_path / "out"
    record = resume_record(torrentcore.state_dir, out, meta)

    run = torrentcore.run(torrent, out, peers=[seeder.endpoint])
    target = out / "hup.bin"
    assert wait_until(lambda: target.exists() and target.stat().st_size > size // 4 or run.returncode is not None,
                      20), run.describe()
    assert run.stop(signal.SIGHUP, 15) == 128 + signal.SIGHUP, run.describe()
    assert "Traceback" not in run.stderr, run.describe()
    summary = run.summary()
    assert summary["verdict"] == "stopped (SIGHUP)", run.describe()
    assert record.is_file() and _record_pieces(record) == summary["pieces_done"] > 0, run.describe()

    seeder.session.apply_settings({"upload_rate_limit": 0})
    second = torrentcore.run(torrent, out, peers=[seeder.endpoint])
    assert second.wait(RUN_TIMEOUT) == 0, second.describe()
    trusted = second.events("resume record trusted")
    assert trusted and trusted[0]["pieces"] == summary["pieces_done"], second.describe()
    assert target.read_bytes() == root.read_bytes()


def _info(torrent: Path, redirect: str) -> subprocess.CompletedProcess:
    """``torrentcore info TORRENT`` run by sh with ``redirect`` applied to its standard output."""
    script = f'exec "$0" -m torrentcore info "$1" {redirect}'
    return subprocess.run(["sh", "-c", script, sys.executable, str(torrent)], capture_output=False,
                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, timeout=60)


def test_info_with_stdout_closed_or_full_is_one_line_and_exit_1(tmp_path):
    root = make_payload(tmp_path / "d", 100_000, seed=1, name="x.bin")
    torrent = tmp_path / "x.torrent"
    make_torrent(root, [], piece_length=16384, out=torrent)
    for redirect in (">&-", ">/dev/full"):
        done = _info(torrent, redirect)
        lines = done.stderr.splitlines()
        assert done.returncode == 1 and len(lines) == 1, (redirect, done.stderr)
        assert lines[0].startswith("torrentcore: error: ") and "standard output" in lines[0], done.stderr
        assert "internal error" not in done.stderr and "Traceback" not in done.stderr
