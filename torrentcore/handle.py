"""What a script holds for one torrent of a session: :class:`TorrentHandle`, and frozen status snapshots.

A handle stays valid for the torrent's whole life, including before a magnet link's metadata has
arrived (state ``"metadata"``, fetched by :class:`~torrentcore.magnet_fetch.MagnetFetch`) and after it
stopped (its last status is kept). Every method blocks
only the calling greenlet.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import gevent
import gevent.event
import structlog

from . import metainfo
from .errors import EXIT_INTERRUPTED, EXIT_OK, BadInputError, TorrentcoreError
from .events import Removed

if TYPE_CHECKING:  # pragma: no cover
    from .config import TorrentConfig
    from .events import Event
    from .magnet import Magnet
    from .magnet_fetch import MagnetFetch
    from .metainfo import Metainfo
    from .torrent import Torrent


class SessionPort(Protocol):
    """What a handle needs of its session (the :class:`~torrentcore.Session` provides it)."""

    peer_id: bytes
    port: int
    encryption: str
    dialer: Any  #: :class:`~torrentcore.transport.Dialer` (``connect`` opens uTP or TCP streams)

    def dht_node(self) -> Any: ...

    def _make_torrent(self, meta: Metainfo, save_path: str, config: TorrentConfig) -> Torrent: ...

    def _forget(self, handle: TorrentHandle) -> None: ...

    def _emit(self, event: Event) -> None: ...

log = structlog.get_logger(__name__)


class TorrentFailed(TorrentcoreError):
    """The torrent stopped on a fatal error (``status.error`` says which)."""


@dataclass(frozen=True)
class TorrentStatus:
    """One torrent at one moment. Rates in bytes per second; byte totals for this session except
    ``have_bytes``. ``state``: metadata, queued, paused, checking, downloading, seeding, done, error."""

    name: str
    info_hash: str
    state: str
    progress: float
    total_bytes: int
    wanted_bytes: int
    have_bytes: int
    pieces_done: int
    num_pieces: int
    download_rate: float
    upload_rate: float
    downloaded: int
    uploaded: int
    peers: int
    seeds: int
    eta: float | None
    save_path: str
    error: str | None = None
    exit_code: int | None = None
    #: Seconds (this session) during which peers waited because complete pieces were queued for their hash
    #: check and write faster than the storage took them: the disk, not the network, was the limit then.
    storage_stalled: float = 0.0

    @property
    def complete(self) -> bool:
        """Every wanted piece is verified."""
        return self.num_pieces > 0 and self.progress >= 1.0


@dataclass(frozen=True)
class SessionStatus:
    """Totals of a session at one moment."""

    torrents: int
    download_rate: float
    upload_rate: float
    downloaded: int
    uploaded: int
    peers: int
    listen_port: int
    dht_nodes: int


@dataclass
class Loaded:
    """A torrent source read: its metainfo, or for a magnet link only what the link says."""

    info_hash: bytes
    name: str
    trackers: list[list[str]]
    meta: Metainfo | None = None
    magnet: Magnet | None = None


def load_source(source: Any) -> Loaded:
    """Read a .torrent path, a .torrent's bytes or a ``magnet:`` link. Raises BadInputError (exit 2)."""
    from .magnet import is_magnet, parse_magnet

    if isinstance(source, metainfo.Metainfo):
        return Loaded(source.info_hash, source.name, source.trackers, meta=source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        meta = metainfo.parse(bytes(source))
        return Loaded(meta.info_hash, meta.name, meta.trackers, meta=meta)
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str):
        raise BadInputError(f"a torrent is a path, its bytes or a magnet link, not {type(source).__name__}")
    if is_magnet(source):
        magnet = parse_magnet(source)
        return Loaded(magnet.info_hash, magnet.name or magnet.info_hash_hex, magnet.trackers, magnet=magnet)
    meta = metainfo.load(source)
    return Loaded(meta.info_hash, meta.name, meta.trackers, meta=meta)


class TorrentHandle:
    """A torrent in a :class:`~torrentcore.Session` (returned by ``session.add_torrent``).

    It is the whole public surface of one torrent (life cycle, status, files, limits, moving and renaming
    data, what the daemon's RPC reads), each method a thin, documented step onto the engine; the steps of
    moving and renaming data on disk live in :mod:`torrentcore.data_move`, the fetch of a magnet link's
    metadata in :mod:`torrentcore.magnet_fetch`.
    """

    def __init__(self, session: SessionPort, info_hash: bytes, save_path: str, config: TorrentConfig,
                 name: str) -> None:
        self._session = session
        self.info_hash = info_hash
        self.save_path = save_path
        self.config = config
        self.name = name
        self.torrent: Torrent | None = None
        self._fetch: MagnetFetch | None = None
        self._error: str | None = None
        self._exit_code: int | None = None
        self._attached = gevent.event.Event()
        self._paused = config.paused
        self._earlier = [0, 0, 0]  # bytes down/up/corrupt of earlier runs (restart, move_data)
        self._magnet_trackers: list[list[str]] = []
        self._honors_session_limits = True

    def __repr__(self) -> str:
        return f"<TorrentHandle {self.name!r} {self.info_hash.hex()}>"

    # --- building ---------------------------------------------------------------------------------

    def attach(self, torrent: Torrent) -> None:
        """Give the handle its torrent and start it (the session calls this)."""
        self.torrent = torrent
        self.name = torrent.meta.name
        if self._paused:
            torrent.pause()
        elif torrent.paused:  # a restart() of a handle resumed since its config said "paused"
            torrent.resume()
        if not self._honors_session_limits:
            self.honor_session_limits(False)
        torrent.start()
        self._attached.set()

    def fetch_metadata(self, magnet: Magnet) -> None:
        """Fetch a magnet link's metadata in the background, then attach the torrent (the session calls this)."""
        from .magnet_fetch import FetchCalls, MagnetFetch  # magnet links only: not imported by every run

        self._magnet_trackers = magnet.trackers
        self._fetch = MagnetFetch(self._session, FetchCalls(
            save_path=lambda: self.save_path, config=lambda: self.config, exit_code=lambda: self._exit_code,
            make_torrent=lambda meta: self._session._make_torrent(meta, self.save_path, self.config),
            end=self._end, attach=self.attach), magnet)
        self._fetch.start()

    def _end(self, code: int, error: str | None) -> None:
        self._exit_code = code
        self._error = error
        self._attached.set()

    def merge_trackers(self, tiers: list[list[str]]) -> None:
        """Add trackers of a second source for the same info-hash (new URLs as new tiers)."""
        torrent = self.torrent
        if torrent is None or not tiers:
            return
        known = {url for tier in torrent.meta.trackers for url in tier}
        new = [[u for u in tier if u not in known] for tier in tiers]
        new = [tier for tier in new if tier]
        if new:
            torrent.add_trackers(new)

    # --- state ----------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """The torrent stopped for good (done, failed, stopped or removed)."""
        if self.torrent is not None:
            return self.torrent.exit_code is not None and self.torrent.state in ("done", "error")
        return self._exit_code is not None

    @property
    def exit_code(self) -> int | None:
        """The command-line exit code the torrent ended with (None while it runs)."""
        if self.torrent is not None and self.finished:
            return self.torrent.exit_code
        return self._exit_code

    @property
    def error(self) -> str | None:
        """The fatal error, if the torrent stopped on one."""
        return self.torrent.error if self.torrent is not None else self._error

    @property
    def meta(self) -> Metainfo | None:
        """The torrent's metainfo (None while a magnet link's metadata is being fetched)."""
        return self.torrent.meta if self.torrent is not None else None

    def status(self) -> TorrentStatus:
        """A frozen snapshot of the torrent now."""
        t = self.torrent
        if t is None:
            state = "error" if self._error else ("paused" if self._paused else "metadata")
            return TorrentStatus(self.name, self.info_hash.hex(), state, 0.0, 0, 0, 0, 0, 0, 0.0, 0.0, 0, 0, 0, 0,
                                 None, self.save_path, self._error, self._exit_code)
        s = t.snapshot()
        wanted = s.wanted_bytes if s.wanted_bytes is not None else s.total_bytes
        done = s.wanted_have_bytes if s.wanted_bytes is not None else s.have_bytes
        state = t.state
        if t.paused and state not in ("done", "error"):
            state = "paused"
        return TorrentStatus(
            name=s.name, info_hash=t.meta.info_hash_hex, state=state, progress=done / wanted if wanted else 1.0,
            total_bytes=s.total_bytes, wanted_bytes=wanted, have_bytes=s.have_bytes, pieces_done=s.pieces_done,
            num_pieces=s.num_pieces, download_rate=s.download_rate, upload_rate=s.upload_rate,
            downloaded=s.downloaded, uploaded=s.uploaded, peers=s.peers, seeds=s.seeds, eta=s.eta,
            save_path=self.save_path, error=t.error, exit_code=t.exit_code if self.finished else None,
            storage_stalled=t.verifier.slots.stalled_seconds)

    # --- acting ---------------------------------------------------------------------------------

    def pause(self) -> None:
        """Disconnect every peer and stop announcing; keep what was downloaded."""
        self._paused = True
        if self.torrent is not None:
            self.torrent.pause()

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        self._paused = False
        if self.torrent is not None:
            self.torrent.resume()

    def recheck(self) -> None:
        """Hash the data on disk again (the resume record is not trusted), then go on."""
        if self.torrent is not None:
            self.torrent.recheck()

    def set_file_priorities(self, priorities: list[int]) -> None:
        """One priority per data file (``meta.data_files``): 0 skips the file, anything higher downloads it."""
        t = self.torrent
        if t is None:
            raise RuntimeError("the metadata is not there yet")
        if len(priorities) != len(t.meta.data_files) or not all(isinstance(p, int) and p >= 0 for p in priorities):
            raise ValueError(f"give {len(t.meta.data_files)} priorities (whole numbers from 0), one per file")
        chosen = tuple(i for i, p in enumerate(priorities) if p > 0)
        t.select_files(None if len(chosen) == len(priorities) else chosen)
        self.config = replace(self.config, selected_files=None if len(chosen) == len(priorities) else chosen)

    def set_rate_limits(self, download: int | None = None, upload: int | None = None) -> None:
        """Change this torrent's own rate limits now (bytes/s, 0: unlimited; None: leave that one as is)."""
        changes = {k: v for k, v in (("max_download_rate", download), ("max_upload_rate", upload)) if v is not None}
        self.config = replace(self.config, **changes)
        if self.torrent is not None:
            self.torrent.download_limit.buckets[0].set_rate(self.config.max_download_rate)
            self.torrent.upload_limit.buckets[0].set_rate(self.config.max_upload_rate)

    def honor_session_limits(self, honored: bool) -> None:
        """Whether the session's global rate limits apply to this torrent too (True by default); its own
        limits always apply."""
        self._honors_session_limits = honored
        t = self.torrent
        if t is not None:
            for limits, shared in ((t.download_limit, t.services.download_limit),
                                   (t.upload_limit, t.services.upload_limit)):
                own = limits.buckets[0]
                limits.buckets = (own, shared) if honored else (own,)

    def set_seed_limits(self, ratio: float | None, minutes: float | None, idle: float | None) -> None:
        """Change when seeding stops (as ``TorrentConfig.seed_ratio``/``seed_time``/``seed_idle``; None or 0:
        no such limit; the torrent seeds after completing, ``seed`` becomes True); a torrent already past a
        new limit stops seeding within a second."""
        self.config = replace(self.config, seed=True, seed_ratio=ratio, seed_time=minutes, seed_idle=idle)
        if self.torrent is not None:
            self.torrent.config = replace(self.torrent.config, seed=True, seed_ratio=ratio, seed_time=minutes,
                                          seed_idle=idle)
            limits = self.torrent.seeding_limits
            limits.ratio, limits.minutes, limits.idle = self.config.seed_limits()

    def set_max_peers(self, count: int) -> None:
        """Change this torrent's peer cap; lowering it closes no connection, new ones wait for room. Raising it
        above the cap the torrent started with takes effect when it starts again (:meth:`restart`)."""
        self.config = replace(self.config, max_peers=count)
        if self.torrent is not None:
            swarm = self.torrent.swarm
            swarm.max_peers = max(1, min(count, swarm.pool.size or count))

    def restart(self, save_path: str | os.PathLike | None = None) -> None:
        """Run a torrent that stopped for good (seeding done, stopped, failed) again, with the handle's
        current configuration, optionally in another ``save_path``; its data is checked first. A torrent
        still running is stopped first (bounded wait). Byte counters of the new run start at 0."""
        old = self.torrent
        if save_path is not None:
            self.save_path = os.path.abspath(os.fspath(save_path))
        if old is None:
            return
        self._stop_for_good(old)
        self._run_again(old, old.meta)

    def _stop_for_good(self, old: Torrent) -> None:
        if not self.finished:
            old.stop(EXIT_OK)
            old.wait(30)

    def _run_again(self, old: Torrent, meta: Metainfo) -> None:
        """A new run of the stopped torrent ``old`` on ``meta``, its byte counters carried over."""
        self._earlier[0] += old.stats.downloaded
        self._earlier[1] += old.stats.uploaded
        self._earlier[2] += old.stats.corrupt
        self.attach(self._session._make_torrent(meta, self.save_path, self.config))

    def move_data(self, new_path: str | os.PathLike) -> None:
        """Move the torrent's files to ``new_path`` (the same relative layout) and go on from there: the
        torrent is stopped, its files are moved (renamed, or copied then deleted across filesystems; never
        through a link), then it is restarted in the new folder, where its data is checked again. When a file
        cannot be moved (OSError, or UnsafePath for a link planted in the new place), the files already moved
        are put back, the torrent goes on in its old folder, and the error is raised."""
        new = os.path.abspath(os.fspath(new_path))
        old = self.torrent
        if old is None or new == self.save_path:
            self.save_path = new
            return
        from .data_move import move_files  # moving and renaming: imported when used

        self._stop_for_good(old)
        try:
            move_files(old.meta, self.save_path, new)
        except BaseException:
            self.restart()  # the files already moved were put back: go on in the old folder
            raise
        delete_files(old.meta, self.save_path)  # the folders the files left empty
        self.restart(new)

    def rename_path(self, path: str, name: str, on_disk: bool = True) -> tuple[str, str]:
        """Rename the file or folder ``path`` of the torrent (``/``-separated, starting with the torrent's
        name, as :attr:`FileEntry.relpath` shows it) to ``name``, one path component, and go on with the new
        layout (Transmission's ``torrent-rename-path``). The info hash, the pieces and the web seeds' URLs
        (the torrent's own names) do not change; renaming the top component renames the torrent.

        With ``on_disk`` the torrent is stopped, the file or folder is renamed in place (``renameat`` within
        its own folder, reached one component at a time without following a link; nothing is renamed when it
        is not on disk yet), then the torrent is restarted on it as at any start (its resume record, else a
        check). Without ``on_disk`` only the engine's file list changes (a rename done before, replayed).
        Returns ``(path, name)``.

        Raises :class:`ValueError` for a path the torrent has not, a ``name`` that is not a plain component
        (empty, ``.``, ``..``, a separator or a control character) or that another file already has, and
        for a torrent without metadata yet; :class:`OSError` (or ``UnsafePath`` for a link) when the disk
        refuses, the torrent then going on unchanged."""
        from .data_move import rename_on_disk, rename_target, renamed

        meta = self.meta
        if meta is None:
            raise ValueError("the torrent has no metadata yet")
        old_parts, new_parts = rename_target(meta, path, name)
        if new_parts == old_parts:
            return "/".join(old_parts), name
        old = self.torrent
        self._stop_for_good(old)
        if on_disk and self.save_path != "-":  # "-": in memory, nothing on disk
            try:
                rename_on_disk(self.save_path, old_parts, name)
            except BaseException:
                self.restart()
                raise
        self._run_again(old, renamed(meta, old_parts, new_parts))
        return "/".join(old_parts), name

    def reannounce(self) -> None:
        """Ask the trackers for peers now (a running torrent; nothing otherwise)."""
        if self.torrent is not None and self.torrent.exit_code is None:
            self.torrent.announcer.announce_now.set()

    def transferred(self) -> tuple[int, int]:
        """Payload bytes (downloaded, uploaded) over every run of this handle (``status()`` counts this run)."""
        t = self.torrent
        now = (t.stats.downloaded, t.stats.uploaded) if t is not None else (0, 0)
        return self._earlier[0] + now[0], self._earlier[1] + now[1]

    def corrupted(self) -> int:
        """Bytes of pieces that failed their hash check, over every run of this handle (``corruptEver``)."""
        t = self.torrent
        return self._earlier[2] + (t.stats.corrupt if t is not None else 0)

    def check_progress(self) -> float:
        """How far the check of the data on disk is (0 to 1) while the state is ``checking``; 0 otherwise."""
        t = self.torrent
        if t is None or t.state != "checking" or not t.meta.num_pieces:
            return 0.0
        return min(1.0, t.verifier.checked / t.meta.num_pieces)

    def pieces(self) -> bytes:
        """The verified pieces as a BitTorrent bitfield (high bit first; empty before the metadata)."""
        return self.torrent.have.to_bytes() if self.torrent is not None else b""

    def availability(self) -> list[int]:
        """How many connected peers have each piece, -1 for the pieces we have (Transmission's ``availability``;
        empty before the metadata)."""
        t = self.torrent
        if t is None:
            return []
        have, counted = t.have, t.manager.availability
        seeds = counted.seeds
        return [-1 if have[i] else n + seeds for i, n in enumerate(counted.counts)]

    def file_progress(self) -> list[int]:
        """Verified bytes of each data file (``meta.data_files`` order; empty before the metadata)."""
        from .details import file_progress

        return file_progress(self.torrent.meta, self.torrent.have) if self.torrent is not None else []

    def peer_infos(self) -> list:
        """A :class:`torrentcore.details.PeerInfo` for each connected peer."""
        from .details import peer_infos

        t = self.torrent
        return peer_infos(list(t.peers.values()), t.meta.num_pieces) if t is not None else []

    def trackers(self) -> list[list[str]]:
        """The tracker tiers (announce URLs) of the torrent or magnet link."""
        if self.torrent is not None:
            return [list(tier) for tier in self.torrent.meta.trackers]
        return [list(tier) for tier in self._magnet_trackers]

    def tracker_failures(self) -> dict[str, str]:
        """The last error of each tracker that failed (by URL)."""
        tiers = self.torrent.announcer.tiers if self.torrent is not None else None
        return tiers.failures() if tiers is not None else {}

    def stop(self, exit_code: int = EXIT_INTERRUPTED) -> None:
        """Stop the torrent for good (returns at once; :meth:`join` waits)."""
        if self.torrent is not None:
            self.torrent.stop(exit_code)
        elif self._exit_code is None:
            self._exit_code = exit_code
            if self._fetch is not None and self._fetch.stop():
                self._end(exit_code, None)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the torrent stopped for good; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._attached.wait(timeout):
            return False
        if self.torrent is None:
            return True
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self.torrent.wait(left)

    def wait_until_complete(self, timeout: float | None = None) -> TorrentStatus:
        """Wait until every wanted piece is verified (or the torrent ended well); return the status then.

        Raises TorrentFailed on a fatal error and TimeoutError after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._error or (self.torrent is not None and self.torrent.error):
                raise TorrentFailed(self.error or "failed")
            if self.torrent is not None and self.torrent.completed_at is not None:
                return self.status()
            if self.finished:
                if self.exit_code == EXIT_OK:
                    return self.status()
                raise TorrentFailed(self.error or f"stopped before completing (exit code {self.exit_code})")
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{self.name} did not complete within {timeout:g} s")
            gevent.sleep(0.1)

    def remove(self, delete_data: bool = False) -> None:
        """Stop the torrent and take it out of the session; with ``delete_data``, delete its files (only
        those of this torrent, and the folders they leave empty inside ``save_path``)."""
        self.stop(EXIT_OK)
        self.join(30)
        self._session._forget(self)
        if delete_data and self.torrent is not None and self.save_path != "-":
            delete_files(self.torrent.meta, self.save_path)
        self._session._emit(Removed(info_hash=self.info_hash, name=self.name, deleted_data=delete_data))

    def open(self, file_index: int, readahead: int | None = None, timeout: float | None = None):
        """A seekable, buffered binary file over data file ``file_index``; reads wait for verified pieces
        and pull the pieces ahead of them first (see :mod:`torrentcore.reader`)."""
        from .reader_source import open_reader

        if self.torrent is None:
            if not self._attached.wait(timeout):
                raise TimeoutError("the metadata did not arrive in time")
            if self.torrent is None:
                raise TorrentFailed(self._error or "the torrent stopped")
        return open_reader(self.torrent, file_index, readahead=readahead, timeout=timeout)


def delete_files(meta: Metainfo, save_path: str) -> None:
    """Delete the torrent's data files under ``save_path`` and the folders they leave empty (never a link's
    target, never anything outside ``save_path``)."""
    root = os.path.realpath(save_path)
    folders: set[str] = set()
    for entry in meta.files:
        path = os.path.join(save_path, *entry.path)
        real = os.path.realpath(path)
        if not real.startswith(root + os.sep):
            continue
        try:
            if os.path.islink(path) or os.path.isfile(path):
                os.unlink(path)
        except OSError as exc:
            log.warning("cannot delete a file of a removed torrent", path=path, error=str(exc))
        folder = os.path.dirname(path)
        while os.path.realpath(folder).startswith(root + os.sep):
            folders.add(folder)
            folder = os.path.dirname(folder)
    for folder in sorted(folders, key=len, reverse=True):
        try:
            os.rmdir(folder)
        except OSError:
            pass  # not empty: the user's own files stay


__all__ = ["TorrentHandle", "TorrentStatus", "SessionStatus", "TorrentFailed", "load_source", "delete_files"]
