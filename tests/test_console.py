"""The console reporter: line layout, the live block on a terminal, plain lines otherwise, printing above
the block (hookspec.console_line), and a real two-torrent session through the command line."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from realpeers import LibtorrentPeer, assert_same_tree, make_payload, make_torrent
from torrentcore_cli import parse_summaries, torrentcore_factory  # noqa: F401  (fixture "torrentcore")

import torrentcore_plugins._progress_lines as lines
import torrentcore_plugins.console as console
from torrentcore import hookspec
from torrentcore.config import TorrentConfig
from torrentcore.hookspec import ProgressSnapshot

MiB = 2**20
WIDTHS = (60, 80, 100, 200)
BAR = re.compile(r"\[[#-]+\]")


def snap(**kw) -> ProgressSnapshot:
    base = dict(name="ubuntu.iso", state="downloading", total_bytes=100 * MiB, have_bytes=45 * MiB,
                pieces_done=45, num_pieces=100, download_rate=12.5 * MiB, upload_rate=MiB, peers=8, seeds=3,
                eta=72.0)
    base.update(kw)
    return ProgressSnapshot(**base)


@pytest.fixture(autouse=True)
def fresh_console() -> Iterator[None]:
    """Every test starts and ends with no console plugin state and no console_line writer."""
    console._console = None
    previous = hookspec.serve_console_lines(None)
    yield
    console._console = None
    hookspec.serve_console_lines(previous)


class FakeTerminal(io.StringIO):
    """A stream that says it is a terminal; :meth:`screen` replays what was written to it."""

    def isatty(self) -> bool:
        return True

    def screen(self) -> list[str]:
        """The rows on screen, interpreting CR, LF, cursor up (ESC [ n A) and clear below (ESC [ J)."""
        rows, row, col = [""], 0, 0
        for token in re.findall(r"\x1b\[\d*[AJ]|\r|\n|[^\x1b\r\n]+", self.getvalue()):
            if token == "\n":
                row, col = row + 1, 0
                rows += [""] * (row + 1 - len(rows))
            elif token == "\r":
                col = 0
            elif token.endswith("A"):
                row = max(row - int(token[2:-1] or 1), 0)
            elif token.endswith("J"):
                rows = rows[:row] + [rows[row][:col]]
            else:
                rows[row] = rows[row][:col].ljust(col) + token + rows[row][col + len(token):]
                col += len(token)
        return rows


def terminal(columns: int = 80, rows: int = 24) -> tuple[FakeTerminal, console.ConsoleReporter]:
    stream = FakeTerminal()
    return stream, console.ConsoleReporter(stream=stream, size=lambda: (columns, rows))


# --- one line ----------------------------------------------------------------------------------------


def test_status_line_on_a_terminal_has_a_bar_and_fits():
    line = console.status_line(snap(), width=140)
    assert len(line) < 140
    assert "[##########--------------]" in line
    assert "45.0%" in line and "45.0 MiB/100 MiB" in line and "12.5 MiB/s" in line and "8 peers (3 seeds)" in line
    assert re.search(r"ETA +1m12s", line)
    # An 80-column terminal still gets a bar and the essential numbers, even for a long name.
    for name in ("ubuntu.iso", "x" * 300):
        line = console.status_line(snap(name=name), width=80)
        assert len(line) <= 79
        assert BAR.search(line) and "#" in line
        assert "45.0%" in line and "45.0 MiB/100 MiB" in line and "12.5 MiB/s" in line
        assert re.search(r"ETA +1m12s", line)


def test_done_and_total_bytes_are_shown():
    s = snap(name="big.bin", total_bytes=40 * MiB, have_bytes=int(12.3 * MiB))
    for width in WIDTHS:
        assert "12.3 MiB/40.0 MiB" in console.status_line(s, width), width
    assert "12.3 MiB/40.0 MiB" in console.status_line(s)
    # With a file selection, of the selected files' pieces.
    selected = snap(wanted_bytes=20 * MiB, wanted_have_bytes=5 * MiB, selected_files=1)
    assert "5.0 MiB/20.0 MiB" in console.status_line(selected, 100)


def _variety() -> list[ProgressSnapshot]:
    """Snapshots whose numbers take every width, in every state."""
    out = []
    for have, rate, eta, peers, seeds in ((0, 0, None, 0, 0), (1, 1, 0, 1, 1), (999 * 1024, 999.9 * 1024, 59, 9, 1),
                                          (50 * MiB, 99.9 * MiB, 3599, 99, 10), (99 * MiB, 1000 * MiB, 99 * 86400,
                                                                                 999, 999)):
        for state in ("downloading", "checking", "seeding"):
            out.append(snap(state=state, have_bytes=have, download_rate=rate, upload_rate=rate, eta=eta,
                            peers=peers, seeds=seeds, leechers=peers - seeds, uploaded=have, checked=have // MiB,
                            peer_sources={"tracker": peers} if peers else {}))
    out.append(snap(state="seeding", have_bytes=100 * MiB, uploaded=5000 * MiB, upload_rate=3 * MiB))
    return out


@pytest.mark.parametrize("width", WIDTHS + (1, 20, 40))
def test_every_line_fits_the_terminal(width):
    for name in ("a", "big.bin", "ubuntu-24.04.1-desktop-amd64.iso", "x" * 300):
        for s in _variety():
            line = console.status_line(ProgressSnapshot(**{**s.__dict__, "name": name}), width)
            assert line and len(line) <= max(width - 1, 1), (width, line)


@pytest.mark.parametrize("width", WIDTHS)
def test_the_bar_never_changes_width_or_place_as_numbers_change(width):
    places = set()
    for s in _variety():
        line = console.status_line(s, width)
        match = BAR.search(line)
        assert match, line
        places.add(match.span())
    assert len(places) == 1, places


@pytest.mark.parametrize("width", (80, 100))
def test_a_name_that_fits_is_never_cut(width):
    line = console.status_line(snap(name="big.bin"), width)
    assert line.startswith("big.bin "), line
    assert lines.MARK not in line.split("[")[0]


@pytest.mark.parametrize("width", WIDTHS)
def test_only_names_longer_than_the_room_are_shortened_with_a_marker(width):
    cut_from = None
    for length in range(1, 160):
        name = "n" * (length - 1) + "Z"
        line = console.status_line(snap(name=name), width)
        head = line.split(" [")[0].rstrip()
        if head == name:
            assert cut_from is None, f"a {length}-character name is whole after a shorter one was cut"
            continue
        cut_from = cut_from or length
        assert lines.MARK in head and head.endswith("Z") and len(line) <= width - 1, line
    # The room for a name grows with the terminal; a common name always fits from 80 columns.
    assert cut_from is not None and cut_from > {60: 10, 80: 16, 100: 30, 200: 100}[width], cut_from


def test_singular_and_plural():
    one = console.status_line(snap(peers=1, seeds=1), 200)
    assert "1 peer (1 seed)" in one and "peers" not in one and "seeds" not in one
    assert "2 peers (2 seeds)" in console.status_line(snap(peers=2, seeds=2), 200)
    assert "0 peers (0 seeds)" in console.status_line(snap(peers=0, seeds=0), 200)
    seeding = snap(state="seeding", have_bytes=100 * MiB, peers=1, leechers=1, peer_sources={"incoming": 1})
    plain = console.status_line(seeding)
    assert "1 leecher " in plain and "1 peer (incoming 1)" in plain
    assert "2 leechers" in console.status_line(snap(state="seeding", have_bytes=100 * MiB, leechers=2))
    assert console.plural(1, "file") == "1 file" and console.plural(3, "file") == "3 files"


def test_plain_lines_say_where_peers_came_from():
    line = console.status_line(snap(peers=2, seeds=2, peer_sources={"manual": 1, "tracker": 1}))
    assert line.startswith("ubuntu.iso: 45.0%") and "2 peers (tracker 1, manual 1; 2 seeds)" in line
    assert "\x1b" not in line and "  " in line


def test_checking_state():
    assert "checking  40.0%" in console.status_line(snap(state="checking", checked=40))
    assert "checking" in console.status_line(snap(state="checking", checked=40), 60)


def test_human_units():
    assert console.human_bytes(1536) == "1.5 KiB"
    assert console.human_time(None) == "--" and console.human_time(3725) == "1h02m"
    assert lines.short_bytes(512 * MiB) == "512 MiB" and lines.short_bytes(99.97 * MiB) == "100 MiB"
    assert lines.short_time(5 * 86400 + 3 * 3600) == "5d03h" and lines.short_time(200 * 86400) == "--"


def test_total_snapshot_adds_torrents_up():
    a = snap(total_bytes=100 * MiB, have_bytes=50 * MiB, download_rate=MiB, peers=2, seeds=1)
    b = snap(total_bytes=300 * MiB, have_bytes=50 * MiB, download_rate=MiB, peers=3, seeds=0)
    total = lines.total_snapshot([a, b])
    assert total.fraction == 0.25 and total.peers == 5 and total.seeds == 1
    assert total.eta == pytest.approx(150.0)
    assert "100 MiB/400 MiB" in console.status_line(total, 100)


# --- the live block ----------------------------------------------------------------------------------


def test_live_mode_redraws_one_line():
    out, rep = terminal()
    rep.progress(snap())
    rep.progress(snap(have_bytes=50 * MiB))
    rep.message("a warning")
    assert out.getvalue().count("\n") == 1
    screen = out.screen()
    assert screen[0] == "a warning" and screen[1].startswith("ubuntu.iso") and len(screen) == 2
    assert "50.0%" in screen[1]


def _two_torrents(rep: console.ConsoleReporter) -> None:
    rep.add("a", "big.bin")
    rep.add("b", "debian.iso")
    rep.message("big.bin: starting")
    rep.message("debian.iso: starting")
    for done in range(0, 40, 10):
        rep.progress(snap(name="big.bin", total_bytes=40 * MiB, have_bytes=done * MiB), "a")
        rep.progress(snap(name="debian.iso", have_bytes=2 * done * MiB), "b")


@pytest.mark.parametrize("columns", WIDTHS)
def test_a_block_of_two_torrents_and_a_total_is_redrawn_in_place(columns):
    out, rep = terminal(columns)
    _two_torrents(rep)
    screen = out.screen()
    assert screen[:2] == ["big.bin: starting", "debian.iso: starting"]
    block = screen[2:]
    assert [row.split()[0] for row in block] == ["big.bin", "debian.iso", "total"], screen
    assert all(len(row) <= columns - 1 for row in block)
    assert "30.0 MiB/40.0 MiB" in block[0] and "60.0 MiB/100 MiB" in block[1] and "90.0 MiB/140 MiB" in block[2]
    # One bar width and place for the whole block; never scrolled: every redraw goes back up to its top.
    assert len({BAR.search(row).span() for row in block}) == 1
    redraws = out.getvalue().split("\r\x1b[2A\x1b[J")
    assert len(redraws) >= 6 and all(r.count("\n") == 2 for r in redraws[1:])


def test_messages_and_console_lines_go_above_the_block_which_stays_whole():
    out, rep = terminal(100)
    hookspec.serve_console_lines(rep.message)
    _two_torrents(rep)
    rep.message("big.bin: warning: tracker down")
    hookspec.console_line("piecelog: big.bin: piece 3 verified\nsecond line\n")
    screen = out.screen()
    assert screen[2:5] == ["big.bin: warning: tracker down", "piecelog: big.bin: piece 3 verified", "second line"]
    assert [row.split()[0] for row in screen[5:]] == ["big.bin", "debian.iso", "total"], screen
    # A finished torrent keeps its line (with its verdict) while another runs; the last one removes the block.
    rep.finish("a", snap(name="big.bin", total_bytes=40 * MiB, have_bytes=40 * MiB, state="done"), "done")
    rep.message("big.bin: done. 40/40 pieces")
    screen = out.screen()
    assert screen[-4] == "big.bin: done. 40/40 pieces"
    assert [row.split()[0] for row in screen[-3:]] == ["big.bin", "debian.iso", "total"], screen
    assert re.search(r"done +100.0%", screen[-3]) and "40.0 MiB/40.0 MiB" in screen[-3]
    rep.finish("b", snap(name="debian.iso", state="done"), "interrupted")
    rep.message("debian.iso: interrupted. 45/100 pieces")
    screen = out.screen()
    assert screen[-1] == "" and screen[-2] == "debian.iso: interrupted. 45/100 pieces"
    assert not any(BAR.search(row) for row in screen)


def test_the_block_is_never_taller_than_the_terminal():
    out, rep = terminal(80, rows=6)
    for i in range(10):
        rep.add(i, f"t{i}.bin")
        rep.progress(snap(name=f"t{i}.bin"), i)
    block = [row for row in out.screen() if BAR.search(row)]
    assert len(block) == 5 and block[-1].startswith("total (+6)")


# --- plain lines -------------------------------------------------------------------------------------


def test_plain_lines_are_rate_limited_and_state_changes_always_show():
    out = io.StringIO()
    rep = console.ConsoleReporter(stream=out, interval=3600, live=False)
    for _ in range(5):
        rep.progress(snap())
    rep.progress(snap(state="seeding", pieces_done=100, have_bytes=100 * MiB, uploaded=50 * MiB,
                      downloaded=100 * MiB, leechers=2))
    printed = out.getvalue().splitlines()
    assert len(printed) == 2
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()
    assert printed[1].startswith("ubuntu.iso: seeding") and "ratio 0.50" in printed[1] and "2 leechers" in printed[1]


def test_plain_lines_of_two_torrents_have_a_total():
    out = io.StringIO()
    rep = console.ConsoleReporter(stream=out, interval=0, live=False)
    _two_torrents(rep)
    printed = out.getvalue().splitlines()
    assert printed[-3].startswith("big.bin: 75.0%  30.0 MiB/40.0 MiB")
    assert printed[-2].startswith("debian.iso: 60.0%  60.0 MiB/100 MiB")
    assert printed[-1].startswith("total (2 torrents): 64.3%  90.0 MiB/140 MiB")
    # Rate-limited: only state changes print, each with the total.
    out.seek(0)
    out.truncate()
    rep.interval = 3600
    rep.progress(snap(name="big.bin", total_bytes=40 * MiB, have_bytes=40 * MiB, state="seeding"), "a")
    rep.progress(snap(name="debian.iso", have_bytes=70 * MiB), "b")
    printed = out.getvalue().splitlines()
    assert len(printed) == 2 and printed[0].startswith("big.bin: seeding") and printed[1].startswith("total")


# --- console_line ------------------------------------------------------------------------------------


def test_console_line_goes_to_stderr_when_no_console_serves(capsys):
    hookspec.console_line("piecelog: hello")
    hookspec.console_line("a\nb")
    captured = capsys.readouterr()
    assert captured.err == "piecelog: hello\na\nb\n" and captured.out == ""


def test_serve_console_lines_returns_the_previous_writer():
    seen: list[str] = []
    assert hookspec.serve_console_lines(seen.append) is None
    hookspec.console_line("one")
    assert hookspec.serve_console_lines(None) == seen.append
    assert seen == ["one"]


# --- the plugin's hooks ------------------------------------------------------------------------------


class FakeTorrent:
    def __init__(self, name: str, info_hash: bytes, pieces: int = 9) -> None:
        self.name, self.info_hash, self.num_pieces = name, info_hash, pieces
        self.data_length, self.data_files = pieces * MiB, [object()]


OPTIONS = TorrentConfig(extra={"quiet": False, "progress_interval": 10.0})


def test_hash_failures_are_shown_a_few_times_then_counted(capsys):
    t = FakeTorrent("t", b"1" * 20)
    console.torrentcore_on_start(torrent=t, save_path="/x", options=OPTIONS)
    for i in range(9):
        console.torrentcore_on_piece_failed(torrent=t, index=i, peers=[("10.0.0.1", 1)])
    console.torrentcore_on_finish(torrent=t, snapshot=snap(name="t"), exit_code=0)
    out = capsys.readouterr().out
    assert out.count("failed its hash check") == console.FAILURES_SHOWN
    assert "9 pieces failed their hash check" in out


def test_every_message_of_a_session_names_its_torrent_and_each_gets_a_summary(capsys):
    a, b = FakeTorrent("alpha.bin", b"a" * 20), FakeTorrent("beta.bin", b"b" * 20, pieces=1)
    for t in (a, b):
        console.torrentcore_on_start(torrent=t, save_path="/x", options=OPTIONS)
    hookspec.console_line("other plugin")
    console.torrentcore_on_progress(torrent=a, snapshot=snap(name="alpha.bin"))
    console.torrentcore_on_progress(torrent=b, snapshot=snap(name="beta.bin"))
    console.torrentcore_on_error(torrent=b, message="tracker down", fatal=False)
    console.torrentcore_on_piece_failed(torrent=a, index=2, peers=[("::1", 7)])
    console.torrentcore_on_completed(torrent=b, snapshot=snap(name="beta.bin", downloaded=MiB, elapsed=1.0))
    console.torrentcore_on_finish(torrent=b, snapshot=snap(name="beta.bin", downloaded=MiB), exit_code=0)
    console.torrentcore_on_finish(torrent=a, snapshot=snap(name="alpha.bin"), exit_code=130)
    out = capsys.readouterr().out.splitlines()
    assert "alpha.bin: 9.0 MiB in 1 file, 9 pieces, saving to /x" in out
    assert "beta.bin: 1.0 MiB in 1 file, 1 piece, saving to /x" in out
    assert "other plugin" in out and "beta.bin: warning: tracker down" in out
    assert any(line.startswith("alpha.bin: piece 2 failed its hash check (from [::1]:7)") for line in out)
    assert any(line.startswith("beta.bin: complete, 45.0 MiB verified") for line in out)
    assert any(line.startswith("total (2 torrents): ") for line in out)
    summaries = parse_summaries("\n".join(out))
    assert summaries["beta.bin"]["verdict"] == "done" and summaries["alpha.bin"]["verdict"] == "interrupted"
    assert "1 piece failed its hash check" in out[-1]


def test_two_torrents_of_one_name_are_told_apart(capsys):
    a, b = FakeTorrent("payload", b"a" * 20), FakeTorrent("payload", b"b" * 20)
    for t in (a, b):
        console.torrentcore_on_start(torrent=t, save_path="/x", options=OPTIONS)
    out = capsys.readouterr().out
    assert "payload: 9.0 MiB" in out and "payload (2): 9.0 MiB" in out


def test_quiet_prints_nothing_and_leaves_console_line_to_stderr(capsys):
    t = FakeTorrent("t", b"1" * 20)
    console.torrentcore_on_start(torrent=t, save_path="/x", options=TorrentConfig(extra={"quiet": True}))
    console.torrentcore_on_progress(torrent=t, snapshot=snap(name="t"))
    console.torrentcore_on_finish(torrent=t, snapshot=snap(name="t"), exit_code=0)
    hookspec.console_line("still shown")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "still shown\n"


# --- end to end --------------------------------------------------------------------------------------


def test_run_two_torrents_shows_a_line_for_each_a_total_and_two_summaries(tmp_path: Path, torrentcore):
    """``torrentcore run A.torrent B.torrent`` against two real libtorrent seeders, output to a file."""
    roots, torrents = [], []
    for name, size in (("alpha.bin", 3 * MiB), ("beta.bin", 2 * MiB + 123)):
        roots.append(make_payload(tmp_path / "seed", size, seed=len(roots), name=name))
        torrents.append(tmp_path / f"{name}.torrent")
        make_torrent(roots[-1], [], piece_length=64 * 1024, out=torrents[-1])
    with LibtorrentPeer(name="seed-a") as seed_a, LibtorrentPeer(name="seed-b") as seed_b:
        seed_a.add_torrent(torrents[0], tmp_path / "seed", seed=True)
        seed_b.add_torrent(torrents[1], tmp_path / "seed", seed=True)
        run = torrentcore.run(torrents, tmp_path / "out", peers=[seed_a.endpoint, seed_b.endpoint])
        rc = run.wait(120)
    out = run.stdout
    assert rc == 0, run.describe()
    for root in roots:
        assert_same_tree(root, tmp_path / "out" / Path(root).name)
    printed = out.splitlines()
    for name, total in (("alpha.bin", "3.0 MiB"), ("beta.bin", "2.0 MiB"), ("total (2 torrents)", "5.0 MiB")):
        progress = re.compile(rf"{re.escape(name)}: [0-9.]+%  [0-9.]+ [KMG]?i?B/{total}  ")
        assert any(progress.match(line) for line in printed), out
    summaries = parse_summaries(out)
    assert set(summaries) == {"alpha.bin", "beta.bin"}, out
    assert summaries["alpha.bin"]["verdict"] == "done" and summaries["alpha.bin"]["pieces_done"] == 48
    assert summaries["beta.bin"]["verdict"] == "done" and summaries["beta.bin"]["pieces_done"] == 33
