"""The plugin contract of torrentcore: every hook, and every type a plugin is handed.

(About 600 lines, most of them documentation: docs/plugins.md is generated from this module.)

Plugins are modules or objects with functions marked ``@hookimpl`` whose
names match the hooks below. torrentcore finds them through the
``torrentcore`` entry-point group (the default plugins in ``plugins/`` are
registered exactly that way), or through ``-p MODULE`` (``--plugin``) on the
command line. A plugin is known by its entry-point name; ``--no-plugin NAME``
(``--disable``) blocks it. Entry points in the ``torrentcore.opt_in`` group
are installed but loaded only when asked for with ``-p NAME``. A plugin's
settings (:func:`torrentcore_plugin_settings`) reach it as
``options.plugin_settings[NAME][KEY]``. The guide for plugin authors is
``docs/plugins.md``.

There are three families:

* **piece selection** -- :func:`torrentcore_piece_strategies` offers named
  factories of :class:`PieceStrategy` objects; the user picks one with
  ``--strategy NAME`` (default ``rarest-first``);
* **storage** -- :func:`torrentcore_storage_backends` offers named factories
  of :class:`Storage` objects; the user picks one with ``--storage NAME``
  (default ``filesystem``);
* **progress reporting** -- every ``torrentcore_on_*`` hook is called on every
  registered plugin; none returns a value. Reporters must be quick: they run
  on the engine's event loop.

A reporter that prints for the user calls :func:`console_line`, which keeps the
console's live progress display intact.

Plugins can also speak their own peer-wire messages: :func:`torrentcore_extensions`
offers named BEP 10 extension messages (objects following :class:`Extension`,
talking to peers through :class:`ExtensionPeer`).

Everything a plugin needs is importable from this module, so a third-party
plugin can do anything a default one can. That includes the safe state-file
helpers of :mod:`torrentcore.statefile` (``state_dir``, ``read_state``,
``write_atomic``, ``decode_json``, ``keyed_name``, ``open_folder_under``,
``remove_state``, ``close_fd``, ``UnsafeStateFile``, ``UnsafePath``), which the filesystem
storage uses for its resume records and folders: never through a link we did
not create, never blocking on a FIFO.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import pluggy

from .bitfield import Bitfield
from .config import TorrentConfig
from .errors import BadInputError, StorageError
from .metainfo import FileEntry, Metainfo
from .statefile import (
    UnsafePath,
    UnsafeStateFile,
    close_fd,
    decode_json,
    keyed_name,
    open_folder_under,
    read_state,
    remove_state,
    state_dir,
    write_atomic,
)

if TYPE_CHECKING:  # pragma: no cover - only the command line builds a parser
    import argparse

__all__ = [
    "hookimpl",
    "hookspec",
    "Bitfield",
    "FileEntry",
    "Metainfo",
    "StorageError",
    "BadInputError",
    "SwarmView",
    "PieceStrategy",
    "WebSeedRuns",
    "StrategyFactory",
    "Storage",
    "StorageFactory",
    "Extension",
    "ExtensionPeer",
    "PeerInfo",
    "ProgressSnapshot",
    "Setting",
    "TorrentConfig",
    "UnsafePath",
    "UnsafeStateFile",
    "close_fd",
    "decode_json",
    "keyed_name",
    "open_folder_under",
    "read_state",
    "remove_state",
    "state_dir",
    "write_atomic",
    "console_line",
    "serve_console_lines",
    "ConsoleWriter",
]

PROJECT = "torrentcore"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: Size of a request block (BEP 3 convention; every client uses it).
BLOCK_SIZE = 16 * 1024


# --- types handed to plugins --------------------------------------------------------------------


class SwarmView(Protocol):
    """What the engine tells a piece strategy about the swarm (read-only).

    ``availability[i]`` is how many connected peers have piece ``i`` (counted
    from their bitfield and have messages; a read-only sequence). ``have`` is our verified pieces.
    ``partial`` holds pieces that are started (some blocks requested or
    received) but not verified; the engine's view also has ``partial_open`` (optional for other views:
    read it with ``getattr``), the started pieces that still have an unrequested block, a few where
    ``partial`` may hold thousands. ``version`` changes whenever availability or
    the set of started pieces changes in a way that can reorder a strategy's
    choices (a peer's bitfield arrives, a peer leaves, a piece fails its hash;
    not for a seed, which changes every piece alike), so a strategy may cache
    an ordering and rebuild it only when it changes (or keep it up to date
    with the optional ``PieceStrategy.availability_changed``).

    ``selected`` is the file selection of ``run --only/--skip`` as pieces: the
    pieces overlapping any selected file (``None`` when every file is
    selected). :meth:`wanted` already accounts for it, and the engine never
    requests a piece that is not wanted, so a strategy needs ``selected`` only
    to skip unselected pieces (a cursor, a window that should count only wanted
    pieces). The selection can change while the torrent runs (opening a file
    with a reader selects it): the engine then puts a new object in
    ``selected`` (it never changes one in place) and moves ``version``, so a
    strategy that skipped pieces for good starts over when ``selected`` is not
    the object it saw.

    Pieces that readers are waiting for (their read-ahead windows) are requested
    by the engine before the strategy is asked, whatever it yields: a strategy
    never needs to know about them.
    """

    num_pieces: int
    availability: Sequence[int]
    have: Bitfield
    partial: Mapping[int, object]
    endgame: bool
    version: int
    selected: Bitfield | None

    def wanted(self, index: int) -> bool:
        """True if piece ``index`` is still needed: selected, not verified, not being hash-checked."""


@runtime_checkable
class PieceStrategy(Protocol):
    """Decides which pieces to request blocks from, one peer at a time.

    Optional method (not part of the ``isinstance`` check; a strategy without it
    caches by ``SwarmView.version`` as before): ``availability_changed(pieces:
    Iterable[int], delta: int) -> None``. The engine calls it on the event loop
    whenever ``availability`` moves by ``delta`` (``+1`` or ``-1``) for each of
    ``pieces``: a HAVE (one piece), a peer's bitfield arriving or the peer
    leaving (its pieces). Seeds joining or leaving are not reported: they change
    every piece alike and reorder nothing. With it a strategy can keep its order
    up to date in O(1) per piece instead of rebuilding it (the default
    rarest-first does). Keep it cheap, and do not call back into the engine.

    A second optional method, ``web_seed_run``, decides what web seeds are
    asked for: see :class:`WebSeedRuns`.
    """

    def next_pieces(self, swarm: SwarmView, peer_has: Bitfield) -> Iterable[int]:
        """Yield piece indices to take blocks from for one peer, best first.

        Called whenever a peer has room in its request pipeline. The engine
        consumes the iterator lazily and stops as soon as it has enough blocks,
        taking the free (not yet requested) blocks of each yielded piece in
        offset order; yielding a piece that the peer lacks, that is verified or
        that has no free block is harmless. Keep it cheap: it runs on the event
        loop, many times a second on a fast swarm.
        """


@runtime_checkable
class WebSeedRuns(Protocol):
    """The optional method a :class:`PieceStrategy` implements to choose what web seeds fetch.

    Web seeds (BEP 19 ``url-list``, BEP 17 ``httpseeds``) have every piece and
    are asked for runs of consecutive pieces, one HTTP request per file a run
    touches, so the strategy is asked for a run rather than an order. A
    strategy without this method gets the engine's default: the first wanted,
    unstarted pieces in index order.
    """

    def web_seed_run(self, swarm: SwarmView, max_pieces: int) -> Sequence[int]:
        """Return consecutive piece indices (ascending, at most ``max_pieces``) for one web seed to fetch.

        Called on the event loop whenever one of a web seed's connections is
        idle (at most a few times a second per web seed while it downloads;
        not while it backs off after an error). ``swarm`` is the same
        :class:`SwarmView` ``next_pieces`` gets; ``max_pieces`` is at least 1.
        Pieces should be wanted (``swarm.wanted``) and not started (not in
        ``swarm.partial``): the engine claims every block of the returned
        pieces for the web seed, and cuts the answer at the first piece that
        breaks these rules (out of order, started, not wanted). Return an empty
        sequence when there is nothing to ask for: the engine then gives the web
        seed pieces that a failed request left half done, if any, else the web
        seed waits a moment and asks again. Not a hook: only the torrent's chosen strategy is asked
        (there is no ``firstresult`` question).
        """


#: ``factory(torrent, options) -> PieceStrategy``; ``options`` is the torrent's
#: :class:`~torrentcore.config.TorrentConfig` (the parameter keeps its old name so that plugins written
#: for the command line's options, which only read ``options.plugin_settings``, work unchanged).
StrategyFactory = Callable[[Metainfo, "TorrentConfig"], PieceStrategy]


@runtime_checkable
class Storage(Protocol):
    """Where a torrent's bytes live, addressed by piece (the model of anacrolix/torrent).

    The engine writes a piece only after its SHA-1 matched, then calls
    :meth:`mark_complete`. It reads only pieces that are complete (to upload
    them, or to check data that was already there). Raise
    :class:`StorageError` with a one-line message for failures the user must
    see (disk full, permission denied); the engine stops the torrent without
    marking the piece complete.

    Optional method (not part of the ``isinstance`` check; a storage without it
    behaves as before): ``check_finished() -> None``. When
    :meth:`completed_pieces` returned ``None``, the engine hashes the pieces of
    :meth:`pieces_with_data` and calls :meth:`mark_complete` for each good one;
    it calls ``check_finished()`` once that check ran to its end, and never if
    it was interrupted (Ctrl-C, SIGTERM, an error). A storage that keeps a
    completion record should not write one between :meth:`pieces_with_data` and
    ``check_finished()``: the pieces not hashed yet are unknown, not absent, and
    a record listing only the checked ones would make the next start trust it
    and download (or refuse to seed) data that is on disk.
    """

    def read(self, piece: int, offset: int, length: int) -> bytes:
        """Return ``length`` bytes at ``offset`` inside ``piece`` (missing data reads as zeros)."""

    def write(self, piece: int, offset: int, data: bytes | memoryview) -> None:
        """Store ``data`` at ``offset`` inside ``piece``; durable at least to the OS when it returns.

        ``data`` is only valid during the call (the engine reuses piece buffers): copy it to keep it.
        """

    def mark_complete(self, piece: int) -> None:
        """Record that ``piece`` is verified and fully written."""

    def mark_incomplete(self, piece: int) -> None:
        """Forget a completion record (the data was found bad)."""

    def completed_pieces(self) -> set[int] | None:
        """Pieces a trustworthy record (e.g. a resume file) says are complete, or ``None``.

        ``None`` means "no usable record": the engine then hashes every piece
        listed by :meth:`pieces_with_data`. Return ``None`` whenever the record
        could be stale (files changed since it was written, unclean exit).
        """

    def pieces_with_data(self) -> Iterable[int]:
        """Pieces that may hold data worth hashing at start (all of them if unsure)."""

    def flush(self) -> None:
        """Push buffered writes to the operating system."""

    def close(self) -> None:
        """Flush, save completion records, release files. Called once, also after errors."""


#: ``factory(torrent, save_path, options) -> Storage``; ``options`` is the torrent's
#: :class:`~torrentcore.config.TorrentConfig`.
StorageFactory = Callable[[Metainfo, str, "TorrentConfig"], Storage]


@runtime_checkable
class ExtensionPeer(Protocol):
    """A connected peer as an extension message handler sees it (see :class:`Extension`).

    ``address`` is the ``(host, port)`` we know it by; ``client`` its client name.
    ``extension_handshake`` is its BEP 10 handshake dictionary (``bytes`` keys, as
    decoded), or ``None`` before it arrived.
    """

    address: tuple[str, int]
    client: str
    extension_handshake: dict | None

    def supports_extension(self, name: str) -> bool:
        """True if the peer's extension handshake offered ``name`` (with a non-zero id)."""

    def send_extension(self, name: str, payload: bytes) -> bool:
        """Queue extension message ``name`` with ``payload`` (bytes after the id byte); False if unsupported."""

    def close(self, reason: str) -> None:
        """Drop the connection (for a peer that broke the extension's rules)."""


@runtime_checkable
class Extension(Protocol):
    """One BEP 10 extension message, such as ``ut_metadata`` or a plugin's own.

    The engine gives each extension a local message id, advertises it by name in
    the ``m`` dictionary of its extension handshake and routes incoming
    messages with that id to :meth:`on_message`. To send, call
    ``peer.send_extension(name, payload)``: the engine uses the id the *peer*
    chose for ``name``. Handlers run on the peer's greenlet: be quick, and raise
    :class:`~torrentcore.errors.ProtocolError` (or call ``peer.close``) to drop
    a misbehaving peer; any other exception drops the peer too and is logged.
    """

    def on_handshake(self, peer: ExtensionPeer, handshake: dict) -> None:
        """The peer's extension handshake arrived and offers this extension (``handshake``: its dict)."""

    def on_message(self, peer: ExtensionPeer, payload: bytes) -> None:
        """The peer sent this extension's message; ``payload`` is what follows the id byte."""


@dataclass
class PeerInfo:
    """A connected peer, as reporters see it.

    ``address`` is ``(host, port)``; the host may be an IPv6 address (write it as ``[host]:port``).
    ``source`` says where the engine learnt of the peer: ``"tracker"``, ``"dht"``, ``"pex"``,
    ``"incoming"`` (it connected to us), ``"manual"`` (``--peer``) or ``"magnet"`` (a magnet
    link's ``x.pe``). ``encrypted`` is True when the connection is RC4-encrypted (MSE/PE, ``--encryption``).
    """

    address: tuple[str, int]
    client: str = ""
    incoming: bool = False
    source: str = ""
    download_rate: float = 0.0
    upload_rate: float = 0.0
    downloaded: int = 0
    uploaded: int = 0
    is_seed: bool = False
    encrypted: bool = False
    #: The transport: ``tcp`` or ``utp`` (BEP 29).
    transport: str = "tcp"


@dataclass
class ProgressSnapshot:
    """The state of one torrent at one moment (sent about once a second).

    ``state`` is one of ``"checking"`` (hashing data found on disk; see
    ``checked``), ``"downloading"``, ``"seeding"``, ``"stopping"``, ``"done"``.
    Byte counts are for this session except ``have_bytes``/``total_bytes``.

    With a file selection (``run --only/--skip``), ``selected_files`` is how
    many of the torrent's data files (``torrent.data_files``) are selected,
    ``wanted_bytes`` the size of the pieces overlapping them and
    ``wanted_have_bytes`` how much of that is verified; the download is
    complete when those two are equal (:attr:`fraction` uses them). Without a
    selection ``selected_files`` and ``wanted_bytes`` are ``None``.
    """

    name: str
    state: str
    total_bytes: int
    have_bytes: int
    pieces_done: int
    num_pieces: int
    downloaded: int = 0
    uploaded: int = 0
    download_rate: float = 0.0
    upload_rate: float = 0.0
    peers: int = 0
    seeds: int = 0
    leechers: int = 0
    eta: float | None = None
    elapsed: float = 0.0
    checked: int = 0
    wasted: int = 0
    #: Connected peers by where they came from (see :attr:`PeerInfo.source`), e.g. ``{"tracker": 3}``.
    peer_sources: dict[str, int] = field(default_factory=dict)
    selected_files: int | None = None
    wanted_bytes: int | None = None
    wanted_have_bytes: int = 0
    #: Connected peers whose connection is RC4-encrypted (MSE/PE; see :attr:`PeerInfo.encrypted`).
    encrypted_peers: int = 0
    #: Connected peers over uTP (BEP 29; see :attr:`PeerInfo.transport`); the others are over TCP.
    utp_peers: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """Share of what we want (the torrent, or the selected files' pieces) that we have, 0.0 to 1.0."""
        if self.wanted_bytes is not None:
            return self.wanted_have_bytes / self.wanted_bytes if self.wanted_bytes else 1.0
        return self.have_bytes / self.total_bytes if self.total_bytes else 1.0

    @property
    def ratio(self) -> float:
        """Uploaded / downloaded in this session (uploaded / total when nothing was downloaded)."""
        base = self.downloaded or self.total_bytes
        return self.uploaded / base if base else 0.0


# --- printing for the user ----------------------------------------------------------------------

#: What :func:`serve_console_lines` installs: ``writer(line)`` shows one line (no newline in it).
ConsoleWriter = Callable[[str], None]

_console_writer: ConsoleWriter | None = None


def console_line(text: str) -> None:
    """Show ``text`` to the user as its own line(s), above the console's live progress display.

    Reporters call this instead of ``print``: on a terminal the console plugin
    keeps a block of progress lines redrawn in place, and a plain ``print``
    would land in the middle of it (and be overwritten). With the console
    plugin loaded (and not ``--quiet``), the console clears its block, writes
    the line where its own output goes (standard output; standard error with
    ``run -o -``) and draws the block again below it; off a terminal the line
    is simply written there. With no console serving (the plugin not loaded,
    ``--quiet``, no torrent started yet) the line goes to standard error. Each line of a
    multi-line ``text`` becomes a line of its own; a trailing newline is
    dropped. Call it from the event loop (a hook), not from another thread.
    Output errors (a closed pipe) are ignored.
    """
    writer = _console_writer
    for line in str(text).rstrip("\n").split("\n"):
        if writer is not None:
            writer(line)
        else:
            _write_stderr(line)


def serve_console_lines(writer: ConsoleWriter | None) -> ConsoleWriter | None:
    """For the plugin that owns the terminal: route :func:`console_line` to ``writer``; return the previous one.

    ``writer(line)`` is called once per line, without its newline, and must
    show it without disturbing what it draws (the default console plugin
    clears its progress block, writes the line and redraws the block).
    ``None`` sends lines back to standard error. Only one writer serves at a
    time: the last one installed wins. Reporters that only print never call this.
    """
    global _console_writer
    previous, _console_writer = _console_writer, writer
    return previous


def _write_stderr(line: str) -> None:
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):  # closed or missing stderr: nothing to tell the user with
        pass


# --- hooks: configuration ------------------------------------------------------------------------


@hookspec
def torrentcore_add_options(parser: argparse.ArgumentParser) -> None:
    """Add command-line options for this plugin.

    Called once per ``run``/``seed`` sub-command parser, before the command
    line is parsed (only the command line calls it; a script using the
    :class:`~torrentcore.Session` API passes values in ``TorrentConfig.extra``).
    The parsed values reach plugins as ``options.extra[DEST]`` in the
    ``options`` (the :class:`~torrentcore.config.TorrentConfig`) of factories
    and of :func:`torrentcore_on_start`. Returns nothing.

    Not ``firstresult``: every plugin that implements it is called.
    """


@dataclass(frozen=True)
class Setting:
    """One setting a plugin declares through :func:`torrentcore_plugin_settings`.

    ``type`` is ``str``, ``int``, ``float`` or ``bool``; values from the command
    line (``--plugin-opt NAME.KEY=VALUE``) and from the config file are
    converted to it (``bool`` accepts true/false, yes/no, on/off, 1/0) and a
    value that does not convert, or is not one of ``choices`` (when given), is
    refused with exit code 2. ``default`` is used when the user sets nothing
    (it may be ``None`` for "not set"). ``help`` is one line, shown by
    ``torrentcore plugins``.
    """

    type: type = str
    default: object = None
    help: str = ""
    choices: tuple | None = None


@hookspec
def torrentcore_plugin_settings() -> Mapping[str, Mapping[str, Setting]]:
    """Declare settings: ``{plugin name: {key: Setting}}``.

    Called once when the command line is parsed. The user sets values with
    ``--plugin-opt NAME.KEY=VALUE`` (repeatable) or in a ``[NAME]`` section of
    the config file; the command line wins. The plugin reads them from the
    ``options`` its factories and :func:`torrentcore_on_start` receive:
    ``options.plugin_settings[NAME][KEY]`` (every declared key is present,
    holding its default when the user set nothing). Use the plugin's
    entry-point name as ``NAME``; one plugin may declare several names (the
    default strategies plugin could declare ``sequential``), and two plugins
    declaring the same name is an error.

    Not ``firstresult``: every plugin's mapping is collected and merged.
    """


# --- hooks: piece selection ----------------------------------------------------------------------


@hookspec
def torrentcore_piece_strategies() -> Mapping[str, StrategyFactory]:
    """Offer piece-selection strategies by name.

    Called once when the plugin manager is set up. Return a mapping of
    strategy name to factory; the results of all plugins are merged, and two
    plugins offering the same name is an error. The factory of the strategy
    the user chose is called once per torrent.

    Not ``firstresult``: every plugin's mapping is collected and merged.
    """


# --- hooks: storage ------------------------------------------------------------------------------


@hookspec
def torrentcore_storage_backends() -> Mapping[str, StorageFactory]:
    """Offer storage backends by name.

    Called once when the plugin manager is set up. Return a mapping of
    backend name to factory; merged across plugins like strategies. The
    chosen factory is called once per torrent with the torrent, the download
    folder and the options, and must return an open :class:`Storage`.

    Not ``firstresult``: every plugin's mapping is collected and merged.
    """


# --- hooks: extension messages (BEP 10) ----------------------------------------------------------


@hookspec
def torrentcore_extensions(torrent: Metainfo) -> Mapping[str, Extension]:
    """Offer extension-protocol (BEP 10) messages for ``torrent``.

    Called once per torrent when it starts, before any peer connects. Return
    a mapping of extension name (as it appears in the handshake's ``m``
    dictionary, e.g. ``"lt_donthave"`` or ``"myorg_chat"``) to an
    :class:`Extension` object, which then serves every peer of that torrent.
    Names the engine implements itself (``ut_metadata``, ``ut_pex``) and names
    offered by two plugins are an error. Return ``{}`` (or nothing) to add none.

    Not ``firstresult``: every plugin's mapping is collected and merged.
    """


# --- hooks: progress reporting -------------------------------------------------------------------


@hookspec
def torrentcore_on_start(torrent: Metainfo, save_path: str, options: TorrentConfig) -> None:
    """A torrent is starting (before data is checked); ``options`` is its
    :class:`~torrentcore.config.TorrentConfig` (``options.plugin_settings``,
    ``options.extra``, ``options.storage``, ``options.selected_files``...).
    ``save_path`` is ``"-"`` when the data goes to standard output. A session
    with several torrents calls it once per torrent. Returns nothing.

    Not ``firstresult``: every plugin that implements it is called.
    """


@hookspec
def torrentcore_on_progress(torrent: Metainfo, snapshot: ProgressSnapshot) -> None:
    """About once a second while the torrent runs, including while checking. Returns nothing.

    A running torrent with no peer connected is reported only when something a snapshot shows changed
    since its last report (its state, pieces, bytes moved, rates, the selection; ``elapsed`` and ``eta``
    alone do not count): an idle seeder is reported once, when it goes quiet (its rates back at zero),
    and again when it next changes. With a peer connected, and while checking, it is reported every
    second. The last state always comes with :func:`torrentcore_on_finish`.

    Not ``firstresult``: every plugin that implements it is called.
    """


@hookspec
def torrentcore_on_piece_verified(torrent: Metainfo, index: int) -> None:
    """Piece ``index`` matched its hash and is on disk (downloaded or found at start). Returns nothing.

    Not ``firstresult``: every plugin that implements it is called.
    """


@hookspec
def torrentcore_on_piece_failed(torrent: Metainfo, index: int, peers: Sequence[tuple[str, int]]) -> None:
    """Piece ``index`` failed its hash; ``peers`` sent its blocks. It will be downloaded again.

    A web seed that sent blocks of it is listed as ``(URL, 0)``.

    Not ``firstresult``: every plugin that implements it is called.
    """


@hookspec
def torrentcore_on_peer_connected(torrent: Metainfo, peer: PeerInfo) -> None:
    """A peer finished the handshake. Returns nothing.

    Not ``firstresult``: every plugin that implements it is called.
    """


@hookspec
def torrentcore_on_peer_lost(torrent: Metainfo, peer: PeerInfo, reason: str) -> None:
    """A connection to a peer ended; ``reason`` is a short text. Returns nothing.

    Not ``firstresult``: every plugin that implements it is called.
    """


@hookspec
def torrentcore_on_completed(torrent: Metainfo, snapshot: ProgressSnapshot) -> None:
    """Every piece is verified and written. Seeding may follow. Returns nothing.

    Not ``firstresult``: every plugin that implements it is called.
    """


@hookspec
def torrentcore_on_error(torrent: Metainfo | None, message: str, fatal: bool) -> None:
    """Something went wrong. ``fatal`` errors end the run; others (a tracker down) are warnings.

    Not ``firstresult``: every plugin that implements it is called.
    """


@hookspec
def torrentcore_on_finish(torrent: Metainfo, snapshot: ProgressSnapshot, exit_code: int) -> None:
    """The torrent stopped for good (done, interrupted or failed); the last call for it.

    Not ``firstresult``: every plugin that implements it is called.
    """
