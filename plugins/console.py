"""Console output: live progress lines on a terminal, plain periodic lines otherwise.

On a terminal (the console's stream is a TTY) a block of lines is redrawn in place about once a second:
one line per torrent, and a total line when the session has more than one::

    ubuntu.iso [#####----------]  37.5%  37.5 MiB/100 MiB 12.5 MiB/s up  1.0 MiB/s ETA     5s 8 peers
    debian.iso [#--------------]  12.5%  80.0 MiB/640 MiB  4.0 MiB/s up  512 KiB/s ETA  2m20s 1 peer
    total      [##-------------]  15.9%   118 MiB/740 MiB 16.5 MiB/s up  1.5 MiB/s ETA    37s 9 peers

(a 100-column terminal; a single torrent has its line and no total).

Messages (a torrent starting, complete, warnings, summaries, and lines other plugins print with
:func:`torrentcore.hookspec.console_line`) are written above the block: it is erased (the cursor goes
up to its first line and the screen below is cleared), the message written, the block drawn again.
The block is never scrolled; it is as tall as the terminal allows (a total line says how many torrents
it could not show).

When the stream is a file or a pipe, each torrent's plain line is printed every ``--progress-interval``
seconds (default 10), with a total line when there are several, and a torrent's line (and the total)
whenever its state changes, so logs stay readable. A summary naming the torrent is printed when it stops.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from torrentcore.hookspec import Metainfo, PeerInfo, ProgressSnapshot, TorrentConfig, hookimpl, serve_console_lines

from ._progress_lines import (
    BAR_WIDTH,
    MIN_BAR,
    SOURCE_ORDER,
    block_lines,
    human_bytes,
    human_time,
    peer_sources_text,
    plain_line,
    plural,
    status_line,
    total_snapshot,
)

if TYPE_CHECKING:  # pragma: no cover
    import argparse

__all__ = ["BAR_WIDTH", "MIN_BAR", "SOURCE_ORDER", "ConsoleReporter", "FAILURES_SHOWN", "human_bytes", "human_time",
           "peer_sources_text", "plural", "status_line"]

#: Hash failures reported one by one per torrent; later ones are only counted (a liar can cause dozens).
FAILURES_SHOWN = 3
#: The label of the total line.
TOTAL = "total"


@dataclass
class Entry:
    """One torrent as the console knows it."""

    label: str
    snapshot: ProgressSnapshot | None = None
    last_state: str = ""
    failed_pieces: int = 0
    #: Set when the torrent stopped for good (``done``, ``interrupted``...).
    verdict: str | None = None


class ConsoleReporter:
    """Writes progress and messages to ``stream``: a live block of lines when it is a terminal.

    ``size`` returns ``(columns, lines)`` of the terminal (default: asked of the stream's terminal);
    tests pass their own.
    """

    def __init__(self, stream: TextIO | None = None, interval: float = 10.0, live: bool | None = None,
                 size: Callable[[], tuple[int, int]] | None = None) -> None:
        self.stream = stream or sys.stdout
        self.live = _isatty(self.stream) if live is None else live
        self.interval = interval
        self.entries: dict[object, Entry] = {}
        self._size = size or self._terminal_size
        self._last_plain = float("-inf")
        self._drawn = 0  # lines of the block on the screen now

    # -- torrents ---------------------------------------------------------------------------------

    def add(self, key: object, name: str) -> Entry:
        """Track a torrent (``key``: its info-hash); a name another torrent has gets a suffix."""
        if key in self.entries:
            return self.entries[key]
        taken = {e.label for e in self.entries.values()}
        label, n = name, 1
        while label in taken:
            n += 1
            label = f"{name} ({n})"
        self.entries[key] = entry = Entry(label)
        return entry

    @property
    def active(self) -> bool:
        """True while a torrent it tracks has not finished."""
        return any(e.verdict is None for e in self.entries.values())

    @property
    def failed_pieces(self) -> int:
        """Hash failures of every torrent."""
        return sum(e.failed_pieces for e in self.entries.values())

    def progress(self, s: ProgressSnapshot, key: object = None) -> None:
        """A snapshot of torrent ``key`` (default: its name) arrived: redraw, or print plain lines when due."""
        entry = self.entries.get(s.name if key is None else key) or self.add(s.name if key is None else key, s.name)
        entry.snapshot = s
        changed, entry.last_state = s.state != entry.last_state, s.state
        if self.live:
            self._redraw()
            return
        now = time.monotonic()
        if now - self._last_plain >= self.interval:
            self._last_plain = now
            self._write_lines([plain_line(e.label, e.snapshot) for e in self._running()] + self._plain_total())
        elif changed:
            self._write_lines([plain_line(entry.label, s)] + self._plain_total())

    def finish(self, key: object, s: ProgressSnapshot, verdict: str) -> None:
        """Torrent ``key`` stopped for good: its line shows ``verdict`` from now on."""
        entry = self.entries.get(key)
        if entry is not None:
            entry.snapshot, entry.verdict = s, verdict

    # -- output -----------------------------------------------------------------------------------

    def message(self, text: str) -> None:
        """Lines that must not be overwritten by the block: above it (the block is drawn again below)."""
        lines = [line + "\n" for line in str(text).rstrip("\n").split("\n")]
        if self.live:
            self._write(self._erase() + "".join(lines) + self._draw())
        else:
            self._write("".join(lines))

    def block(self) -> list[str]:
        """The lines of the live block now (empty once no torrent runs)."""
        if not self.active:
            return []
        known = [e for e in self.entries.values() if e.snapshot is not None]
        if not known:
            return []
        columns, rows = self._size()
        shown = known if len(known) == 1 else self._fit_rows(known, rows)
        items = [(e.label, e.snapshot, e.verdict) for e in shown]
        if len(known) > 1:
            hidden = len(known) - len(shown)
            label = f"{TOTAL} (+{hidden})" if hidden else TOTAL
            items.append((label, total_snapshot([e.snapshot for e in known]), None))
        return block_lines(items, columns)

    @staticmethod
    def _fit_rows(known: list[Entry], rows: int) -> list[Entry]:
        """As many torrents as fit above the total line in a ``rows``-line terminal, running ones first."""
        room = max(rows - 2, 1)  # the total line, and the line the cursor stays on
        if len(known) <= room:
            return known
        running = [e for e in known if e.verdict is None]
        chosen = set(map(id, (running + [e for e in known if e.verdict is not None])[:room]))
        return [e for e in known if id(e) in chosen]

    def _redraw(self) -> None:
        self._write(self._erase() + self._draw())

    def _erase(self) -> str:
        """Move to the block's first line and clear to the end of the screen (nothing when none is drawn)."""
        if not self._drawn:
            return ""
        up = f"\x1b[{self._drawn - 1}A" if self._drawn > 1 else ""
        self._drawn = 0
        return "\r" + up + "\x1b[J"

    def _draw(self) -> str:
        """The block, the cursor left at the end of its last line (so a redraw needs no scrolling)."""
        lines = self.block()
        self._drawn = len(lines)
        return "\n".join(lines)

    def _running(self) -> list[Entry]:
        return [e for e in self.entries.values() if e.snapshot is not None and e.verdict is None]

    def _plain_total(self) -> list[str]:
        known = [e.snapshot for e in self.entries.values() if e.snapshot is not None]
        if len(known) < 2:
            return []
        return [plain_line(f"{TOTAL} ({plural(len(known), 'torrent')})", total_snapshot(known))]

    def _write_lines(self, lines: list[str]) -> None:
        self._write("".join(line + "\n" for line in lines))

    def _write(self, text: str) -> None:
        if not text:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def _terminal_size(self) -> tuple[int, int]:
        try:
            size = os.get_terminal_size(self.stream.fileno())
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            size = shutil.get_terminal_size((100, 24))
        return size.columns or 100, size.lines or 24


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# --- the plugin ------------------------------------------------------------------------------------

_console: ConsoleReporter | None = None


def _key(torrent: Metainfo) -> object:
    return getattr(torrent, "info_hash", None) or id(torrent)


def _entry(torrent: Metainfo | None) -> Entry | None:
    """The console's entry for ``torrent`` (None: no console, or a torrent started with ``--quiet``)."""
    if _console is None or torrent is None:
        return None
    return _console.entries.get(_key(torrent))


def _label(torrent: Metainfo) -> str:
    entry = _entry(torrent)
    return entry.label if entry is not None else torrent.name


def _say(text: str) -> None:
    if _console is not None:
        _console.message(text)


def _new_console(save_path: str, interval: float) -> ConsoleReporter:
    """A console for a new run; it also serves :func:`~torrentcore.hookspec.console_line`."""
    # With "run -o -" the torrent's data goes to standard output: the console moves to standard error.
    console = ConsoleReporter(stream=sys.stderr if save_path == "-" else None, interval=interval)
    serve_console_lines(console.message)
    return console


@hookimpl
def torrentcore_add_options(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` and ``--progress-interval``."""
    g = parser.add_argument_group("console output")
    g.add_argument("--quiet", action="store_true", help="no progress output, only errors")
    g.add_argument("--progress-interval", type=float, default=10.0, metavar="SECONDS",
                   help="seconds between plain progress lines when output is not a terminal (default: 10)")


@hookimpl
def torrentcore_on_start(torrent: Metainfo, save_path: str, options: TorrentConfig) -> None:
    """Track the torrent (a new console when none runs) and say what is starting."""
    global _console
    extra = options.extra
    if extra.get("quiet", False):
        if _console is not None and not _console.active:
            _console = None
            serve_console_lines(None)
        return
    if _console is None or not _console.active:
        _console = _new_console(save_path, extra.get("progress_interval", 10.0))
    entry = _console.add(_key(torrent), torrent.name)
    storage = options.storage
    where = f"saving to {save_path}" if storage == "filesystem" else f"storage: {storage}"
    selected = options.selected_files
    chosen = f" ({len(selected)} selected)" if selected is not None else ""
    _console.message(
        f"{entry.label}: {human_bytes(torrent.data_length)} in {plural(len(torrent.data_files), 'file')}{chosen}, "
        f"{plural(torrent.num_pieces, 'piece')}, {where}"
    )


@hookimpl
def torrentcore_on_progress(torrent: Metainfo, snapshot: ProgressSnapshot) -> None:
    """Redraw the block or print lines."""
    if _console is not None and _entry(torrent) is not None:
        _console.progress(snapshot, _key(torrent))


@hookimpl
def torrentcore_on_completed(torrent: Metainfo, snapshot: ProgressSnapshot) -> None:
    """Say the download is complete."""
    if _entry(torrent) is None:
        return
    rate = snapshot.downloaded / snapshot.elapsed if snapshot.elapsed > 0 else 0.0
    _say(
        f"{_label(torrent)}: complete{_selection(torrent, snapshot)}, {human_bytes(snapshot.have_bytes)} verified"
        + (f" (downloaded {human_bytes(snapshot.downloaded)} at {human_bytes(rate)}/s)" if snapshot.downloaded else "")
    )


def _selection(torrent: Metainfo, snapshot: ProgressSnapshot) -> str:
    """`` (2 of 5 files selected)`` when files were selected with --only/--skip, else nothing."""
    if snapshot.selected_files is None:
        return ""
    return f" ({snapshot.selected_files} of {len(torrent.data_files)} files selected)"


@hookimpl
def torrentcore_on_piece_failed(torrent: Metainfo, index: int, peers: Sequence[tuple[str, int]]) -> None:
    """Report a torrent's first few hash failures; count the rest for its summary."""
    entry = _entry(torrent)
    if entry is None:
        return
    entry.failed_pieces += 1
    if entry.failed_pieces <= FAILURES_SHOWN:
        who = ", ".join(h if not p else f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in peers) or "unknown peer"
        more = " (further failures are counted in the summary)" if entry.failed_pieces == FAILURES_SHOWN else ""
        _say(f"{entry.label}: piece {index} failed its hash check (from {who}); fetching it again{more}")


@hookimpl
def torrentcore_on_peer_lost(torrent: Metainfo, peer: PeerInfo, reason: str) -> None:
    """Only bans are worth a line."""
    if _entry(torrent) is not None and reason.startswith("banned"):
        host, port = peer.address[0], peer.address[1]
        _say(f"{_label(torrent)}: peer {f'[{host}]' if ':' in host else host}:{port} {reason}")


@hookimpl
def torrentcore_on_error(torrent: Metainfo | None, message: str, fatal: bool) -> None:
    """Warnings go to the console, naming their torrent; fatal errors are printed by the CLI itself."""
    if fatal or _console is None or (torrent is not None and _entry(torrent) is None):
        return
    _say(f"{_label(torrent) + ': ' if torrent is not None else ''}warning: {message}")


@hookimpl
def torrentcore_on_finish(torrent: Metainfo, snapshot: ProgressSnapshot, exit_code: int) -> None:
    """The torrent's final summary (``NAME: VERDICT. D/N pieces, downloaded X, uploaded Y, TIME...``)."""
    entry = _entry(torrent)
    if entry is None:
        return
    verdict = _verdict(torrent, snapshot, exit_code)
    assert _console is not None  # an entry belongs to the console
    _console.finish(_key(torrent), snapshot, verdict.split(" (")[0])
    failed = entry.failed_pieces
    _say(
        f"{entry.label}: {verdict}. {snapshot.pieces_done}/{snapshot.num_pieces} pieces, "
        f"downloaded {human_bytes(snapshot.downloaded)}, uploaded {human_bytes(snapshot.uploaded)}, "
        f"{human_time(snapshot.elapsed)}"
        + (f", {human_bytes(snapshot.wasted)} wasted" if snapshot.wasted else "")
        + (f", {plural(failed, 'piece')} failed {'its' if failed == 1 else 'their'} hash check" if failed else "")
    )


def _verdict(torrent: Metainfo, snapshot: ProgressSnapshot, exit_code: int) -> str:
    """``done``, ``complete (2 of 5 files selected)``, ``interrupted``..."""
    verdicts = {0: "done", 130: "interrupted", 143: "stopped (SIGTERM)", 129: "stopped (SIGHUP)"}
    verdict = verdicts.get(exit_code, "stopped with errors")
    if exit_code == 0 and snapshot.selected_files is not None and snapshot.fraction >= 1.0:
        verdict = "complete" + _selection(torrent, snapshot)
    if exit_code == 0 and snapshot.extra.get("seeding_stopped"):
        verdict = "complete" + _selection(torrent, snapshot) + " (seeding stopped)"
    return verdict
