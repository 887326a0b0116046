"""Console output: a live progress bar on a terminal, plain periodic lines otherwise.

On a terminal (stdout is a TTY) one line is redrawn in place about once a
second::

    ubuntu.iso  [#########-----------]  45.2%  12.3 MiB/s  up 1.1 MiB/s  peers 8  ETA 1m12s

When stdout is a file or a pipe, a plain line is printed every
``--progress-interval`` seconds (default 10) and on every state change, so
logs stay readable. A summary is printed when the torrent stops.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TYPE_CHECKING

from torrentcore.hookspec import Metainfo, PeerInfo, ProgressSnapshot, TorrentConfig, hookimpl

if TYPE_CHECKING:  # pragma: no cover
    import argparse

BAR_WIDTH = 24
MIN_BAR = 10


def human_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def human_time(seconds: float | None) -> str:
    """``75`` -> ``1m15s``; None -> ``--``."""
    if seconds is None or seconds != seconds or seconds > 100 * 86400:
        return "--"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


#: Order of peer sources in the console (as the engine names them; unknown names follow, sorted).
SOURCE_ORDER = ("tracker", "dht", "pex", "incoming", "manual", "magnet")


def peer_sources_text(sources: dict[str, int]) -> str:
    """``{"pex": 1, "tracker": 3}`` -> ``tracker 3, pex 1`` (empty when there are none)."""
    names = [n for n in SOURCE_ORDER if sources.get(n)] + sorted(n for n in sources if n not in SOURCE_ORDER
                                                                 and sources[n])
    return ", ".join(f"{n} {sources[n]}" for n in names)


def _cores(s: ProgressSnapshot, sources: bool = True) -> tuple[float, str, str]:
    """The fraction done, and the numbers in a full and a compact wording (``sources``: where peers came
    from, in the full wording)."""
    where = peer_sources_text(s.peer_sources) if sources else ""
    if s.state == "checking":
        frac = s.checked / s.num_pieces if s.num_pieces else 1.0
        full = f"checking {100 * frac:5.1f}%  ({s.pieces_done} pieces good so far)"
        return frac, full, f"checking {100 * frac:.1f}%"
    if s.state in ("seeding", "done") and s.fraction >= 1.0:
        full = (
            f"seeding  up {human_bytes(s.upload_rate)}/s  uploaded {human_bytes(s.uploaded)}  "
            f"ratio {s.ratio:.2f}  leechers {s.leechers}  peers {s.peers}" + (f" ({where})" if where else "")
        )
        compact = f"seeding up {human_bytes(s.upload_rate)}/s ratio {s.ratio:.2f} leechers {s.leechers}"
        return 1.0, full, compact
    frac = s.fraction
    full = (
        f"{100 * frac:5.1f}%  {human_bytes(s.download_rate)}/s  up {human_bytes(s.upload_rate)}/s  "
        f"peers {s.peers} ({where + '; ' if where else ''}{s.seeds} seeds)  ETA {human_time(s.eta)}"
    )
    compact = (
        f"{100 * frac:.1f}% {human_bytes(s.download_rate)}/s up {human_bytes(s.upload_rate)}/s "
        f"{s.peers} peers ETA {human_time(s.eta)}"
    )
    return frac, full, compact


def status_line(s: ProgressSnapshot, width: int | None = None) -> str:
    """One line describing ``s``; with ``width`` (a terminal) it has a bar and fits in ``width - 1``."""
    if width is None:
        return f"{s.name}: {_cores(s)[1]}"
    frac, full, compact = _cores(s, sources=False)
    room = width - 1
    name_min = min(len(s.name), 8)
    if s.peer_sources:
        # Where peers came from only when the line still fits the terminal (so never past 80 columns there).
        with_sources = _cores(s)[1]
        if name_min + 2 + MIN_BAR + 4 + len(with_sources) <= room:
            full = with_sources
    core = full if name_min + 2 + MIN_BAR + 4 + len(full) <= room else compact
    bar_width = min(BAR_WIDTH, room - len(core) - 4 - min(len(s.name), 16))
    bar = ""
    if bar_width >= MIN_BAR:
        filled = int(frac * bar_width)
        bar = "[" + "#" * filled + "-" * (bar_width - filled) + "]"
    name_room = max(room - len(core) - (len(bar) + 2 if bar else 0) - 2, 4)
    name = s.name if len(s.name) <= name_room else s.name[: name_room - 1] + "~"
    return "  ".join(p for p in (name, bar, core) if p)[:room]


class ConsoleReporter:
    """Writes progress to ``stream``; a live bar when it is a terminal."""

    def __init__(self, stream=None, interval: float = 10.0, live: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.interval = interval
        self._last_plain = 0.0
        self._last_state = ""
        self._drawn = False
        self.failed_pieces = 0

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def _clear(self) -> None:
        if self._drawn:
            self._write("\r\x1b[2K")
            self._drawn = False

    def progress(self, s: ProgressSnapshot) -> None:
        """A snapshot arrived."""
        if self.live:
            width = shutil.get_terminal_size((100, 20)).columns
            self._write("\r\x1b[2K" + status_line(s, width))
            self._drawn = True
            return
        now = time.monotonic()
        if s.state != self._last_state or now - self._last_plain >= self.interval:
            self._last_plain = now
            self._last_state = s.state
            self._write(status_line(s) + "\n")

    def message(self, text: str) -> None:
        """A line that must not be overwritten by the bar."""
        self._clear()
        self._write(text + "\n")


_reporter: ConsoleReporter | None = None


def _get() -> ConsoleReporter:
    global _reporter
    if _reporter is None:
        _reporter = ConsoleReporter()
    return _reporter


@hookimpl
def torrentcore_add_options(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` and ``--progress-interval``."""
    g = parser.add_argument_group("console output")
    g.add_argument("--quiet", action="store_true", help="no progress output, only errors")
    g.add_argument("--progress-interval", type=float, default=10.0, metavar="SECONDS",
                   help="seconds between plain progress lines when output is not a terminal (default: 10)")


@hookimpl
def torrentcore_on_start(torrent: Metainfo, save_path: str, options: TorrentConfig) -> None:
    """Set up for this run and say what is starting."""
    global _reporter
    extra = options.extra
    if extra.get("quiet", False):
        _reporter = None
        return
    # With "run -o -" the torrent's data goes to standard output: the console moves to standard error.
    stream = sys.stderr if save_path == "-" else None
    _reporter = ConsoleReporter(stream=stream, interval=extra.get("progress_interval", 10.0))
    storage = options.storage
    where = f"saving to {save_path}" if storage == "filesystem" else f"storage: {storage}"
    selected = options.selected_files
    chosen = f" ({len(selected)} selected)" if selected is not None else ""
    _reporter.message(
        f"{torrent.name}: {human_bytes(torrent.data_length)} in {len(torrent.data_files)} file(s){chosen}, "
        f"{torrent.num_pieces} pieces, {where}"
    )


@hookimpl
def torrentcore_on_progress(torrent: Metainfo, snapshot: ProgressSnapshot) -> None:
    """Redraw the bar or print a line."""
    if _reporter is not None:
        _reporter.progress(snapshot)


@hookimpl
def torrentcore_on_completed(torrent: Metainfo, snapshot: ProgressSnapshot) -> None:
    """Say the download is complete."""
    if _reporter is not None:
        rate = snapshot.downloaded / snapshot.elapsed if snapshot.elapsed > 0 else 0.0
        _reporter.message(
            f"{torrent.name}: complete{_selection(torrent, snapshot)}, {human_bytes(snapshot.have_bytes)} verified"
            + (f" (downloaded {human_bytes(snapshot.downloaded)} at {human_bytes(rate)}/s)"
               if snapshot.downloaded else "")
        )


def _selection(torrent: Metainfo, snapshot: ProgressSnapshot) -> str:
    """`` (2 of 5 files selected)`` when files were selected with --only/--skip, else nothing."""
    if snapshot.selected_files is None:
        return ""
    return f" ({snapshot.selected_files} of {len(torrent.data_files)} files selected)"


#: Hash failures reported one by one; later ones are only counted (a liar can cause dozens).
FAILURES_SHOWN = 3


@hookimpl
def torrentcore_on_piece_failed(torrent: Metainfo, index: int, peers) -> None:
    """Report the first few hash failures; count the rest for the summary."""
    if _reporter is None:
        return
    _reporter.failed_pieces += 1
    if _reporter.failed_pieces <= FAILURES_SHOWN:
        who = ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in peers) or "unknown peer"
        more = " (further failures are counted in the summary)" if _reporter.failed_pieces == FAILURES_SHOWN else ""
        _reporter.message(
            f"{torrent.name}: piece {index} failed its hash check (from {who}); fetching it again{more}"
        )


@hookimpl
def torrentcore_on_peer_lost(torrent: Metainfo, peer: PeerInfo, reason: str) -> None:
    """Only bans are worth a line."""
    if _reporter is not None and reason.startswith("banned"):
        host, port = peer.address[0], peer.address[1]
        _reporter.message(f"{torrent.name}: peer {f'[{host}]' if ':' in host else host}:{port} {reason}")


@hookimpl
def torrentcore_on_error(torrent: Metainfo | None, message: str, fatal: bool) -> None:
    """Warnings go to the console; fatal errors are printed by the CLI itself."""
    if _reporter is not None and not fatal:
        _reporter.message(f"{torrent.name + ': ' if torrent else ''}warning: {message}")


@hookimpl
def torrentcore_on_finish(torrent: Metainfo, snapshot: ProgressSnapshot, exit_code: int) -> None:
    """The final summary."""
    if _reporter is None:
        return
    verdicts = {0: "done", 130: "interrupted", 143: "stopped (SIGTERM)", 129: "stopped (SIGHUP)"}
    verdict = verdicts.get(exit_code, "stopped with errors")
    if exit_code == 0 and snapshot.selected_files is not None and snapshot.fraction >= 1.0:
        verdict = "complete" + _selection(torrent, snapshot)
    if exit_code == 0 and snapshot.extra.get("seeding_stopped"):
        verdict = "complete" + _selection(torrent, snapshot) + " (seeding stopped)"
    _reporter.message(
        f"{torrent.name}: {verdict}. {snapshot.pieces_done}/{snapshot.num_pieces} pieces, "
        f"downloaded {human_bytes(snapshot.downloaded)}, uploaded {human_bytes(snapshot.uploaded)}, "
        f"{human_time(snapshot.elapsed)}"
        + (f", {human_bytes(snapshot.wasted)} wasted" if snapshot.wasted else "")
        + (f", {_reporter.failed_pieces} piece(s) failed their hash check" if _reporter.failed_pieces else "")
    )
