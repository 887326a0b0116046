"""The console reporter: a live bar on a terminal, plain lines otherwise, a bounded flood of warnings."""

from __future__ import annotations

import io

import torrentcore_plugins.console as console
from torrentcore.config import TorrentConfig
from torrentcore.hookspec import ProgressSnapshot


def snap(**kw) -> ProgressSnapshot:
    base = dict(name="ubuntu.iso", state="downloading", total_bytes=100 * 2**20, have_bytes=45 * 2**20,
                pieces_done=45, num_pieces=100, download_rate=12.5 * 2**20, upload_rate=2**20, peers=8, seeds=3,
                eta=72.0)
    base.update(kw)
    return ProgressSnapshot(**base)


def test_status_line_on_a_terminal_has_a_bar_and_fits():
    line = console.status_line(snap(), width=140)
    assert len(line) < 140
    assert "[##########--------------]" in line
    assert "45.0%" in line and "12.5 MiB/s" in line and "peers 8 (3 seeds)" in line and "ETA 1m12s" in line
    # An 80-column terminal still gets a bar and every number (in a more compact wording), even for a long name.
    for name in ("ubuntu.iso", "x" * 300):
        line = console.status_line(snap(name=name), width=80)
        assert len(line) <= 79
        assert "[" in line and "#" in line
        assert "45.0%" in line and "12.5 MiB/s" in line and "8 peers" in line and "ETA 1m12s" in line


def test_plain_lines_are_rate_limited_and_state_changes_always_show():
    out = io.StringIO()
    rep = console.ConsoleReporter(stream=out, interval=3600, live=False)
    for _ in range(5):
        rep.progress(snap())
    rep.progress(snap(state="seeding", pieces_done=100, have_bytes=100 * 2**20, uploaded=50 * 2**20,
                      downloaded=100 * 2**20, leechers=2))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()
    assert lines[1].startswith("ubuntu.iso: seeding") and "ratio 0.50" in lines[1] and "leechers 2" in lines[1]


def test_live_mode_redraws_one_line():
    out = io.StringIO()
    rep = console.ConsoleReporter(stream=out, live=True)
    rep.progress(snap())
    rep.progress(snap(have_bytes=50 * 2**20))
    rep.message("a warning")
    assert out.getvalue().count("\n") == 1
    assert out.getvalue().endswith("a warning\n")


def test_checking_state():
    assert "checking  40.0%" in console.status_line(snap(state="checking", checked=40))


def test_hash_failures_are_shown_a_few_times_then_counted(capsys):
    options = TorrentConfig(extra={"quiet": False, "progress_interval": 10.0})

    class T:
        name = "t"
        data_length = 1
        data_files = [1]
        num_pieces = 9

    console.torrentcore_on_start(torrent=T, save_path="/x", options=options)
    for i in range(9):
        console.torrentcore_on_piece_failed(torrent=T, index=i, peers=[("10.0.0.1", 1)])
    console.torrentcore_on_finish(torrent=T, snapshot=snap(name="t"), exit_code=0)
    out = capsys.readouterr().out
    assert out.count("failed its hash check") == console.FAILURES_SHOWN
    assert "9 piece(s) failed their hash check" in out


def test_human_units():
    assert console.human_bytes(1536) == "1.5 KiB"
    assert console.human_time(None) == "--" and console.human_time(3725) == "1h02m"
