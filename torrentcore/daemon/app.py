"""The daemon: one Session, its torrents kept in the database, the RPC server, the queue and the
watch folder, until SIGTERM/SIGINT or ``session-close``.

:class:`Daemon` owns the torrents (:class:`~.entry.TorrentEntry`, by RPC id) and every action the RPC
can ask for; :mod:`.rpc` only translates requests into these calls. Once a second (:meth:`_tick`) it
applies the queue, notes completions and activity, stores a magnet link's metadata once it arrived, and
saves changed totals (every :data:`SAVE_INTERVAL` seconds, in one transaction).

This is the daemon's whole torrent life cycle (add, reload, start, stop, move, remove) in one place; what
Transmission's limit settings mean is in :mod:`.limits`, the queue's decisions and moves in :mod:`.queue`,
the torrent-get fields in :mod:`.fields`, the settings a torrent-add stores in :mod:`.add_settings`, which
torrents an RPC ``ids`` names in :mod:`.torrent_ids`.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

import gevent
import gevent.event
import structlog

from ..config import DAEMON_RPC_HOST, DAEMON_RPC_PORT, DAEMON_SESSION_DEFAULTS, SessionConfig, TorrentConfig
from ..errors import EXIT_OK, BadInputError, TorrentcoreError
from ..handle import load_source
from ..session import Session
from . import limits, queue, torrent_ids
from .add_settings import added_settings
from .database import DB_NAME, Database, TorrentRow
from .entry import TorrentEntry
from .fields import DOWNLOAD, SEED, activity, is_stalled
from .lock import ConfigLock

log = structlog.get_logger(__name__)

#: Seconds between the daemon's housekeeping rounds (queue, completion, activity).
TICK = 1.0
#: Seconds between saves of the byte totals (a kill -9 loses at most this much of the counters).
SAVE_INTERVAL = 5.0
#: Transmission's encryption names and the engine's.
ENCRYPTION = {"required": "require", "preferred": "prefer", "tolerated": "prefer"}


class DuplicateTorrent(Exception):
    """torrent-add of an info-hash already in the daemon (``entry`` is the one there)."""

    def __init__(self, entry: TorrentEntry) -> None:
        super().__init__("duplicate torrent")
        self.entry = entry


@dataclass
class DaemonOptions:
    """How the daemon was started (the command line's options)."""

    config_dir: str
    rpc_host: str = DAEMON_RPC_HOST
    rpc_port: int = DAEMON_RPC_PORT
    rpc_whitelist: tuple[str, ...] | None = None
    rpc_host_whitelist: tuple[str, ...] = ()
    username: str | None = None
    password: str | None = None
    peer_port: int | None = None
    download_dir: str | None = None
    watch_dir: str | None = None
    no_dht: bool = False
    extra_settings: dict[str, Any] = field(default_factory=dict)


def default_download_dir() -> str:
    """``$XDG_DOWNLOAD_DIR``, else ``~/Downloads``."""
    return os.environ.get("XDG_DOWNLOAD_DIR") or os.path.join(os.path.expanduser("~"), "Downloads")


class Daemon:
    """See the module docstring. :meth:`open` then :meth:`run` (blocks) or :meth:`close`."""

    def __init__(self, options: DaemonOptions) -> None:
        self.options = options
        self.lock = ConfigLock(options.config_dir)
        self.db: Database | None = None
        self.session: Session | None = None
        self.entries: dict[int, TorrentEntry] = {}
        self.settings: dict[str, Any] = dict(DAEMON_SESSION_DEFAULTS)
        self.stopping = gevent.event.Event()
        self.exit_code = EXIT_OK
        self.started = time.time()
        self.removed: list[tuple[int, float]] = []  # (id, when) for "recently-active"
        self._last_save = self._last_tick = time.monotonic()
        self.stats = {"uploadedBytes": 0, "downloadedBytes": 0, "filesAdded": 0}

    # --- opening and closing ---------------------------------------------------------------------

    def open(self) -> None:
        """Take the config folder's lock, open the database, start the session and reload every torrent.
        Raises BadInputError (exit 2): lock taken, database unusable, port taken."""
        os.makedirs(self.options.config_dir, mode=0o700, exist_ok=True)
        self.lock.acquire()
        try:
            self.db = Database(os.path.join(self.options.config_dir, DB_NAME))
            self.settings.update({k: v for k, v in self.db.settings().items() if k in DAEMON_SESSION_DEFAULTS})
            self.settings.update(self.options.extra_settings)
            if self.options.download_dir:
                self.settings["download-dir"] = os.path.abspath(self.options.download_dir)
            if not self.settings["download-dir"]:
                self.settings["download-dir"] = default_download_dir()
            s = self.settings
            port = self.options.peer_port if self.options.peer_port is not None else s["peer-port"]
            self.session = Session(SessionConfig(
                listen_port=port, listen_hosts=("0.0.0.0",), dht=bool(s["dht-enabled"]) and not self.options.no_dht,
                pex=bool(s["pex-enabled"]), encryption=ENCRYPTION.get(s["encryption"], "prefer"),
                max_connections=max(1, int(s["peer-limit-global"]))))
            self.apply_session_limits()
            for row in self.db.torrents():
                self._reload(row)
        except BaseException:
            self.close()
            raise

    def _reload(self, row: TorrentRow) -> None:
        source: Any = row.metainfo if row.metainfo else row.magnet
        if not source:
            log.warning("a stored torrent has neither metainfo nor a magnet link; skipped", info_hash=row.info_hash)
            return
        try:
            entry = self._start_entry(row, source, queued=not row.stopped)
        except TorrentcoreError as exc:
            log.warning("a stored torrent cannot be loaded; skipped", info_hash=row.info_hash, error=str(exc))
            return
        entry.base = (row.downloaded_ever, row.uploaded_ever)

    def close(self) -> None:
        """Stop every torrent (trackers told ``stopped``, resume records written), save, release the lock."""
        if self.session is not None:
            for entry in self.entries.values():
                entry.sync_totals()
            self.session.close()
            self.session = None
        if self.db is not None:
            for entry in self.entries.values():
                entry.sync_totals()
                self._store_metainfo(entry)  # what arrived since the last round (a link done within a second)
            self.save(force=True)
            self.db.close()
            self.db = None
        self.lock.release()

    def stop(self, exit_code: int = EXIT_OK) -> None:
        """Ask :meth:`run` to return (signals, ``session-close``)."""
        self.exit_code = exit_code
        self.stopping.set()

    def run(self) -> None:
        """Housekeeping until :meth:`stop`."""
        while not self.stopping.wait(TICK):
            try:
                self._tick()
            except Exception:  # noqa: BLE001 - one bad round must not end the daemon
                log.exception("daemon housekeeping failed")

    # --- adding ---------------------------------------------------------------------------------

    def add(self, source: str | bytes, download_dir: str | None = None, paused: bool | None = None,
            unwanted: list[int] | None = None, wanted: list[int] | None = None,
            priorities: dict[int, int] | None = None, labels: list[str] | None = None,
            peer_limit: int | None = None) -> TorrentEntry:
        """Add a torrent (a .torrent path or bytes, or a magnet link). Raises BadInputError (malformed),
        DuplicateTorrent (already there)."""
        from ..magnet import is_magnet

        if isinstance(source, str) and not is_magnet(source):
            source = _read_torrent_file(source)  # a regular file only: never a FIFO or device
        loaded = load_source(source)
        ih = loaded.info_hash.hex()
        for entry in self.entries.values():
            if entry.row.info_hash == ih:
                raise DuplicateTorrent(entry)
        folder = os.path.abspath(download_dir or self.settings["download-dir"])
        if paused is None:
            paused = not self.settings["start-added-torrents"]
        if loaded.meta is not None:
            metainfo, magnet = bytes(source), None
        else:
            metainfo, magnet = None, source
        n = len(loaded.meta.data_files) if loaded.meta is not None else 0
        settings = added_settings(n, unwanted, wanted, priorities, labels,
                                  int(peer_limit or self.settings["peer-limit-per-torrent"]))
        position = max((e.row.queue_position for e in self.entries.values()), default=-1) + 1
        row = TorrentRow(info_hash=ih, name=loaded.name, download_dir=folder, metainfo=metainfo, magnet=magnet,
                         stopped=bool(paused), queue_position=position, added_date=int(time.time()),
                         settings=settings)
        self.db.insert(row)
        try:
            entry = self._start_entry(row, loaded.meta if loaded.meta is not None else source, queued=not paused)
        except BaseException:
            self.db.delete(row.id)
            raise
        self.stats["filesAdded"] += 1
        log.info("torrent added", name=row.name, id=row.id, info_hash=ih)
        self._apply_queue()  # it starts now if there is room, not at the next round
        return entry

    def _start_entry(self, row: TorrentRow, source: Any, queued: bool) -> TorrentEntry:
        """A handle in the session for ``row``, paused (the queue starts it within a second) or stopped."""
        os.makedirs(row.download_dir, exist_ok=True)
        handle = self.session.add_torrent(source, row.download_dir, self._torrent_config(row))
        entry = TorrentEntry(row=row, handle=handle, queued=queued)
        self.entries[row.id] = entry
        for path, name in row.settings.get("renames") or []:  # torrent-rename-path done before (on disk already)
            try:
                handle.rename_path(str(path), str(name), on_disk=False)
            except ValueError as exc:
                log.warning("a stored rename cannot be replayed", id=row.id, path=path, error=str(exc))
        self.apply_torrent_settings(entry)
        return entry

    def _torrent_config(self, row: TorrentRow) -> TorrentConfig:
        wanted = row.settings.get("wanted")
        selected = tuple(i for i, w in enumerate(wanted) if w) if isinstance(wanted, list) and 0 in wanted else None
        return TorrentConfig(seed=True, seed_ratio=None, seed_time=None, seed_idle=None, paused=True,
                             selected_files=selected, max_peers=max(1, int(row.settings.get("peer-limit") or 50)),
                             metadata_timeout=24 * 3600.0)

    # --- limits -----------------------------------------------------------------------------------

    def apply_session_limits(self) -> None:
        """The global speed limits (alternative ones when ``alt-speed-enabled``) onto the session (see
        :mod:`.limits`), and the seed limits that follow the session's onto each torrent."""
        self.session.set_rate_limits(*limits.session_rates(self.settings))
        self.session.set_max_connections(int(self.settings["peer-limit-global"]))
        for entry in self.entries.values():
            limits.apply_seed_limits(entry, self.settings)

    def apply_torrent_settings(self, entry: TorrentEntry) -> None:
        """A torrent's own limits, seed limits, peer cap and file selection onto its handle (:mod:`.limits`)."""
        limits.apply_torrent_settings(entry, self.settings)

    # --- acting -------------------------------------------------------------------------------------

    def start(self, entries: list[TorrentEntry], now: bool = False) -> None:
        """torrent-start (into the queue) / torrent-start-now (past it)."""
        for entry in entries:
            entry.row.stopped = False
            entry.row.settings.pop("seedingDone", None)
            entry.dirty = True
            if now:
                self._run(entry)
            else:
                entry.queued = True
        self.save()
        self._apply_queue()

    def _run(self, entry: TorrentEntry) -> None:
        h = entry.handle
        if h.finished or h.status().state in ("paused", "done", "error"):  # startDate: not when already running
            entry.start_date = int(time.time())
        entry.queued = False
        entry.started = time.monotonic()
        if h.finished and h.torrent is not None:
            h.restart()
            self.apply_torrent_settings(entry)
        h.resume()

    def stop_torrents(self, entries: list[TorrentEntry]) -> None:
        """torrent-stop: paused, and out of the queue."""
        for entry in entries:
            entry.row.stopped = True
            entry.queued = False
            entry.dirty = True
            entry.handle.pause()
        self.save()

    def verify(self, entries: list[TorrentEntry]) -> None:
        """torrent-verify: hash the data again (a stopped torrent is checked when it starts)."""
        for entry in entries:
            h = entry.handle
            if h.finished and h.torrent is not None:
                h.restart()
                self.apply_torrent_settings(entry)
                if entry.row.stopped or entry.queued:
                    h.pause()
            h.recheck()

    def reannounce(self, entries: list[TorrentEntry]) -> None:
        """torrent-reannounce: ask the trackers now."""
        for entry in entries:
            entry.handle.reannounce()

    def remove(self, entries: list[TorrentEntry], delete_data: bool) -> None:
        """torrent-remove, optionally deleting this torrent's files."""
        for entry in entries:
            entry.handle.remove(delete_data=delete_data)
            if delete_data and entry.row.magnet:
                _remove_saved_metadata(entry.row.download_dir, entry.row.info_hash)
            self.entries.pop(entry.id, None)
            self.db.delete(entry.id)
            self.removed.append((entry.id, time.time()))
            log.info("torrent removed", name=entry.row.name, id=entry.id, deleted_data=delete_data)
        del self.removed[:-1000]

    def set_location(self, entries: list[TorrentEntry], location: str, move: bool) -> None:
        """torrent-set-location: move the data (``move``) or just look for it in ``location``."""
        location = os.path.abspath(location)
        for entry in entries:
            entry.sync_totals()
            if move:
                old = entry.row.download_dir
                entry.handle.move_data(location)
                if entry.row.magnet:
                    _move_saved_metadata(old, location, entry.row.info_hash)
            else:
                entry.handle.restart(location)
            self.apply_torrent_settings(entry)
            if entry.row.stopped or entry.queued:
                entry.handle.pause()
            entry.row.download_dir = location
            entry.dirty = True
        self.save()

    def rename_path(self, entry: TorrentEntry, path: str, name: str) -> tuple[str, str]:
        """torrent-rename-path: rename on disk and in the engine (see TorrentHandle.rename_path); the rename
        is kept in the torrent's settings and replayed on the file list when the daemon starts again."""
        entry.sync_totals()
        path, name = entry.handle.rename_path(path, name)
        self.apply_torrent_settings(entry)
        if entry.row.stopped or entry.queued:
            entry.handle.pause()
        entry.row.settings.setdefault("renames", []).append([path, name])
        if "/" not in path:
            entry.row.name = name
        entry.dirty = True
        self.save()
        log.info("torrent path renamed", id=entry.id, path=path, name=name)
        return path, name

    def set_files(self, entry: TorrentEntry, wanted: list[int] | None = None, unwanted: list[int] | None = None,
                  priority: dict[int, int] | None = None) -> None:
        """files-wanted/-unwanted and priority-high/-normal/-low of torrent-set."""
        n = entry.file_count()
        if not n:
            return
        flags = entry.wanted()
        for i in wanted or []:
            if 0 <= i < n:
                flags[i] = 1
        for i in unwanted or []:
            if 0 <= i < n:
                flags[i] = 0
        prio = entry.priorities()
        for i, p in (priority or {}).items():
            if 0 <= i < n:
                prio[i] = p
        entry.row.settings["wanted"] = flags
        entry.row.settings["priorities"] = prio
        entry.dirty = True
        entry.handle.set_file_priorities(flags)

    def move_queue(self, entries: list[TorrentEntry], how: str) -> None:
        """queue-move-top/up/down/bottom."""
        order = sorted(self.entries.values(), key=lambda e: e.row.queue_position)
        self.set_positions(queue.moved(order, entries, how))

    def set_positions(self, order: list[TorrentEntry]) -> None:
        """Number the queue 0.. in this order."""
        for i, e in enumerate(order):
            if e.row.queue_position != i:
                e.row.queue_position = i
                e.dirty = True
        self.save()

    def set_session(self, values: dict[str, Any]) -> None:
        """session-set (already validated): stored, and the limits applied now."""
        self.settings.update(values)
        self.db.save_settings(values)
        self.apply_session_limits()

    # --- housekeeping -------------------------------------------------------------------------------

    def stalled_after(self) -> float | None:
        """Seconds without data moving that make a running torrent stalled (None: never)."""
        s = self.settings
        return float(s["queue-stalled-minutes"]) * 60 if s["queue-stalled-enabled"] else None

    def _apply_queue(self) -> None:
        after = self.stalled_after()
        decided = queue.plan(list(self.entries.values()), self.settings, lambda e: is_stalled(e, after))
        for entry in decided.start:
            self._run(entry)
        for entry in decided.enqueue:
            entry.queued = True
            entry.handle.pause()
        for entry in self.entries.values():  # a user-stopped one never runs, whatever the queue says
            if entry.row.stopped and entry.handle.status().state not in ("paused", "done", "error"):
                entry.handle.pause()

    @staticmethod
    def _store_metainfo(entry: TorrentEntry) -> bool:
        """Keep a magnet link's metadata in the row once it arrived, and again once a v2 link's piece layers
        (fetched from peers after it) are complete. True: the metadata was stored for the first time."""
        row, meta = entry.row, entry.handle.meta
        if meta is None or (row.metainfo is not None and not entry.layers_pending):
            return False
        from ..metadata import torrent_file

        first, entry.layers_pending = row.metainfo is None, bool(meta.missing_layers())
        if first or not entry.layers_pending:
            row.metainfo = torrent_file(meta.raw_info, meta.trackers, meta.piece_layers, url_list=meta.url_list)
            entry.dirty = True
        if first:
            row.name = meta.name
        return first

    def _tick(self) -> None:
        now = time.time()
        mono = time.monotonic()
        elapsed, self._last_tick = mono - self._last_tick, mono
        for entry in list(self.entries.values()):
            h = entry.handle
            s = h.status()
            code = activity(entry, s)
            if code in (DOWNLOAD, SEED):  # secondsDownloading, secondsSeeding
                entry.seconds[code == SEED] += elapsed
            entry.last_complete = s.num_pieces > 0 and s.progress >= 1.0
            row = entry.row
            if s.download_rate > 0 or s.upload_rate > 0:
                entry.last_active = time.monotonic()
                if now - row.activity_date >= 1:
                    row.activity_date = int(now)
                    entry.dirty = True
            if s.num_pieces and s.progress >= 1 and not row.done_date:
                row.done_date = int(now)
                entry.dirty = True
            if self._store_metainfo(entry):
                self.apply_torrent_settings(entry)
            if h.finished and s.state == "done" and not h.error and not row.stopped and not entry.queued:
                row.stopped = True  # seeding reached its limit: stopped ("finished"), as Transmission does
                row.settings["seedingDone"] = True
                entry.dirty = True
        self._apply_queue()
        if time.monotonic() - self._last_save >= SAVE_INTERVAL:
            for entry in self.entries.values():
                entry.sync_totals()
            self.save(force=True)

    def save(self, force: bool = False) -> None:
        """Write changed torrents, in one transaction."""
        dirty = [e for e in self.entries.values() if e.dirty]
        if dirty and self.db is not None:
            self.db.update([e.row for e in dirty])
            for e in dirty:
                e.dirty = False
        if force:
            self._last_save = time.monotonic()

    # --- lookups ----------------------------------------------------------------------------------

    def select(self, ids: Any) -> list[TorrentEntry]:
        """The torrents an RPC ``ids`` names (None: all; a number, a hash, a list of them, or
        ``"recently-active"``; see :mod:`.torrent_ids`)."""
        return torrent_ids.select(self.entries, ids)

    def free_space(self, path: str) -> tuple[int, int]:
        """(free bytes, total bytes) of the filesystem holding ``path``."""
        usage = shutil.disk_usage(path)
        return usage.free, usage.total


def _remove_saved_metadata(folder: str, info_hash: str) -> None:
    """Delete the ``NAME.torrent`` the engine saved beside a magnet link's data (it is part of that data)."""
    from ..metadata import find_saved_torrent

    path = find_saved_torrent(folder, bytes.fromhex(info_hash))
    if path is not None and not os.path.islink(path):
        try:
            os.unlink(path)
        except OSError:
            pass


def _move_saved_metadata(old: str, new: str, info_hash: str) -> None:
    """Move the ``NAME.torrent`` saved beside a magnet link's data along with it."""
    from ..metadata import find_saved_torrent

    path = find_saved_torrent(old, bytes.fromhex(info_hash))
    target = os.path.join(new, os.path.basename(path)) if path is not None else None
    if path is not None and not os.path.islink(path) and not os.path.lexists(target):
        try:
            shutil.move(path, target)
        except OSError as exc:
            log.warning("cannot move the saved metadata", path=path, error=exc.strerror)


def _read_torrent_file(path: str) -> bytes:
    from ..statefile import UnsafeStateFile, read_state

    try:
        data = read_state(path, 64 << 20)
    except UnsafeStateFile as exc:
        raise BadInputError(f"cannot read {path}: {exc}") from None
    if data is None:
        raise BadInputError(f"{path} does not exist")
    return data


__all__ = ["Daemon", "DaemonOptions", "DuplicateTorrent", "default_download_dir"]
