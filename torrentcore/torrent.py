"""One torrent inside a session: its state, its collaborators, and its life from check to shutdown.

A :class:`Torrent` owns the storage backend and piece strategy chosen through plugins, the
:class:`~torrentcore.piecemanager.PieceManager`, and one collaborator per job, each in a file named
after it:

* :class:`~torrentcore.verifier.Verifier`: the start-up check and hash-then-store of every piece;
* :class:`~torrentcore.peer_list.PeerList`: addresses to dial, back-off, bans, ourselves, known seeds;
* :class:`~torrentcore.swarm.Swarm`: connected peers, admission, the connect loop;
* :class:`~torrentcore.announcer.Announcer`: trackers and the DHT;
* :class:`~torrentcore.piece_outcome.PieceOutcome`: what follows a piece's hash check (stored, failed,
  a trusted piece found bad), smart ban included;
* :class:`~torrentcore.completion.Completion`: when the download counts as complete (a hybrid's piece
  layers may hold it back), what follows, and when seeding is done;
* :class:`~torrentcore.progress_reports.ProgressReports`: the progress snapshots and when a tick sends one;
* :class:`~torrentcore.network_run.NetworkRun`: what starts when the torrent goes online and stops after;
* :class:`~torrentcore.periodic.PeriodicWork`: the once-a-second work while the network runs;
* :class:`~torrentcore.choker.Choker`, :class:`~torrentcore.stats.TransferStats`.

Peers see the torrent only through a :class:`~torrentcore.peer.ports.TorrentPort` built here from
those parts. What the torrent takes from its session (thread pool, global limits and connection
cap, DHT node, listen port, plugins) arrives as one :class:`SessionServices`.

Life: ``start()`` runs :meth:`Torrent._main` in a greenlet: wait while paused, check the data, then run
the network (loops below) until complete-and-done-seeding, stopped or failed; ``pause()`` stops the
network and keeps the state; ``resume()`` starts it again; ``stop()`` ends it for good.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event
import structlog

from . import __version__
from .announcer import Announcer, AnnounceState
from .bitfield import Bitfield
from .choker import Choker
from .completion import Completion, CompletionCalls
from .config import TorrentConfig
from .errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNTIME, StorageError
from .events import Event, Paused, Reporter, Resumed
from .hookspec import ProgressSnapshot
from .metainfo import Metainfo
from .network_run import NetworkCalls, NetworkRun
from .peer import handshake
from .peer import messages as msg
from .peer.extensions import ExtensionRegistry
from .peer_list import PeerList
from .periodic import PeriodicCalls, PeriodicWork
from .piece_outcome import OutcomeCalls, PieceOutcome
from .piecemanager import Piece, PieceManager
from .progress_reports import ProgressCalls, ProgressReports
from .ratelimit import RateLimits, TokenBucket
from .seeding import SeedingLimits
from .selection import select_files, wanted_pieces
from .stats import TransferStats, left_bytes
from .swarm import ConnectionSlots, Swarm
from .ticker import Ticker
from .tracker import TrackerTiers
from .verifier import Verifier
from .webseed import WebSeeds

if TYPE_CHECKING:  # pragma: no cover
    from .layer_recheck import LayerRecheck
    from .piece_layers import PieceLayers

log = structlog.get_logger(__name__)

#: Most seconds a shutdown waits for pieces being hashed or written (one piece each, at most 16).
SHUTDOWN_VERIFY_WAIT = 10.0

_RESERVED = msg.reserved_bytes(msg.RESERVED_EXTENSIONS, msg.RESERVED_FAST)
_RESERVED_DHT = bytes(a | b for a, b in zip(_RESERVED, msg.reserved_bytes(msg.RESERVED_DHT)))


@dataclass
class SessionServices:
    """What a torrent gets from its session (shared by all the session's torrents)."""

    peer_id: bytes
    hooks: Any  #: the plugin manager's hooks, reporters contained (:class:`torrentcore.plugins.ContainedHooks`)
    strategy_factory: Callable[..., Any]
    storage_factory: Callable[..., Any]
    pool: Any  #: the thread pool for hashing and disk work
    download_limit: TokenBucket
    upload_limit: TokenBucket
    slots: ConnectionSlots
    listen_port: Callable[[], int]
    dht: Any | None
    pex: bool
    emit: Callable[[Event], None]
    #: MSE/PE policy for every connection: prefer, require or disable.
    encryption: str = "prefer"
    dial: Callable[..., handshake.Handshaken] = handshake.dial
    #: The session's clock (one greenlet ticks every torrent); None: the torrent gets one of its own.
    ticker: Ticker | None = None


class _PeerPort:
    """The :class:`~torrentcore.peer.ports.TorrentPort` of one torrent: only what peers may use."""

    version = __version__

    def __init__(self, torrent: Torrent) -> None:
        self.meta = torrent.meta
        self.have = torrent.have
        self.manager = torrent.manager
        self.peers: dict = {}
        self.download_limit = torrent.download_limit
        self.upload_limit = torrent.upload_limit
        self.dht_port = torrent.dht.port if torrent.dht is not None else None
        self.encryption = torrent.services.encryption
        self._listen_port = torrent.services.listen_port
        stats = torrent.stats
        self.block_arrived = stats.block_arrived
        self.block_uploaded = stats.block_uploaded
        self.stats_wasted = stats.stats_wasted
        self.read_block = torrent.read_block
        self.layers = torrent.layers
        self.layers_complete = torrent.layers_complete
        self.wake_requesters: Callable[[], None] = lambda: None  # the swarm's, once it exists
        self.interest_changed: Callable[[Any], None] = lambda peer: None  # the choker's
        #: A complete piece to hash and store: the torrent's :class:`~torrentcore.piece_outcome.PieceOutcome`'s.
        self.verify_piece: Callable[[Piece], None]

    @property
    def listen_port(self) -> int:
        return self._listen_port()


class Torrent:
    """One torrent of a session (see the module docstring).

    What is here: the torrent's life cycle (start, pause, recheck, stop, shutdown) and the wiring of its
    collaborators; every job with rules of its own lives in the collaborator's module, and what is left is the
    order they are called in and the state they share (``state``, ``exit_code``, ``seeding_stopped``), read
    and written by reporters, the handle and the daemon.
    """

    def __init__(self, meta: Metainfo, save_path: str, config: TorrentConfig, services: SessionServices) -> None:
        self.meta = meta
        self.save_path = save_path
        self.config = config
        self.services = services
        self.log = log.bind(torrent=meta.name, info_hash=meta.info_hash_hex)
        self.reporter = Reporter(services.hooks, meta, meta.info_hash, services.emit)
        #: The session's DHT node, or None; private torrents (BEP 27) never use it.
        self.dht = services.dht if not meta.private else None
        self.have = Bitfield(meta.num_pieces)
        if config.selected_files is None and (config.only or config.skip):
            # Patterns (run --only/--skip), resolved now that the files are known; matching nothing is bad input.
            chosen = select_files(meta, config.only, config.skip)
            config = self.config = replace(config, selected_files=None if chosen is None else tuple(chosen))
        self.selected_files = list(config.selected_files) if config.selected_files is not None else None
        self.selected = wanted_pieces(meta, self.selected_files)
        self.storage = services.storage_factory(meta, save_path, config)
        self.strategy = services.strategy_factory(meta, config)
        self.manager = PieceManager(meta, self.have, self.strategy, self.selected)
        self.stats = TransferStats()
        self.download_limit = RateLimits(TokenBucket(config.max_download_rate), services.download_limit)
        self.upload_limit = RateLimits(TokenBucket(config.max_upload_rate), services.upload_limit)
        self.verifier = Verifier(meta, self.storage, self.have, services.pool, self._stopping, self._checked_good)
        self.layers: PieceLayers | None = None
        #: Checks the pieces held for want of a piece layer when it arrives (None: every layer is known).
        self.layer_recheck: LayerRecheck | None = None
        if meta.v2:  # BEP 52's modules are imported for v2 and hybrid torrents only (start-up of a v1 run)
            from .layer_recheck import LayerRecheck
            from .piece_layers import PieceLayers

            self.layers = PieceLayers(meta)
            if not self.layers.complete:
                self.layer_recheck = LayerRecheck(
                    meta, self.layers, self.verifier, self.have, lambda: self.manager,
                    lambda index: self.outcome.held_piece_good(index),
                    lambda index: self.outcome.trusted_piece_bad(index), lambda: self.swarm.wake_requesters(),
                    lambda fn: gevent.spawn(self._guard, fn), self._stopping,
                    settled=lambda: self.completion.layers_settled())
        self.port = _PeerPort(self)
        self.peer_list = PeerList(services.listen_port, on_new=lambda: self.swarm.connect_now.set())
        reserved = _RESERVED_DHT if self.dht else _RESERVED
        if meta.v2:  # BEP 52: we speak v2 (hash request / hashes / hash reject) for this torrent
            reserved = bytes(a | b for a, b in zip(reserved, msg.reserved_bytes(msg.RESERVED_V2)))
        identity = handshake.Identity(meta.info_hash, services.peer_id, reserved)
        self.swarm = Swarm(self.port, self.peer_list, identity, config.max_peers, services.slots, self.reporter,
                           complete=lambda: self.completion.done_downloading(), may_connect=self._may_connect,
                           name=meta.name, dial=services.dial, encryption=services.encryption)
        self.swarm.connect_interval = None  # woken by new candidates and by PeriodicWork's ticks
        if meta.hybrid and self.layer_recheck is not None:
            # Piece layers come only over connections made with the v2 hash (see Swarm.run_peer): dial with it
            # while they are missing; a peer that refused it (a v1-only client) is dialled with the v1 hash next.
            self.swarm.alt_identity = replace(identity, info_hash=meta.info_hashes[1])
            self.swarm.use_alt = lambda: not self.layers.complete
        self.choker = Choker(self.swarm, slots=config.upload_slots, total_length=meta.total_length)
        self.port.wake_requesters = self.swarm.wake_requesters
        self.port.interest_changed = self.choker.peer_interest_changed
        self.swarm.on_peer_lost = self._peer_lost
        self.webseeds = WebSeeds(meta, self.port, self._warn, enabled=config.web_seeds)
        self.outcome = PieceOutcome(
            OutcomeCalls(manager=lambda: self.manager, stopping=self._stopping,
                         completed=lambda: self.completion.on_complete(),
                         incomplete_again=lambda: self.completion.incomplete_again(), guard=self._guard),
            self.verifier, self.swarm, self.webseeds, self.reporter, self.stats.piece_corrupt, self.log)
        self.port.verify_piece = self.outcome.verify_piece
        self.extensions = ExtensionRegistry.for_torrent(
            meta, self.swarm, services.hooks.torrentcore_extensions(torrent=meta), pex=services.pex)
        self.swarm.extensions = self.extensions
        self.announcer = Announcer(self._announce_state(), TrackerTiers(meta.trackers) if meta.trackers else None,
                                   self.dht, meta.name, encryption=services.encryption)
        self.state = "paused" if config.paused else "queued"
        self.started_at = time.monotonic()
        self.exit_code: int | None = None
        self.error: str | None = None
        self.seeding_stopped = False
        self._done = gevent.event.Event()
        self._unpaused = gevent.event.Event()
        if not config.paused:
            self._unpaused.set()
        self._pause_requested = gevent.event.Event()
        self._main_greenlet: gevent.Greenlet | None = None
        self.seeding_limits = SeedingLimits(config, meta.data_length)  # pad bytes are never uploaded
        self.completion = Completion(
            CompletionCalls(complete=lambda: self.complete, config=lambda: self.config, set_state=self._set_state,
                            confirm_trusted=self.outcome.confirm_trusted, snapshot=self.snapshot, finish=self._finish),
            self.layer_recheck, self.verifier, self.stats, self.swarm, self.announcer, self.reporter,
            self.seeding_limits, self.started_at, self.log)
        self.progress = ProgressReports(
            ProgressCalls(state=lambda: self.state, running=lambda: self.exit_code is None,
                          selection=lambda: (self.selected, self.selected_files),
                          checked=lambda: self.verifier.checked, seeding_stopped=lambda: self.seeding_stopped,
                          emit=self.reporter.emit),
            meta, self.have, self.stats, self.swarm.peers, self.started_at)
        self.periodic = PeriodicWork(
            PeriodicCalls(guard=self._guard, complete=lambda: self.complete, finish=self._finish),
            services.ticker if services.ticker is not None else Ticker(), self.progress, self.stats,
            self.swarm, self.peer_list, self.choker, self.announcer, self.completion, self.layers,
            self.layer_recheck, self.reporter)
        self._recheck = False
        #: Set while the network runs (peers are taken); an incoming peer that arrives during the check waits.
        self.network_up = gevent.event.Event()
        self.network = NetworkRun(
            NetworkCalls(guard=self._guard, manual_peers=lambda: self.config.peers, complete=lambda: self.complete,
                         completed=lambda: self.completed_at is not None, snapshot=self.snapshot),
            self.network_up, self.periodic, self.swarm, self.peer_list, self.extensions, self.announcer, self.dht,
            self.webseeds, self.reporter)
        #: Called once a v2 torrent's piece layers fetched from peers are complete (the handle saves them).
        self.on_layers_complete: Callable[[], None] | None = None

    # --- what peers and collaborators call -------------------------------------------------------

    @property
    def peers(self) -> dict:
        """Connected peers by address."""
        return self.swarm.peers

    @property
    def complete(self) -> bool:
        """Every wanted piece is verified (all of them, or those of the selected files)."""
        return self.manager.complete

    @property
    def completed_at(self) -> float | None:
        """When the download completed (monotonic clock); None while it downloads (:mod:`torrentcore.completion`)."""
        return self.completion.completed_at

    @completed_at.setter
    def completed_at(self, when: float | None) -> None:
        self.completion.completed_at = when

    def _set_state(self, state: str) -> None:
        self.state = state

    def add_peers(self, addresses, source: str = "tracker") -> int:
        """Learn peer addresses; ``source`` says where they came from."""
        return self.peer_list.add(addresses, source)

    def add_trackers(self, tiers: list[list[str]]) -> None:
        """More tracker tiers (a second source for the same info-hash); used from the next announce on."""
        self.meta.trackers.extend(tiers)
        self.announcer.tiers = TrackerTiers(self.meta.trackers)

    def select_files(self, indices: tuple[int, ...] | None) -> None:
        """Download only these data files (None: all); pieces in flight are kept."""
        self.selected_files = list(indices) if indices is not None else None
        self.manager.set_wanted(wanted_pieces(self.meta, self.selected_files))
        self.selected = self.manager.selected
        if not self.complete:
            self.completed_at = None
            if self.state == "seeding":
                self.state = "downloading"
            for peer in list(self.peers.values()):
                if not peer.am_interested and self.manager.interesting(peer.has):
                    peer.set_interested(True)
            self.swarm.connect_now.set()
            if self.network_up.is_set():
                self.webseeds.start_workers(self.network.spawn)  # their loops ended when the selection was complete
        elif self.completed_at is None and self.state == "downloading":
            self.completion.on_complete()
        self.swarm.wake_requesters()

    def read_block(self, index: int, begin: int, length: int) -> bytes | None:
        """A block of a verified piece, for uploading (None if not verified or the read failed)."""
        if not self.have[index]:
            return None
        try:
            if index in self.verifier.unconfirmed and not self.verifier.confirm(index):
                self.outcome.trusted_piece_bad(index)
                return None
            return self.verifier.read(index, begin, length)
        except StorageError as exc:
            self.fail(str(exc))
            return None

    def _warn(self, message: str) -> None:
        self.reporter.emit("error", message=message, fatal=False)

    def layers_complete(self) -> None:
        """Every v2 piece layer is known (fetched from peers): a v2-only download can start."""
        self.log.info("piece layers complete", files=len(self.meta.piece_layers))
        self.swarm.wake_requesters()
        if self.on_layers_complete is not None:
            try:
                self.on_layers_complete()
            except OSError as exc:
                self.log.warning("cannot save the piece layers", error=str(exc))

    def _checked_good(self, index: int) -> None:
        self.reporter.emit("piece_verified", index=index)

    def _peer_lost(self, peer) -> None:
        if self.choker.optimistic is peer:
            self.choker.optimistic = None
        if not peer.am_choking:
            # Its upload slot is free: give it to a waiting peer now, not at the next round (libtorrent agrees).
            self.choker.rechoke()

    # --- life ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Run the torrent in its own greenlet (returns at once)."""
        if self._main_greenlet is None:
            self._main_greenlet = gevent.spawn(self._main)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the torrent has stopped for good; False on timeout."""
        if self._main_greenlet is None:
            return self._done.wait(timeout)
        self._main_greenlet.join(timeout)
        return self._main_greenlet.dead

    def stop(self, exit_code: int = EXIT_INTERRUPTED) -> None:
        """End the torrent (Ctrl-C, SIGTERM, removal). Stopping a completed download's seeding is success."""
        if self.exit_code is None:
            if exit_code != EXIT_OK and self.completed_at is not None and self.error is None:
                self.seeding_stopped = True
                exit_code = EXIT_OK
            self.exit_code = exit_code
        self._done.set()
        self._unpaused.set()

    def fail(self, message: str) -> None:
        """A fatal error: report it and stop with exit code 1."""
        if self.exit_code is None:
            self.error = message
            self.exit_code = EXIT_RUNTIME
            self.log.info("stopping on a fatal error", error=message)
            self.reporter.emit("error", message=message, fatal=True)
        self._done.set()
        self._unpaused.set()

    def pause(self) -> None:
        """Stop all network activity and keep the state (a paused torrent is resumed with :meth:`resume`)."""
        self._unpaused.clear()
        self._pause_requested.set()

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        self._pause_requested.clear()
        self._unpaused.set()

    def recheck(self) -> None:
        """Hash the data on disk again (ignoring the resume record), then go on."""
        self._recheck = True
        self._pause_requested.set()

    @property
    def accepts_peers(self) -> bool:
        """The network runs: incoming connections for this torrent are taken."""
        return self.network_up.is_set() and self.exit_code is None

    @property
    def may_take_peers_soon(self) -> bool:
        """Running and not paused: an incoming peer may wait for the check to finish."""
        return self.exit_code is None and self._unpaused.is_set()

    @property
    def paused(self) -> bool:
        """Paused by :meth:`pause` (and not stopped)."""
        return not self._unpaused.is_set() and self.exit_code is None

    def _stopping(self) -> bool:
        return self.exit_code is not None

    def _may_connect(self) -> bool:
        return not (self.completion.done_downloading() and not self.completion.should_seed())

    def _main(self) -> None:
        self.reporter.emit("start", save_path=self.save_path, options=self.config)
        try:
            self._wait_unpaused()
            if self.exit_code is None:
                self._check()
            while self.exit_code is None:
                if self.completion.done_downloading() and not self.completion.should_seed():
                    self._finish(EXIT_OK)
                    break
                self._run_network()
                if self.exit_code is None and self._recheck:
                    self._recheck = False
                    self._check(force=True)
                elif self.exit_code is None:
                    self._wait_unpaused()
        except StorageError as exc:
            self.fail(str(exc))
        except (KeyboardInterrupt, gevent.GreenletExit):
            if self.exit_code is None:
                self.exit_code = EXIT_INTERRUPTED
        finally:
            self._shutdown()

    def _wait_unpaused(self) -> None:
        if not self._unpaused.is_set():
            self.state = "paused"
            self.reporter.event(Paused)
            self._unpaused.wait()
            if self.exit_code is None:
                self.reporter.event(Resumed)

    def _check(self, force: bool = False) -> None:
        self.state = "checking"
        if force:
            for i in list(self.have.indices()):
                self.have.clear(i)
            self.verifier.checked = 0
            self.completed_at = None
        reporter = gevent.spawn(self.progress.report_loop)
        try:
            finished = self.verifier.check_existing(force=force)
        finally:
            reporter.kill()
        if not finished:
            return
        self.manager = PieceManager(self.meta, self.have, self.strategy, self.selected)
        self.port.manager = self.manager
        self.state = "seeding" if self.complete else "downloading"
        if self.complete and not self.completion.holds_completion():
            self.completed_at = time.monotonic()
        if self.config.seed_only and not self.complete:
            # ``torrentcore seed`` never downloads: incomplete or corrupt data is an error.
            self.fail(f"the data in {self.save_path} is incomplete "
                      f"({self.have.count}/{self.meta.num_pieces} pieces verified)")

    def _run_network(self) -> None:
        """Run peers, trackers and loops until done, stopped, or asked to pause/recheck."""
        self._pause_requested.clear()
        if not self._unpaused.is_set():
            return
        self.state = "seeding" if self.complete else "downloading"
        self.network.start()
        waiters = [self._done, self._pause_requested]
        gevent.wait(waiters, count=1)
        self.network.stop()

    def _guard(self, fn, *args) -> None:
        """Run a background loop; an unexpected exception is fatal, never silent."""
        try:
            fn(*args)
        except gevent.GreenletExit:
            raise
        except StorageError as exc:
            self.fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - last line of defence for a background greenlet
            self.log.exception("internal error", where=getattr(fn, "__name__", "?"))
            self.fail(f"internal error in {getattr(fn, '__name__', '?')}: {exc!r}")

    def _finish(self, code: int) -> None:
        if self.exit_code is None:
            self.exit_code = code
        self._done.set()

    # --- state for reporters and trackers ---------------------------------------------------------

    def left(self) -> int:
        """Bytes of wanted pieces not verified yet."""
        return left_bytes(self.meta, self.have, self.selected)

    def _announce_state(self) -> AnnounceState:
        stats = self.stats
        return AnnounceState(
            info_hash=self.meta.info_hash, peer_id=self.services.peer_id, listen_port=self.services.listen_port,
            uploaded=lambda: stats.uploaded, downloaded=lambda: stats.downloaded, left=self.left,
            complete=lambda: self.completion.done_downloading(), peer_count=lambda: len(self.peers),
            has_waiting_candidates=self.peer_list.waiting, add_peers=self.peer_list.add,
            warn=lambda message: self.reporter.emit("error", message=message, fatal=False),
            other_hashes=self.meta.info_hashes[1:])

    def snapshot(self) -> ProgressSnapshot:
        """The torrent's state now, for reporters."""
        return self.progress.snapshot()

    # --- shutdown ----------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        self.network.stop()
        # Pieces being hashed or written finish first (a stop lets no new write start): every piece the
        # storage records is then counted in the final snapshot.
        self.verifier.wait_idle(SHUTDOWN_VERIFY_WAIT)
        if self.exit_code not in (None, EXIT_OK) and self.error is None and self.complete:
            # The pieces checked or stored while stopping completed the data (a small torrent stopped during
            # its start-up check, a download stopped on its last piece): a stopped seed, which is success.
            self.seeding_stopped = True
            self.exit_code = EXIT_OK
        self.webseeds.close()
        try:
            self.verifier.close()
        except StorageError as exc:
            if self.exit_code in (None, EXIT_OK):
                self.fail(str(exc))
        if self.exit_code is None:
            self.exit_code = EXIT_RUNTIME
        self.state = "error" if self.error else "done"
        self.reporter.emit("finish", snapshot=self.snapshot(), exit_code=self.exit_code)
        self._done.set()


__all__ = ["Torrent", "SessionServices"]
