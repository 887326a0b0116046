"""The process-wide engine: one :class:`Session` serves many torrents.

The session owns what its torrents share, as libtorrent's ``session_impl`` does: one listen port (IPv4
and IPv6) whose incoming connections are routed by the info-hash in their handshake, one DHT node,
the global download/upload limits and connection cap, one thread pool for hashing and disk work, the
plugin manager, and our peer id. Each torrent owns its own state (:class:`torrentcore.torrent.Torrent`);
scripts hold a :class:`~torrentcore.handle.TorrentHandle` for it.

The engine runs on gevent with monkey-patched blocking sockets: call :func:`torrentcore.patch` first
thing in the program (the ``torrentcore`` command does). Every method here blocks only the calling
greenlet; plain Python code that never starts a greenlet of its own simply calls them.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import random
import socket
from collections.abc import Iterator
from typing import Any

import gevent
import gevent.threadpool
import structlog

from . import __version__, plugins
from .config import SessionConfig, TorrentConfig
from .errors import EXIT_INTERRUPTED
from .events import Event, EventQueue, TorrentAdded
from .handle import SessionStatus, TorrentHandle, load_source
from .listener import Listener
from .peer import handshake
from .ratelimit import TokenBucket
from .slots import HALF_OPEN_IN, HALF_OPEN_OUT, ConnectionSlots
from .ticker import Ticker
from .torrent import SessionServices, Torrent
from .transport import Dialer

log = structlog.get_logger(__name__)

#: File descriptors kept free of peer connections (DHT and listen sockets, storage files: the filesystem
#: storages' OPEN_FILES_BUDGET of 32 for the whole process, resume records, the thread pool's pipes, logs).
RESERVED_FDS = 64
#: Seconds an incoming peer for a torrent still checking its data waits before it is closed...
ROUTE_WAIT = 30.0
#: ...and how many may wait so at once (more are closed: handshaken strangers must not pile up meanwhile).
ROUTE_WAITING_MAX = 64


def make_peer_id() -> bytes:
    """An Azureus-style peer id: ``-TC0100-`` and 12 random characters."""
    major, minor, *_ = (__version__.split(".") + ["0", "0"])[:3]
    prefix = f"-TC{int(major):02d}{int(minor):02d}-".encode()
    alphabet = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return prefix + bytes(random.choice(alphabet) for _ in range(20 - len(prefix)))


def require_patched() -> None:
    """Raise RuntimeError with the fix when the standard library was not patched for gevent."""
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        raise RuntimeError("torrentcore needs the standard library patched for gevent: call torrentcore.patch() "
                           "first thing in your program, before other imports")


class Session:
    """Many torrents, one port, one DHT node, shared limits and plugins (see the module docstring).

    Use it as a context manager, or call :meth:`close` at the end::

        with Session(SessionConfig(listen_port=0, dht=False)) as session:
            handle = session.add_torrent("file.torrent", save_path="dl")
            handle.wait_until_complete()
    """

    def __init__(self, config: SessionConfig | None = None, *, plugin_manager: Any = None) -> None:
        require_patched()
        self.config = config if config is not None else SessionConfig()
        cfg = self.config
        self.pm = plugin_manager or plugins.get_plugin_manager(disabled=cfg.disabled_plugins,
                                                               extra_modules=cfg.plugins)
        #: Every declared plugin setting's value (declared defaults, then ``config.plugin_settings``).
        self.plugin_settings = plugins.resolve_settings(self.pm, (), _set_values(cfg.plugin_settings),
                                                        "plugin_settings")
        self.peer_id = make_peer_id()
        #: The MSE/PE policy of every connection (``config.encryption``).
        self.encryption = cfg.encryption
        self.download_limit = TokenBucket(cfg.max_download_rate)
        self.upload_limit = TokenBucket(cfg.max_upload_rate)
        self.slots = ConnectionSlots(fd_bounded(cfg.max_connections), cfg.max_connections_per_ip)
        self.pool = gevent.threadpool.ThreadPool(cfg.hash_threads)
        #: One clock for every torrent's once-a-second work (no greenlet per torrent on its own timer).
        self.ticker = Ticker()
        self._handles: dict[bytes, TorrentHandle] = {}
        self._route_waiting = 0  # incoming peers waiting for their torrent's data check
        self._events = EventQueue()
        self._closed = False
        self.dht: Any = None
        self._dht_tried = False
        self.listener = Listener(cfg.listen_hosts, cfg.listen_port, self._identity_for, self._route,
                                 self.slots, encryption=cfg.encryption,
                                 info_hashes=self._served_info_hashes)
        self.port = self.listener.start()
        #: uTP (BEP 29) on one UDP socket on the listen port, shared with the DHT node (None: not available).
        self.utp: Any = None
        self._udp: Any = None
        self.utp6: Any = None  # the same on IPv6 (BEP 7), when an IPv6 address is listened on
        self._udp6: Any = None
        self._start_utp()
        has_utp = self.utp is not None or self.utp6 is not None
        self.dialer = Dialer(cfg.transports, self._utp_connect if has_utp else None)
        if self.port:
            log.info("listening", port=self.port, peer_id=self.peer_id.decode("latin-1"),
                     addresses=self.listener.addresses)

    # --- context manager ----------------------------------------------------------------------------

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- torrents -----------------------------------------------------------------------------------

    def add_torrent(self, source: str | bytes | os.PathLike, save_path: str | os.PathLike = ".",
                    config: TorrentConfig | None = None) -> TorrentHandle:
        """Add a torrent from a .torrent path, its bytes, or a ``magnet:?`` link; it starts at once
        (unless ``config.paused``). An info-hash already in the session returns the existing handle, with
        the new source's trackers merged in. Raises BadInputError (a malformed torrent, unknown plugin)."""
        if self._closed:
            raise RuntimeError("the session is closed")
        config = config if config is not None else TorrentConfig()
        loaded = load_source(source)
        existing = self._handles.get(loaded.info_hash)
        if existing is not None and not existing.finished:
            existing.merge_trackers(loaded.trackers)
            return existing
        save = os.fspath(save_path)
        save = save if save == "-" else os.path.abspath(save)
        handle = TorrentHandle(self, loaded.info_hash, save, self._with_settings(config), loaded.name)
        # Plugins (strategy, storage) are chosen before the handle is known: a refusal adds nothing.
        torrent = self._make_torrent(loaded.meta, save, handle.config) if loaded.meta is not None else None
        self._handles[loaded.info_hash] = handle
        self._emit(TorrentAdded(info_hash=loaded.info_hash, name=handle.name))
        if torrent is not None:
            handle.attach(torrent)
        else:
            handle.fetch_metadata(loaded.magnet)
        return handle

    def _with_settings(self, config: TorrentConfig) -> TorrentConfig:
        """``config`` with every plugin setting filled in (the session's, then the torrent's own)."""
        from dataclasses import replace

        merged = {ns: dict(values) for ns, values in self.plugin_settings.items()}
        if config.plugin_settings:
            own = plugins.resolve_settings(self.pm, (), _set_values(config.plugin_settings), "torrent plugin_settings")
            for ns, values in config.plugin_settings.items():
                merged.setdefault(ns, {}).update({k: own[ns][k] for k in values})
        return replace(config, plugin_settings=merged)

    def _make_torrent(self, meta, save_path: str, config: TorrentConfig) -> Torrent:
        """A Torrent for ``meta`` with this session's services (plugins chosen, DHT started if wanted)."""
        strategy = plugins.choose_strategy(self.pm, config.strategy)
        storage = plugins.choose_storage(self.pm, config.storage)
        hooks = plugins.ContainedHooks(self.pm, log.bind(torrent=meta.name))
        services = SessionServices(
            peer_id=self.peer_id, hooks=hooks, strategy_factory=strategy, storage_factory=storage, pool=self.pool,
            download_limit=self.download_limit, upload_limit=self.upload_limit, slots=self.slots,
            listen_port=lambda: self.port, dht=None if meta.private else self.dht_node(), pex=self.config.pex,
            emit=self._emit, encryption=self.config.encryption,
            dial=functools.partial(handshake.dial, connect=self.dialer.connect), ticker=self.ticker)
        return Torrent(meta, save_path, config, services)

    def torrents(self) -> list[TorrentHandle]:
        """Handles of every torrent in the session, in the order they were added."""
        return list(self._handles.values())

    def find(self, info_hash: bytes | str) -> TorrentHandle | None:
        """The handle for an info-hash (20 bytes or 40 hex digits), or None."""
        if isinstance(info_hash, str):
            try:
                info_hash = bytes.fromhex(info_hash)
            except ValueError:
                return None
        return self._handles.get(info_hash)

    def _forget(self, handle: TorrentHandle) -> None:
        if self._handles.get(handle.info_hash) is handle:
            del self._handles[handle.info_hash]

    def status(self) -> SessionStatus:
        """Totals over all torrents now."""
        statuses = [h.status() for h in self._handles.values()]
        return SessionStatus(
            torrents=len(statuses),
            download_rate=sum(s.download_rate for s in statuses),
            upload_rate=sum(s.upload_rate for s in statuses),
            downloaded=sum(s.downloaded for s in statuses),
            uploaded=sum(s.uploaded for s in statuses),
            peers=sum(s.peers for s in statuses),
            listen_port=self.port,
            dht_nodes=len(self.dht.table) if self.dht is not None else 0,
        )

    def set_rate_limits(self, download: int | None = None, upload: int | None = None) -> None:
        """Change the global rate limits now (bytes/s for all torrents together, 0: unlimited; None: leave
        that one as is); ``config`` keeps the values the session started with."""
        if download is not None:
            self.download_limit.set_rate(download)
        if upload is not None:
            self.upload_limit.set_rate(upload)

    def set_max_connections(self, count: int) -> None:
        """Change the cap on peer connections of all torrents together; lowering it closes none, new ones
        wait for room."""
        self.slots.limit = max(1, int(count))

    # --- events -------------------------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        self._events.put(event)

    def events(self, timeout: float | None = 1.0) -> Iterator[Event]:
        """Yield the session's events (:mod:`torrentcore.events`) in order as they happen; the iteration
        ends after ``timeout`` seconds without one (None: when the session closes). Events are kept (at most
        10,000, oldest dropped) until read, so none is lost between two calls."""
        return self._events.drain(timeout)

    # --- what the session shares ------------------------------------------------------------------

    def dht_node(self) -> Any:
        """The session's DHT node, started on first use (None when disabled or it cannot start)."""
        if self.dht is not None or self._dht_tried or not self.config.dht or self._closed:
            return self.dht
        self._dht_tried = True
        from .dht import DHTNode, default_state_path

        cfg = self.config
        host = next((h for h in cfg.listen_hosts if ":" not in h), "0.0.0.0")  # the DHT node speaks IPv4
        port = cfg.dht_port if cfg.dht_port is not None else (self.port or 6881)
        state = os.path.join(cfg.state_dir, "dht.json") if cfg.state_dir else default_state_path()
        shared = self._udp if self._udp is not None and cfg.dht_port in (None, self.port) else None
        node = DHTNode(port=port, bootstrap=list(cfg.dht_bootstrap) or None, state_path=state, host=host, sock=shared)
        try:
            node.start()
        except OSError as exc:
            node.stop()  # releases its state file
            log.warning("cannot start the dht node", error=str(exc))
            return None
        if shared is not None:
            self.utp.fallback = node.handle_datagram  # KRPC datagrams (not uTP) on the shared socket
        self.dht = node
        return node

    def _start_utp(self) -> None:
        """Bind UDP sockets on the listen port (the first IPv4 host, and the first IPv6 one if listened on)
        and start uTP on them; a failure is logged, not fatal. The IPv4 one is shared with the DHT node.

        Not with ``transports`` without uTP and no DHT: nothing would use them (a DHT node started later
        binds its own socket)."""
        if not self.port or ("utp" not in self.config.transports and not self.config.dht):
            return
        from .utp import Multiplexer

        accept = self.listener.accept_utp if "utp" in self.config.transports else None
        for v6 in (False, True):
            host = next((h for h in self.listener.hosts if (":" in h) == v6), None)
            if host is None:
                continue
            udp = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
            try:
                if v6:
                    udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                udp.bind((host, self.port))
            except OSError as exc:
                udp.close()
                log.warning("cannot bind the udp port: no uTP", host=host, port=self.port, error=str(exc))
                continue
            mux = Multiplexer(udp, accept, max_connections=self.config.max_connections + HALF_OPEN_IN + HALF_OPEN_OUT,
                              max_half_open=HALF_OPEN_IN).start()
            if v6:
                self._udp6, self.utp6 = udp, mux
            else:
                self._udp, self.utp = udp, mux

    def _utp_connect(self, address: tuple[str, int], timeout: float) -> Any:
        """A uTP connection to ``address`` on the multiplexer of its address family (OSError if none)."""
        mux = self.utp6 if ":" in address[0] else self.utp
        if mux is None:
            raise OSError("no uTP socket for this address family")
        return mux.connect(address, timeout)

    def _serving(self, info_hash: bytes) -> Torrent | None:
        """The torrent of ``info_hash`` if it takes peers now or once its data check is done (a hybrid's
        truncated v2 hash finds it too)."""
        handle = self._handles.get(info_hash)
        if handle is None:
            handle = self._handles.get(self._aliases().get(info_hash, b""))
        torrent = handle.torrent if handle is not None else None
        return torrent if torrent is not None and torrent.may_take_peers_soon else None

    def _aliases(self) -> dict[bytes, bytes]:
        """Other info-hash -> the hash a torrent is registered by (a hybrid's truncated v2 hash -> its v1 hash,
        or the other way round when it came from a btmh-only magnet link)."""
        return {other: key for key, h in list(self._handles.items()) if h.torrent is not None
                for other in h.torrent.meta.info_hashes if other != key}

    def _identity_for(self, info_hash: bytes) -> handshake.Identity | None:
        torrent = self._serving(info_hash)
        if torrent is None:
            return None
        identity = torrent.swarm.identity
        # A peer of a hybrid's v2 swarm gets its own hash back in our handshake.
        return identity if identity.info_hash == info_hash else dataclasses.replace(identity, info_hash=info_hash)

    def _served_info_hashes(self) -> list[bytes]:
        """Every info-hash we answer for (an incoming MSE handshake names its torrent only by a hash)."""
        served = [h for h in self._handles if self._serving(h) is not None]
        keys = set(served)
        return served + [other for other, key in self._aliases().items() if key in keys]

    def _route(self, done: handshake.Handshaken) -> None:
        torrent = self._serving(done.info_hash)
        # A peer that arrives while the torrent checks its data waits (bounded in time and number) for the check.
        if torrent is not None and not torrent.network_up.is_set():
            if self._route_waiting >= ROUTE_WAITING_MAX:
                torrent = None
            else:
                self._route_waiting += 1
                try:
                    torrent.network_up.wait(ROUTE_WAIT)
                finally:
                    self._route_waiting -= 1
        if torrent is None or not torrent.network_up.is_set() or not torrent.accepts_peers:
            done.conn.close("torrent not taking peers")
            return
        torrent.swarm.run_peer(done, incoming=True)

    # --- the end ------------------------------------------------------------------------------------

    def stop_all(self, exit_code: int = EXIT_INTERRUPTED) -> None:
        """Ask every torrent to stop (Ctrl-C, SIGTERM); returns at once."""
        for handle in list(self._handles.values()):
            handle.stop(exit_code)

    def close(self, timeout: float = 30.0) -> None:
        """Stop every torrent (trackers are told, resume records written), the listener and the DHT node."""
        if self._closed:
            return
        self._closed = True
        self.stop_all()
        with gevent.Timeout(timeout, False):
            for handle in list(self._handles.values()):
                handle.join()
        self.listener.stop()
        if self.dht is not None:
            self.dht.stop()
            self.dht = None
        for mux, udp in ((self.utp, self._udp), (self.utp6, self._udp6)):
            if mux is not None:
                mux.stop()
                udp.close()
        self._events.close()
        self.ticker.close()
        self.pool.kill()


def fd_bounded(max_connections: int) -> int:
    """``max_connections``, lowered so that every connection (with both half-open caps) has a file
    descriptor: the soft ``ulimit -n`` is raised towards the hard one if needed, and what it cannot give
    is taken off the cap (logged), as libtorrent clamps ``connections_limit``. Never below 8."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return max_connections
    need = max_connections + HALF_OPEN_IN + HALF_OPEN_OUT + RESERVED_FDS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= need:
        return max_connections
    limited = max(8, soft - HALF_OPEN_IN - HALF_OPEN_OUT - RESERVED_FDS)
    log.warning("connection limit lowered to fit the file descriptor limit", max_connections=limited,
                asked=max_connections, fd_limit=soft)
    return limited


def _set_values(settings) -> dict:
    """Plugin settings without the ``None`` values (None is "not set": the declared default applies)."""
    return {ns: {k: v for k, v in values.items() if v is not None} for ns, values in settings.items()}


__all__ = ["Session", "make_peer_id", "require_patched"]
