"""The console plugin's progress lines: one torrent (or a session's total) as one line of text.

On a terminal a line has a fixed layout, computed from the terminal's width and the longest name of the
block alone (never from the numbers, so nothing moves as they change)::

    ubuntu.iso  [######----------]   37.5%   37.5 MiB/100 MiB  12.5 MiB/s  up  1.0 MiB/s  ETA     5s  8 peers (3 seeds)

* the bar keeps its width (at most :data:`BAR_WIDTH`, at least :data:`MIN_BAR` characters inside the
  brackets) whatever the numbers;
* every number has a column as wide as its widest value can be, so the lines of a block line up;
* the fields are dropped from the least useful (seeds, upload rate, peers) when the terminal is narrow;
  the *essential* ones (percent, done/total, download rate, ETA) go last, after a name is shortened;
* a name is shortened (its middle replaced by :data:`MARK`) only when it does not fit beside the
  essential fields and the narrowest bar;
* every line fits in ``width - 1`` columns (the last column is left free: writing it would wrap on some
  terminals).

Off a terminal a line is ``NAME: FIELDS`` with every field and no padding.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from torrentcore.hookspec import ProgressSnapshot

#: Width of the bar inside its brackets at most, and at least (narrower: no bar at all).
BAR_WIDTH = 24
MIN_BAR = 10
#: A shortened name keeps at least this many characters (or all of a name shorter than that).
MIN_NAME = 8
#: Replaces the middle of a shortened name.
MARK = "~"
#: Order of peer sources (as the engine names them; unknown names follow, sorted).
SOURCE_ORDER = ("tracker", "dht", "pex", "incoming", "manual", "magnet")

# The widest text of each field, whatever the numbers: "100.0%", "1023 MiB/1023 MiB", "99.9 KiB/s",
# "up 99.9 KiB/s", "ETA 23h59m", "999 peers", "999 peers (999 seeds)".
W_PCT, W_SIZE, W_RATE, W_UP, W_ETA, W_PEERS, W_PEERS_SEEDS = 6, 17, 10, 13, 10, 9, 21


def human_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB`` (one decimal; the wording of messages and summaries)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def short_bytes(n: float) -> str:
    """At most 8 characters below 1024 TiB: ``512 B``, ``1.5 KiB``, ``99.9 MiB``, ``512 MiB``, ``1023 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            if unit == "B":
                return f"{n:.0f} B"
            return f"{n:.1f} {unit}" if abs(n) < 99.95 else f"{n:.0f} {unit}"
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


def short_time(seconds: float | None) -> str:
    """Like :func:`human_time` in at most 6 characters: days past 99 hours (``4d03h``), ``--`` past 99 days."""
    if seconds is not None and seconds == seconds and 100 * 3600 <= seconds < 100 * 86400:
        seconds = int(seconds)
        return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
    return human_time(seconds if seconds is None or seconds < 100 * 3600 else None)


def plural(count: int, word: str) -> str:
    """``plural(1, "seed")`` -> ``1 seed``; ``plural(2, "seed")`` -> ``2 seeds``."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def peer_sources_text(sources: dict[str, int]) -> str:
    """``{"pex": 1, "tracker": 3}`` -> ``tracker 3, pex 1`` (empty when there are none)."""
    names = [n for n in SOURCE_ORDER if sources.get(n)]
    names += sorted(n for n in sources if n not in SOURCE_ORDER and sources[n])
    return ", ".join(f"{n} {sources[n]}" for n in names)


# --- fields ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One part of a line: ``text`` in a column ``width`` wide (right-aligned, or ``padded`` when given);
    ``longer`` replaces it when it ends the line and the room allows (where peers came from)."""

    text: str
    width: int
    longer: str = ""
    padded: str = ""

    def in_column(self) -> str:
        """The text as wide as its column."""
        return self.padded or self.text.rjust(self.width)


def labelled(label: str, value: str, width: int) -> Field:
    """``up 1.0 MiB/s``: a label, then its value right-aligned in the rest of the column."""
    return Field(f"{label} {value}", width, padded=f"{label} {value.rjust(width - len(label) - 1)}")


def done_total(s: ProgressSnapshot) -> tuple[int, int]:
    """Bytes verified and bytes wanted: of the selected files' pieces with a selection, else of the torrent."""
    if s.wanted_bytes is not None:
        return s.wanted_have_bytes, s.wanted_bytes
    return s.have_bytes, s.total_bytes


def _peers(s: ProgressSnapshot, seeds: bool) -> Field:
    where = peer_sources_text(s.peer_sources)
    count = plural(s.peers, "peer")
    if not seeds:
        return Field(count, W_PEERS, f"{count} ({where})" if where else "")
    seed_text = plural(s.seeds, "seed")
    if s.encrypted_peers:  # MSE/PE: how many of them are encrypted, where there is room
        seed_text += f", {s.encrypted_peers} encrypted"
    if getattr(s, "utp_peers", 0):  # BEP 29: how many of them are over uTP
        seed_text += f", {s.utp_peers} uTP"
    return Field(f"{count} ({seed_text})", W_PEERS_SEEDS, f"{count} ({where}; {seed_text})" if where else "")


def downloading_variants(s: ProgressSnapshot) -> list[list[Field]]:
    """The fields of a downloading torrent, richest first; the fourth is the essential set."""
    done, total = done_total(s)
    pct = Field(f"{100 * s.fraction:.1f}%", W_PCT)
    size = Field(f"{short_bytes(done)}/{short_bytes(total)}", W_SIZE)
    down = Field(f"{short_bytes(s.download_rate)}/s", W_RATE)
    up = labelled("up", f"{short_bytes(s.upload_rate)}/s", W_UP)
    eta = labelled("ETA", short_time(s.eta), W_ETA)
    return [
        [pct, size, down, up, eta, _peers(s, seeds=True)],
        [pct, size, down, up, eta, _peers(s, seeds=False)],
        [pct, size, down, eta, _peers(s, seeds=False)],
        [pct, size, down, eta],
        [pct, size, eta],
        [pct, size],
        [pct],
    ]


#: Index in :func:`downloading_variants` of the fields kept before a name is shortened.
ESSENTIAL = 3


def checking_variants(s: ProgressSnapshot) -> list[list[Field]]:
    """The fields of a torrent hashing the data it found, richest first."""
    frac = s.checked / s.num_pieces if s.num_pieces else 1.0
    label, pct = Field("checking", 8), Field(f"{100 * frac:.1f}%", W_PCT)
    good = Field(f"({plural(s.pieces_done, 'piece')} good so far)", len(f"({s.num_pieces} pieces good so far)"))
    return [[label, pct, good], [label, pct], [pct]]


def seeding_variants(s: ProgressSnapshot) -> list[list[Field]]:
    """The fields of a complete torrent that is seeding, richest first."""
    label = Field("seeding", 7)
    up = labelled("up", f"{short_bytes(s.upload_rate)}/s", W_UP)
    uploaded = labelled("uploaded", short_bytes(s.uploaded), 17)
    ratio = labelled("ratio", f"{s.ratio:.2f}", 11)
    leechers = Field(plural(s.leechers, "leecher"), 12, padded=plural(s.leechers, "leecher").ljust(12))
    peers = _peers(s, seeds=False)
    return [
        [label, up, uploaded, ratio, leechers, peers],
        [label, up, ratio, leechers, peers],
        [label, up, ratio, leechers],
        [label, up, ratio],
        [label, up],
        [label],
    ]


def finished_variants(s: ProgressSnapshot, verdict: str) -> list[list[Field]]:
    """The fields of a torrent that stopped for good (``verdict``: done, interrupted...), richest first."""
    done, total = done_total(s)
    word = Field(verdict, len(verdict))
    pct = Field(f"{100 * s.fraction:.1f}%", W_PCT)
    size = Field(f"{short_bytes(done)}/{short_bytes(total)}", W_SIZE)
    return [[word, pct, size], [word, pct], [word]]


def variants(s: ProgressSnapshot, verdict: str | None = None) -> list[list[Field]]:
    """The field sets for ``s`` in its state, richest first."""
    if verdict is not None:
        return finished_variants(s, verdict)
    if s.state == "checking":
        return checking_variants(s)
    if s.state in ("seeding", "done") and s.fraction >= 1.0:
        return seeding_variants(s)
    return downloading_variants(s)


def fields_width(fields: Sequence[Field], sep: str) -> int:
    """The room ``fields`` take at most, whatever the numbers."""
    return sum(f.width for f in fields) + len(sep) * (len(fields) - 1)


def render_fields(fields: Sequence[Field], sep: str, room: int | None) -> str:
    """``fields`` in their columns (``room`` None: unpadded, with the longer last field when there is one)."""
    if room is None:
        return sep.join([f.text for f in fields[:-1]] + [fields[-1].longer or fields[-1].text])
    head = sep.join(f.in_column() for f in fields[:-1])
    last = fields[-1]
    start = len(head) + len(sep) if head else 0
    tail = last.longer if last.longer and start + len(last.longer) <= room else last.text
    return (head + sep + tail if head else tail)[:room]


# --- layout ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where things go on a terminal line: the name column, the bar (0: none), the separator."""

    room: int
    name_width: int
    bar_width: int
    sep: str

    @property
    def core_room(self) -> int:
        """Columns left for the fields."""
        used = self.name_width + len(self.sep)
        if self.bar_width:
            used += self.bar_width + 2 + len(self.sep)
        return max(self.room - used, 0)


def choose_layout(width: int, name_length: int) -> Layout:
    """The layout of every line of a block on a ``width``-column terminal whose longest name has
    ``name_length`` characters; it depends on nothing else, so the bar never changes width as numbers do."""
    room = max(width - 1, 1)
    sample = downloading_variants(ProgressSnapshot("", "downloading", 0, 0, 0, 0))
    for index, fields in enumerate(sample):
        # The whole name first (two spaces between fields, else one); from the essential fields on, a
        # shortened name rather than fewer fields.
        tries = [("  ", name_length), (" ", name_length)]
        if index >= ESSENTIAL:
            tries.append((" ", min(name_length, MIN_NAME)))
        for sep, need in tries:
            free = room - fields_width(fields, sep) - 2 * len(sep) - 2  # left for the name and the bar
            if free - need >= MIN_BAR:
                name_width = min(name_length, free - MIN_BAR)
                return Layout(room, name_width, min(BAR_WIDTH, free - name_width), sep)
    for fields in sample[ESSENTIAL:]:  # too narrow for a bar
        free = room - fields_width(fields, " ") - 1
        if free >= min(name_length, MIN_NAME):
            return Layout(room, min(name_length, free), 0, " ")
    return Layout(room, min(name_length, max(room - W_PCT - 1, 1)), 0, " ")


def fit_name(name: str, width: int) -> str:
    """``name`` padded to ``width``; a longer one loses its middle to :data:`MARK` (its end, often an
    extension, stays)."""
    if len(name) <= width:
        return name.ljust(width)
    if width <= 2:
        return name[:width]
    tail = (width - 1) // 3
    return name[: width - 1 - tail] + MARK + (name[-tail:] if tail else "")


def bar(fraction: float, width: int) -> str:
    """``[#####-----]`` with ``width`` characters inside the brackets."""
    filled = min(max(int(fraction * width), 0), width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def progress_fraction(s: ProgressSnapshot, verdict: str | None = None) -> float:
    """What the bar shows: checking progress while checking, else the share of wanted data verified."""
    if s.state == "checking" and verdict is None:
        return s.checked / s.num_pieces if s.num_pieces else 1.0
    return s.fraction


def terminal_line(label: str, s: ProgressSnapshot, layout: Layout, verdict: str | None = None) -> str:
    """One line of the live block, laid out by ``layout``."""
    parts = [fit_name(label, layout.name_width)]
    if layout.bar_width:
        parts.append(bar(progress_fraction(s, verdict), layout.bar_width))
    room = layout.core_room
    options = variants(s, verdict)
    fields = next((f for f in options if fields_width(f, layout.sep) <= room), options[-1])
    parts.append(render_fields(fields, layout.sep, room))
    return layout.sep.join(parts)[: layout.room]


def plain_line(label: str, s: ProgressSnapshot, verdict: str | None = None) -> str:
    """``LABEL: FIELDS``, every field unpadded: the line printed when output is not a terminal."""
    return f"{label}: {render_fields(variants(s, verdict)[0], '  ', None)}"


def block_lines(items: Sequence[tuple[str, ProgressSnapshot, str | None]], width: int) -> list[str]:
    """``(label, snapshot, verdict)`` items as lines sharing one layout (names and bars aligned)."""
    if not items:
        return []
    layout = choose_layout(width, max(len(label) for label, _s, _v in items))
    return [terminal_line(label, s, layout, verdict) for label, s, verdict in items]


def status_line(s: ProgressSnapshot, width: int | None = None) -> str:
    """One torrent's line: for a ``width``-column terminal (with a bar), or plain (``width`` None)."""
    if width is None:
        return plain_line(s.name, s)
    return block_lines([(s.name, s, None)], width)[0]


# --- a session's total -----------------------------------------------------------------------------


def total_snapshot(snapshots: Sequence[ProgressSnapshot], name: str = "total") -> ProgressSnapshot:
    """The sum of several torrents' snapshots, as one snapshot (its ETA from the bytes left and the rates)."""
    done = sum(done_total(s)[0] for s in snapshots)
    wanted = sum(done_total(s)[1] for s in snapshots)
    rate = sum(s.download_rate for s in snapshots)
    left = wanted - done
    eta = left / rate if rate > 0 and left else (0.0 if not left else None)
    sources: Counter[str] = Counter()
    for s in snapshots:
        sources.update(s.peer_sources)
    return ProgressSnapshot(
        name=name, state=_total_state(snapshots), total_bytes=sum(s.total_bytes for s in snapshots),
        have_bytes=sum(s.have_bytes for s in snapshots), pieces_done=sum(s.pieces_done for s in snapshots),
        num_pieces=sum(s.num_pieces for s in snapshots), downloaded=sum(s.downloaded for s in snapshots),
        uploaded=sum(s.uploaded for s in snapshots), download_rate=rate,
        upload_rate=sum(s.upload_rate for s in snapshots), peers=sum(s.peers for s in snapshots),
        seeds=sum(s.seeds for s in snapshots), leechers=sum(s.leechers for s in snapshots), eta=eta,
        elapsed=max((s.elapsed for s in snapshots), default=0.0), checked=sum(s.checked for s in snapshots),
        wasted=sum(s.wasted for s in snapshots), peer_sources=dict(sources),
        wanted_bytes=wanted if any(s.wanted_bytes is not None for s in snapshots) else None,
        wanted_have_bytes=done,
    )


def _total_state(snapshots: Sequence[ProgressSnapshot]) -> str:
    if snapshots and all(s.state == "checking" for s in snapshots):
        return "checking"
    if all(s.fraction >= 1.0 for s in snapshots):
        return "seeding"
    return "downloading"
