"""The engine for one torrent: check data, find peers, download, verify, upload.

A :class:`Torrent` owns the storage backend and piece strategy chosen through
plugins, the :class:`~torrentcore.piecemanager.PieceManager`, the tracker
tiers, and one greenlet per connected peer (bounded by a gevent ``Pool``).
Around them run a few small greenlets: the tracker announcer, the connector
(dials candidates while there is room), a one-second ticker (rates, request
time-outs, progress reports, seeding limits) and the choker. SHA-1 hashing
runs in gevent's thread pool, so it uses another core while the event loop
keeps receiving.

The rule that protects users' data: a piece is written through the storage
hook only after its hash matched, and marked complete only after the write
returned.
"""

from __future__ import annotations

import argparse
import collections
import functools
import hashlib
import ipaddress
import random
import socket
import time
from dataclasses import dataclass

import gevent
import gevent.event
import gevent.lock
import gevent.pool
import gevent.server
import structlog
from gevent import monkey

from . import __version__
from .bitfield import Bitfield
from .choker import INTERVAL as CHOKE_INTERVAL
from .choker import Choker
from .errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNTIME, ProtocolError, StorageError, TrackerError
from .hookspec import ProgressSnapshot
from .metainfo import Metainfo
from .peer import messages as msg
from .peer.connection import Connection, format_address
from .peer.extensions import UT_PEX, ExtensionRegistry
from .peer.peer import Peer
from .piecemanager import Piece, PieceManager
from .plugins import ContainedHooks
from .ratelimit import TokenBucket
from .selection import wanted_pieces
from .tracker import AnnounceRequest, TrackerTiers

log = structlog.get_logger(__name__)

#: Ban a peer once it has sent blocks of this many pieces that failed their hash alone.
BAN_STRIKES = 2
#: Re-dial delays for a known peer after failures (seconds), capped.
RETRY_BASE = 2.0
RETRY_MAX = 60.0
#: Most peer addresses remembered for dialling.
MAX_CANDIDATES = 2000
#: Announce early when fewer peers than this are connected.
WANT_MORE_PEERS = 8
#: DHT lookups: bound of one lookup, period, and period while short of peers (seconds).
DHT_LOOKUP_TIMEOUT = 30.0
DHT_INTERVAL = 300.0
DHT_SHORT_INTERVAL = 30.0
#: Hashing at start: pieces hashed concurrently in the thread pool.
CHECK_PARALLEL = 2
#: Complete pieces waiting for their hash check and write, in bytes (at least 2 pieces, at most 16): beyond
#: it the peer that completes a piece waits. A reader on a busy socket never yields to the event loop
#: by itself, so without this bound finished pieces piled up in memory (700 MiB for 1 GiB measured).
VERIFY_QUEUE_BYTES = 16 * 1024 * 1024


#: Where a peer address can come from (shown by the console and in logs).
PEER_SOURCES = ("tracker", "dht", "pex", "incoming", "manual", "magnet")


def make_peer_id() -> bytes:
    """An Azureus-style peer id: ``-TC0100-`` and 12 random characters."""
    major, minor, *_ = (__version__.split(".") + ["0", "0"])[:3]
    prefix = f"-TC{int(major):02d}{int(minor):02d}-".encode()
    alphabet = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return prefix + bytes(random.choice(alphabet) for _ in range(20 - len(prefix)))


def _sha1(data) -> bytes:
    return hashlib.sha1(data).digest()


@dataclass
class Candidate:
    """A peer address we may dial."""

    address: tuple[str, int]
    source: str = "tracker"  #: where we learnt it: one of PEER_SOURCES
    failures: int = 0
    next_try: float = 0.0
    connected: bool = False


class Torrent:
    """Runs one torrent from start to finish (see the module docstring)."""

    version = __version__

    def __init__(
        self,
        meta: Metainfo,
        save_path: str,
        pm,
        options: argparse.Namespace,
        strategy_factory,
        storage_factory,
        peer_id: bytes | None = None,
        dht=None,
    ) -> None:
        self.meta = meta
        self.save_path = save_path
        self.pm = pm
        # Reporter hooks are contained: a plugin whose reporter raises is logged once and unregistered.
        self.hook = ContainedHooks(pm, log.bind(torrent=meta.name))
        self.options = options
        self.peer_id = peer_id or make_peer_id()
        #: The process's DHT node (torrentcore.dht.DHTNode) or None; private torrents (BEP 27) never use it.
        dht = dht if dht is not None else getattr(options, "dht_node", None)
        self.dht = dht if dht is not None and not meta.private else None
        self._reserved = _RESERVED_DHT if self.dht is not None else _RESERVED  # BEP 5: the DHT bit
        self.log = log.bind(torrent=meta.name, info_hash=meta.info_hash_hex)
        self.have = Bitfield(meta.num_pieces)
        self.storage = storage_factory(meta, save_path, options)
        self.strategy = strategy_factory(meta, options)
        # File selection (run --only/--skip): indices into meta.data_files, None = every file.
        self.selected_files: list[int] | None = getattr(options, "selected_files", None)
        self.selected = wanted_pieces(meta, self.selected_files)
        self.manager = PieceManager(meta, self.have, self.strategy, self.selected)
        self.choker = Choker(self, slots=getattr(options, "upload_slots", 4))
        self.peers: dict[tuple[str, int], Peer] = {}
        #: BEP 10 extension messages this torrent speaks (ut_metadata, ut_pex, plugins' own).
        self.extensions = ExtensionRegistry.for_torrent(self)
        self.candidates: dict[tuple[str, int], Candidate] = {}
        self.banned_addresses: set[tuple[str, int]] = set()
        self.banned_ids: set[bytes] = set()
        self.self_addresses: set[tuple[str, int]] = set()
        self.strikes: dict[tuple[str, int], int] = {}
        self._bad_blocks: dict[int, dict[int, tuple[tuple[str, int], bytes]]] = {}
        self.max_peers = max(1, getattr(options, "max_peers", 50))
        self.pool = gevent.pool.Pool(self.max_peers)
        self.port = 0
        self.tiers = TrackerTiers(meta.trackers) if meta.trackers else None
        self.download_limit = TokenBucket(getattr(options, "max_download_rate", 0))
        self.upload_limit = TokenBucket(getattr(options, "max_upload_rate", 0))
        self.downloaded = 0
        self.uploaded = 0
        self.wasted = 0
        self.checked = 0
        self.state = "checking"
        self.started_at = time.monotonic()
        self.completed_at: float | None = None
        self.exit_code: int | None = None
        self.error: str | None = None
        self._done = gevent.event.Event()
        # Storage calls made while a worker thread may be writing (storages with ``thread_safe_writes``).
        self._disk_lock = monkey.get_original("threading", "Lock")()
        self._storage_closed = False
        self._verify_slots = gevent.lock.Semaphore(max(2, min(16, VERIFY_QUEUE_BYTES // max(1, meta.piece_length))))
        self._announce_now = gevent.event.Event()
        self._connect_now = gevent.event.Event()
        self._greenlets: list[gevent.Greenlet] = []
        self._more_servers: list[gevent.server.StreamServer] = []  # IPv6 beside IPv4, or more addresses
        self._rate_down = 0.0
        self._rate_up = 0.0
        self._bytes_down_tick = 0
        self._bytes_up_tick = 0
        self._last_announce = 0.0
        self._early_announce_at = 0.0  # no early announce before this (monotonic): min interval or back-off
        self._last_interest = 0.0
        self._min_interval = 0.0

    # --- stats hooks used by peers -----------------------------------------------------------------

    def block_arrived(self, n: int) -> None:
        """Payload bytes received."""
        self.downloaded += n
        self._bytes_down_tick += n

    def block_uploaded(self, n: int) -> None:
        """Payload bytes sent."""
        self.uploaded += n
        self._bytes_up_tick += n

    def stats_wasted(self, n: int) -> None:
        """Bytes received that we could not use (duplicates, unrequested)."""
        self.wasted += n

    def read_block(self, index: int, begin: int, length: int) -> bytes | None:
        """Read a block of a verified piece for uploading."""
        if not self.have[index]:
            return None
        try:
            with self._disk_lock:
                return self.storage.read(index, begin, length)
        except StorageError as exc:
            self.fail(str(exc))
            return None

    # --- lifecycle ---------------------------------------------------------------------------------

    def add_peers(self, addresses, source: str = "tracker") -> None:
        """Learn peer addresses; ``source`` (one of :data:`PEER_SOURCES`) says where they came from."""
        added = False
        for host, port in addresses:
            addr = (host, int(port))
            if addr in self.candidates or addr in self.banned_addresses or self._is_self(addr):
                continue
            if len(self.candidates) >= MAX_CANDIDATES and not self._forget_a_candidate():
                break  # a tracker that lists a million peers costs us a bounded amount of memory
            self.candidates[addr] = Candidate(addr, source)
            added = True
        if added:
            self._connect_now.set()

    def _forget_a_candidate(self) -> bool:
        """Make room by dropping the unconnected candidate that failed most often (if any failed)."""
        worst = max((c for c in self.candidates.values() if not c.connected and c.failures),
                    key=lambda c: c.failures, default=None)
        if worst is None:
            return False
        del self.candidates[worst.address]
        return True

    def _is_self(self, addr: tuple[str, int]) -> bool:
        if addr in self.self_addresses:
            return True
        if self.port and addr[1] == self.port:
            try:
                ip = ipaddress.ip_address(addr[0])
            except ValueError:
                return False
            return ip.is_loopback or addr[0] in _local_addresses()
        return False

    def run(self, listen: bool = True) -> int:
        """Run until complete (and done seeding), failed or stopped; return the exit code."""
        self.hook.torrentcore_on_start(torrent=self.meta, save_path=self.save_path, options=self.options)
        try:
            self._check_existing()
            if self.exit_code is None and self._seed_only() and not self.have.complete:
                # ``torrentcore seed`` never downloads: incomplete or corrupt data is an error.
                self.fail(f"the data in {self.save_path} is incomplete "
                          f"({self.have.count}/{self.meta.num_pieces} pieces verified)")
            if self.exit_code is None:
                if self.complete and not self._should_seed():
                    self._finish(EXIT_OK)
                else:
                    self._start_network(listen)
                    self._done.wait()
        except StorageError as exc:
            self.fail(str(exc))
        except (KeyboardInterrupt, gevent.GreenletExit):
            self.exit_code = EXIT_INTERRUPTED
        finally:
            self._shutdown()
        return self.exit_code if self.exit_code is not None else EXIT_RUNTIME

    def stop(self, exit_code: int = EXIT_INTERRUPTED) -> None:
        """Ask the torrent to stop (Ctrl-C, SIGTERM)."""
        if self.exit_code is None:
            self.exit_code = exit_code
        self._done.set()

    def fail(self, message: str) -> None:
        """A fatal error: report it and stop with exit code 1."""
        if self.exit_code is None:
            self.error = message
            self.exit_code = EXIT_RUNTIME
            self.log.info("stopping on a fatal error", error=message)
            self.hook.torrentcore_on_error(torrent=self.meta, message=message, fatal=True)
        self._done.set()

    def _finish(self, code: int) -> None:
        if self.exit_code is None:
            self.exit_code = code
        self._done.set()

    @property
    def complete(self) -> bool:
        """Every wanted piece is verified (all of them, or those of the selected files)."""
        return self.manager.complete

    def _should_seed(self) -> bool:
        return not getattr(self.options, "no_seed", True)

    def _seed_only(self) -> bool:
        """``options.seed_only`` (``torrentcore seed``): the data must be complete; nothing is downloaded."""
        return bool(getattr(self.options, "seed_only", False))

    # --- checking data already on disk ------------------------------------------------------------

    def _check_existing(self) -> None:
        """Find verified pieces: from the storage's completion record, else by hashing."""
        record = self.storage.completed_pieces()
        if record is not None:
            for i in record:
                if 0 <= i < self.meta.num_pieces:
                    self.have.set(i)
                    self.storage.mark_complete(i)
            self.log.info("resume record trusted", pieces=len(record))
            self.checked = self.meta.num_pieces
            self._after_check()
            return
        todo = list(self.storage.pieces_with_data())
        self.log.info("checking existing data", candidates=len(todo))
        pool = gevent.get_hub().threadpool
        reporter = gevent.spawn(self._report_loop)
        try:
            if getattr(self.storage, "thread_safe_writes", False):
                self._check_in_threads(todo, pool)
                if self.exit_code is not None:
                    return
            else:
                pending: list = []
                for index in todo:
                    if self.exit_code is not None:
                        return
                    data = self.storage.read(index, 0, self.meta.piece_size(index))
                    pending.append((index, pool.spawn(_sha1, data)))
                    if len(pending) >= CHECK_PARALLEL:
                        self._collect_check(pending.pop(0))
                for item in pending:
                    self._collect_check(item)
        finally:
            reporter.kill()
        if self.exit_code is None and hasattr(self.storage, "check_finished"):  # optional (hookspec.Storage)
            with self._disk_lock:
                self.storage.check_finished()
        self.checked = self.meta.num_pieces
        self._after_check()

    def _check_in_threads(self, todo: list[int], pool) -> None:
        """Check for storages with ``thread_safe_writes``: worker threads read (under the disk lock) and
        hash batches of about 4 MiB, so the event loop only collects verdicts. Per-piece hand-offs with
        the loop reading kept the check at one core's SHA-1 speed (0.56 of the two-core limit)."""
        size = max(1, (4 << 20) // max(1, self.meta.piece_length))
        batches = [todo[k : k + size] for k in range(0, len(todo), size)]
        pending: list = []
        for batch in batches:
            if self.exit_code is not None:
                return
            pending.append((batch, pool.spawn(self._read_and_hash, batch)))
            if len(pending) >= 2 * CHECK_PARALLEL:
                self._collect_batch(*pending.pop(0))
        for item in pending:
            self._collect_batch(*item)

    def _read_and_hash(self, indices: list[int]) -> list[bytes] | StorageError:
        """In a worker thread: read each piece (holding the disk lock) and hash it (not holding it).

        A StorageError is returned, not raised (gevent prints a traceback for errors leaving its pool).
        """
        digests = []
        for index in indices:
            try:
                with self._disk_lock:
                    data = self.storage.read(index, 0, self.meta.piece_size(index))
            except StorageError as exc:
                return exc
            digests.append(_sha1(data))
        return digests

    def _collect_batch(self, indices: list[int], result) -> None:
        digests = result.get()
        if isinstance(digests, StorageError):
            raise digests  # on the event loop: run() makes it one clear line
        for index, digest in zip(indices, digests):
            if digest == self.meta.piece_hash(index):
                self.have.set(index)
                with self._disk_lock:
                    self.storage.mark_complete(index)
                self.hook.torrentcore_on_piece_verified(torrent=self.meta, index=index)
            self.checked += 1

    def _collect_check(self, item) -> None:
        index, result = item
        if result.get() == self.meta.piece_hash(index):
            self.have.set(index)
            self.storage.mark_complete(index)
            self.hook.torrentcore_on_piece_verified(torrent=self.meta, index=index)
        self.checked += 1

    def _after_check(self) -> None:
        self.manager = PieceManager(self.meta, self.have, self.strategy, self.selected)
        self.state = "seeding" if self.complete else "downloading"
        if self.complete:
            self.completed_at = time.monotonic()

    # --- network -----------------------------------------------------------------------------------

    def _start_network(self, listen: bool) -> None:
        if listen:
            self._listen()
        for host, port in getattr(self.options, "peers", None) or []:
            self.add_peers([(host, port)], source="manual")
        spawn = self._spawn
        spawn(self._report_loop)
        spawn(self._tick_loop)
        spawn(self._connect_loop)
        spawn(self._choke_loop)
        if UT_PEX in self.extensions.handlers:
            spawn(self.extensions.handlers[UT_PEX].loop)
        if self.tiers is not None:
            spawn(self._announce_loop)
        if self.dht is not None:
            spawn(self._dht_loop)
        elif self.tiers is None and not self.candidates and not self.complete:
            self.hook.torrentcore_on_error(
                torrent=self.meta, message="this torrent has no trackers and no peers were given", fatal=False
            )
        if self.complete:
            self.hook.torrentcore_on_completed(torrent=self.meta, snapshot=self.snapshot())

    def _spawn(self, fn, *args) -> gevent.Greenlet:
        g = gevent.spawn(self._guard, fn, *args)
        self._greenlets.append(g)
        return g

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

    def _listen(self) -> None:
        port = getattr(self.options, "port", None)
        candidates = [port] if port is not None else list(range(6881, 6890)) + [0]
        hosts = _listen_hosts(getattr(self.options, "listen_host", None) or "0.0.0.0")
        v6only = any(":" not in h for h in hosts)  # with an IPv4 listener too, IPv6 ones take only IPv6
        last_error = None
        for port in candidates:
            try:
                server = self._server(hosts[0], port, v6only)
            except OSError as exc:
                last_error = exc
                continue
            self.server = server
            self.port = server.server_port
            # More addresses (IPv6 beside IPv4, BEP 7) listen on the same port; each is optional.
            for host in hosts[1:]:
                try:
                    self._more_servers.append(self._server(host, self.port, v6only))
                except OSError as exc:
                    self.log.info("cannot listen on an extra address", host=host, error=str(exc))
            self.log.info("listening", port=self.port, peer_id=self.peer_id.decode("latin-1"),
                          addresses=[format_address((h, self.port)) for h in hosts[:1]]
                          + [format_address((s.server_host, s.server_port)) for s in self._more_servers])
            return
        self.server = None
        self.hook.torrentcore_on_error(
            torrent=self.meta, message=f"cannot listen for peers: {last_error}", fatal=False
        )

    def _server(self, host: str, port: int, v6only: bool) -> gevent.server.StreamServer:
        """A started listener on ``host:port`` (an IPv6 host gets its own AF_INET6 socket)."""
        if ":" not in host:
            server = gevent.server.StreamServer((host, port), self._accept, spawn=self.pool)
        else:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if v6only else 0)
                sock.bind((host, port))
                sock.listen(128)
            except OSError:
                sock.close()
                raise
            server = gevent.server.StreamServer(sock, self._accept, spawn=self.pool)
        server.init_socket()
        server.start()
        return server

    def _accept(self, sock, address) -> None:
        addr = (_unmap(address[0]), address[1])
        conn = Connection(sock, addr)
        try:
            reserved, info_hash, peer_id = conn.read_handshake()
            if info_hash != self.meta.info_hash:
                raise ProtocolError("handshake for another torrent")
            conn.send_handshake(self.meta.info_hash, self.peer_id, self._reserved)
        except (ProtocolError, OSError, ConnectionError) as exc:
            conn.close(str(exc))
            return
        self._run_peer(conn, reserved, peer_id, incoming=True)

    def _dial(self, cand: Candidate) -> None:
        addr = cand.address
        try:
            conn = Connection.connect(addr)
        except OSError as exc:
            self._dial_failed(cand, f"connect failed: {exc}")
            return
        try:
            conn.send_handshake(self.meta.info_hash, self.peer_id, self._reserved)
            reserved, info_hash, peer_id = conn.read_handshake()
            if info_hash != self.meta.info_hash:
                raise ProtocolError("peer answered for another torrent")
        except (ProtocolError, OSError, ConnectionError) as exc:
            conn.close(str(exc))
            self._dial_failed(cand, f"handshake failed: {exc}")
            return
        self._run_peer(conn, reserved, peer_id, incoming=False, cand=cand)

    def _dial_failed(self, cand: Candidate, reason: str) -> None:
        cand.connected = False
        cand.failures += 1
        cand.next_try = time.monotonic() + min(RETRY_MAX, RETRY_BASE * 2 ** min(cand.failures - 1, 8))
        self.log.debug("dial failed", peer=format_address(cand.address), reason=reason)

    def _run_peer(self, conn: Connection, reserved: bytes, peer_id: bytes, incoming: bool, cand=None) -> None:
        addr = conn.address
        if peer_id == self.peer_id:
            self.self_addresses.add(addr)
            if cand is not None:
                self.candidates.pop(addr, None)
            conn.close("connected to ourselves")
            return
        if peer_id in self.banned_ids or addr in self.banned_addresses:
            conn.close("banned")
            return
        if addr in self.peers or any(p.peer_id == peer_id for p in self.peers.values()):
            conn.close("already connected")
            if cand is not None:
                cand.connected = False
            return
        if len(self.peers) >= self.max_peers:
            conn.close("too many peers")
            return
        peer = Peer(self, conn, peer_id, reserved, incoming, source=cand.source if cand is not None else "incoming")
        self.peers[addr] = peer
        if cand is not None:
            cand.failures = 0
        self.log.info("peer connected", peer=format_address(addr), source=peer.source, client=peer.client,
                      incoming=incoming, fast=peer.fast)
        self.hook.torrentcore_on_peer_connected(torrent=self.meta, peer=peer.info())
        reason = "closed"
        try:
            reason = peer.run()
        except Exception as exc:  # noqa: BLE001 - a bug must cost one connection, not the download
            self.log.debug("internal error in peer loop", exc_info=True)
            self.log.warning("internal error in peer loop", error=repr(exc))
            reason = f"internal error: {exc!r}"
        finally:
            conn.close(reason)
            self._peer_gone(peer, reason, cand)

    def _peer_gone(self, peer: Peer, reason: str, cand: Candidate | None) -> None:
        self.peers.pop(peer.address, None)
        peer._drop_requests(send_cancel=False)
        self.manager.remove_peer_pieces(peer.has)
        if self.choker.optimistic is peer:
            self.choker.optimistic = None
        if not peer.am_choking:
            # Its upload slot is free: give it to a waiting peer now, not at the next round (libtorrent agrees).
            self.choker.rechoke()
        if cand is not None:
            cand.connected = False
            cand.failures += 1
            cand.next_try = time.monotonic() + min(RETRY_MAX, RETRY_BASE * 2 ** min(cand.failures - 1, 5))
        elif peer.incoming and peer.listen_port and peer.address[0]:
            # Remember an incoming peer's listening address so we can dial it back later.
            self.add_peers([(peer.address[0], peer.listen_port)], source="incoming")
        self.log.debug("peer lost", peer=format_address(peer.address), reason=reason)
        self.hook.torrentcore_on_peer_lost(torrent=self.meta, peer=peer.info(), reason=reason)
        self.wake_requesters()
        self._connect_now.set()

    def _connect_loop(self) -> None:
        while True:
            self._connect_now.wait(1.0)
            self._connect_now.clear()
            if self.complete and not self._should_seed():
                continue
            now = time.monotonic()
            dialing = sum(1 for c in self.candidates.values() if c.connected)
            room = self.max_peers - max(dialing, len(self.peers))
            if room <= 0 or self.pool.full():
                continue
            ready = [
                c
                for c in self.candidates.values()
                if not c.connected
                and c.next_try <= now
                and c.address not in self.peers
                and c.address not in self.banned_addresses
                and not self._is_self(c.address)
            ]
            random.shuffle(ready)
            ready.sort(key=lambda c: c.failures)
            for cand in ready[:room]:
                cand.connected = True
                self.pool.spawn(self._dial, cand)

    # --- trackers ----------------------------------------------------------------------------------

    def _left(self) -> int:
        """Bytes of wanted pieces (all, or those of the selected files) not verified yet."""
        if self.selected is None:
            done = sum(self.meta.piece_size(i) for i in self.have.indices()) if self.have.count else 0
            return max(0, self.meta.total_length - done)
        have = self.have
        return sum(self.meta.piece_size(i) for i in self.selected.indices() if not have[i])

    def _wanted_bytes(self) -> int:
        """Bytes of the wanted pieces."""
        if self.selected is None:
            return self.meta.total_length
        return sum(self.meta.piece_size(i) for i in self.selected.indices())

    def _announce(self, event: str, timeout: float = 15.0):
        req = AnnounceRequest(
            info_hash=self.meta.info_hash,
            peer_id=self.peer_id,
            port=self.port or 6881,
            uploaded=self.uploaded,
            downloaded=self.downloaded,
            left=self._left(),
            event=event,
            numwant=200 if not self.complete else 50,
            key=self._key,
        )
        # One bound for the whole round, DNS look-ups included (requests and getaddrinfo have none).
        limit = timeout * 4
        with gevent.Timeout(limit, TrackerError(f"no tracker answered within {limit:g} s")):
            return self.tiers.announce(req, timeout=timeout, total_timeout=limit)

    @property
    def _key(self) -> int:
        return int.from_bytes(self.peer_id[-4:], "big")

    def _announce_loop(self) -> None:
        event = "started"
        failures = 0
        completed_sent = self.complete
        while True:
            if self.complete and not completed_sent and event != "started":
                event = "completed"
            try:
                resp = self._announce(event)
            except TrackerError as exc:
                failures += 1
                self.tiers.unreported_failures()  # each one is in this message already
                self.hook.torrentcore_on_error(torrent=self.meta, message=f"tracker: {exc}", fatal=False)
                wait = min(300.0, 5.0 * 2 ** min(failures, 6))
                self._early_announce_at = time.monotonic() + wait
            else:
                failures = 0
                if event == "completed" or (event == "started" and self.complete):
                    completed_sent = True
                event = ""
                self._last_announce = time.monotonic()
                self._min_interval = float(resp.min_interval or min(resp.interval, 60))
                self._early_announce_at = self._last_announce + max(self._min_interval, 15.0)
                for failure in self.tiers.unreported_failures():  # another tracker answered in its place
                    self.hook.torrentcore_on_error(torrent=self.meta, message=f"tracker {failure}", fatal=False)
                if resp.warning:
                    self.hook.torrentcore_on_error(
                        torrent=self.meta, message=f"tracker warning: {resp.warning}", fatal=False
                    )
                self.add_peers(resp.peers)
                wait = float(max(resp.interval, 1))
            self._announce_now.clear()
            self._announce_now.wait(wait)

    def _dht_loop(self) -> None:
        """Find peers through the DHT and announce our port: at start, then every few minutes (sooner while
        we are short of peers)."""
        warned = False
        while True:
            try:
                peers = self.dht.get_peers(self.meta.info_hash, timeout=DHT_LOOKUP_TIMEOUT,
                                           announce_port=self.port or None)
            except Exception as exc:  # noqa: BLE001 - a DHT bug costs this peer source, never the download
                self.log.warning("dht lookup failed", error=repr(exc), exc_info=True)
                peers = []
            new = [a for a in peers if a not in self.candidates]
            self.add_peers(peers, source="dht")
            self.log.info("dht peers", found=len(peers), new=len(new), announced_port=self.port or None)
            if not warned and self.tiers is None and not self.candidates and not len(self.dht.table):
                # The only peer source has nobody to ask: say so once instead of showing "0 peers" forever.
                warned = True
                self.log.warning("the DHT knows no node yet (bootstrap nodes unreachable?) and the torrent has "
                                 "no tracker: try --dht-bootstrap HOST:PORT or --peer HOST:PORT")
            short = not self.complete and len(self.peers) < WANT_MORE_PEERS
            gevent.sleep(DHT_SHORT_INTERVAL if short else DHT_INTERVAL)

    def _maybe_announce_early(self) -> None:
        """Ask the tracker for more peers when we are short of them (respecting min interval and back-off)."""
        if self.tiers is None or self.complete:
            return
        if len(self.peers) >= WANT_MORE_PEERS:
            return
        if any(not c.connected and c.next_try <= time.monotonic() for c in self.candidates.values()):
            return
        if time.monotonic() >= self._early_announce_at:
            self._announce_now.set()

    # --- downloading -------------------------------------------------------------------------------

    def wake_requesters(self) -> None:
        """Blocks became free: let idle unchoked peers take them."""
        for peer in list(self.peers.values()):
            if (not peer.peer_choking or peer.allowed_fast_in) and peer.am_interested and len(peer.outstanding) < 4:
                peer.fill_requests()

    def verify_piece(self, piece: Piece) -> None:
        """Hash a complete piece off the event loop, then store it (never the other way round).

        The caller (a peer's reader) waits while :data:`VERIFY_QUEUE_BYTES` of pieces are queued, and
        yields once so the hashing starts now, on the other core, while it goes on receiving.
        """
        self._verify_slots.acquire()
        gevent.spawn(self._guard, self._verify_then_release, piece)
        gevent.sleep(0)

    def _verify_then_release(self, piece: Piece) -> None:
        try:
            self._verify(piece)
        finally:
            self._verify_slots.release()

    def _verify(self, piece: Piece) -> None:
        index = piece.index
        if getattr(self.storage, "thread_safe_writes", False):
            stored = gevent.get_hub().threadpool.apply(self._hash_and_store, (piece,))
            if isinstance(stored, StorageError):
                raise stored  # on the event loop: _guard makes it one clear line
            if self.exit_code is not None:
                return
            if not stored:
                self._piece_failed(piece)
                return
        else:
            digest = gevent.get_hub().threadpool.apply(_sha1, (piece.buffer,))
            if self.exit_code is not None:
                return
            if digest != self.meta.piece_hash(index):
                self._piece_failed(piece)
                return
            self.storage.write(index, 0, piece.buffer)
            self.storage.mark_complete(index)
        self.manager.piece_verified(index)
        self.hook.torrentcore_on_piece_verified(torrent=self.meta, index=index)
        if index in self._bad_blocks:
            self._smart_ban(index, piece)
        self.manager.recycle(piece)
        for peer in list(self.peers.values()):
            # A seed never requests anything: no HAVE for it (libtorrent does the same). On loopback one
            # small send per piece and seed was the event loop's largest cost (28%, py-spy).
            if not peer.has.complete:
                peer.send_have(index)
        if self.complete:
            self._on_complete()

    def _hash_and_store(self, piece: Piece) -> bool | StorageError:
        """In a worker thread: SHA-1 the piece and only if it matches write it and mark it complete.

        For storages that declare ``thread_safe_writes``: the write (a quarter of the event loop's time
        when it ran there) then overlaps with receiving. Every storage call that can run meanwhile holds
        ``_disk_lock``. False: the hash did not match, or the torrent is stopping (nothing written). A
        StorageError is returned, not raised.
        """
        if _sha1(piece.buffer) != self.meta.piece_hash(piece.index):
            return False
        with self._disk_lock:
            if self._storage_closed or self.exit_code is not None:
                return False
            try:
                self.storage.write(piece.index, 0, piece.buffer)
                self.storage.mark_complete(piece.index)
            except StorageError as exc:
                return exc  # returned, not raised: gevent prints a traceback for errors leaving its thread pool
        return True

    def _piece_failed(self, piece: Piece) -> None:
        index = piece.index
        senders = set(piece.senders.values())
        self.wasted += piece.size
        self.manager.piece_failed(index)
        self.log.warning("piece failed hash check", piece=index, peers=len(senders))
        self.hook.torrentcore_on_piece_failed(torrent=self.meta, index=index, peers=sorted(senders))
        # Keep a fingerprint of each block and who sent it; when the piece later verifies,
        # the senders of blocks that differ from the good data are the liars (libtorrent's smart ban).
        view = memoryview(piece.buffer)
        self._bad_blocks[index] = {
            b: (sender, _sha1(view[b * 16384 : (b + 1) * 16384])) for b, sender in piece.senders.items()
        }
        del view
        self.manager.recycle(piece)
        if len(senders) == 1:
            self._strike(next(iter(senders)))
        self.wake_requesters()

    def _smart_ban(self, index: int, piece: Piece) -> None:
        view = memoryview(piece.buffer)
        for b, (sender, digest) in self._bad_blocks.pop(index).items():
            if _sha1(view[b * 16384 : (b + 1) * 16384]) != digest:
                self._ban(sender, "sent corrupt data")

    def _strike(self, address: tuple[str, int]) -> None:
        self.strikes[address] = self.strikes.get(address, 0) + 1
        if self.strikes[address] >= BAN_STRIKES:
            self._ban(address, "sent data for several pieces that failed their hash")

    def _ban(self, address: tuple[str, int], reason: str) -> None:
        if address in self.banned_addresses:
            return
        self.banned_addresses.add(address)
        peer = self.peers.get(address)
        self.log.warning("peer banned", peer=format_address(address), reason=reason)
        if peer is not None:
            self.banned_ids.add(peer.peer_id)
            if peer.listen_port:
                self.banned_addresses.add((address[0], peer.listen_port))
            peer.conn.close(f"banned: {reason}")
        self.candidates.pop(address, None)

    def _on_complete(self) -> None:
        if self.completed_at is not None:
            return
        self.completed_at = time.monotonic()
        self.state = "seeding"
        with self._disk_lock:
            self.storage.flush()
        self.log.info("download complete", seconds=round(self.completed_at - self.started_at, 2))
        self.hook.torrentcore_on_completed(torrent=self.meta, snapshot=self.snapshot())
        self._announce_now.set()
        for peer in list(self.peers.values()):
            if peer.has.complete:
                peer.conn.close("both sides are seeds")
        if not self._should_seed():
            gevent.spawn_later(0.1, self._finish, EXIT_OK)

    # --- seeding limits ----------------------------------------------------------------------------

    def _seeding_done(self) -> bool:
        if self.completed_at is None or not self._should_seed():
            return False
        ratio = getattr(self.options, "seed_ratio", None)
        minutes = getattr(self.options, "seed_time", None)
        base = self.downloaded or self.meta.total_length
        if ratio is not None and ratio > 0 and self.uploaded / base >= ratio:
            return True
        now = time.monotonic()
        if minutes is not None and minutes >= 0 and now - self.completed_at >= minutes * 60:
            return True
        if any(p.peer_interested for p in self.peers.values()):
            self._last_interest = now
        idle = getattr(self.options, "seed_idle", 0) or 0
        return idle > 0 and now - max(self._last_interest, self.completed_at) >= idle * 60

    # --- periodic work -----------------------------------------------------------------------------

    def _tick_loop(self) -> None:
        last = time.monotonic()
        while True:
            gevent.sleep(1.0)
            now = time.monotonic()
            elapsed = now - last
            last = now
            self._rate_down = self._bytes_down_tick / elapsed
            self._rate_up = self._bytes_up_tick / elapsed
            self._bytes_down_tick = self._bytes_up_tick = 0
            for peer in list(self.peers.values()):
                peer.down.tick(elapsed)
                peer.up.tick(elapsed)
                peer.check_timeouts(now)
            self.wake_requesters()
            self._maybe_announce_early()
            if self._seeding_done():
                self._finish(EXIT_OK)

    def _choke_loop(self) -> None:
        while True:
            self.choker.rechoke()
            gevent.sleep(CHOKE_INTERVAL)

    def _report_loop(self) -> None:
        while True:
            self.hook.torrentcore_on_progress(torrent=self.meta, snapshot=self.snapshot())
            gevent.sleep(1.0)

    def snapshot(self) -> ProgressSnapshot:
        """The torrent's state now, for reporters."""
        left = self._left()
        if self.selected is None:
            have_bytes = self.meta.total_length - left
            wanted_bytes = None
        else:
            have_bytes = sum(self.meta.piece_size(i) for i in self.have.indices()) if self.have.count else 0
            wanted_bytes = self._wanted_bytes()
        rate = sum(p.down.rate for p in self.peers.values()) or self._rate_down
        eta = left / rate if rate > 0 and left else (0.0 if not left else None)
        seeds = sum(1 for p in self.peers.values() if p.has.complete)
        return ProgressSnapshot(
            name=self.meta.name,
            state=self.state if self.exit_code is None else "stopping",
            total_bytes=self.meta.total_length,
            have_bytes=have_bytes,
            pieces_done=self.have.count,
            num_pieces=self.meta.num_pieces,
            downloaded=self.downloaded,
            uploaded=self.uploaded,
            download_rate=rate,
            upload_rate=sum(p.up.rate for p in self.peers.values()) or self._rate_up,
            peers=len(self.peers),
            seeds=seeds,
            leechers=sum(1 for p in self.peers.values() if not p.has.complete and p.peer_interested),
            eta=eta,
            elapsed=time.monotonic() - self.started_at,
            checked=self.checked,
            wasted=self.wasted,
            peer_sources=dict(collections.Counter(p.source for p in self.peers.values())),
            selected_files=None if self.selected_files is None else len(self.selected_files),
            wanted_bytes=wanted_bytes,
            wanted_have_bytes=0 if wanted_bytes is None else wanted_bytes - left,
        )

    # --- shutdown ----------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        for g in self._greenlets:
            g.kill(block=False)
        server = getattr(self, "server", None)
        if server is not None:
            server.stop(timeout=1)
        for more in self._more_servers:
            more.stop(timeout=1)
        for peer in list(self.peers.values()):
            peer.conn.close("shutting down")
        if self.tiers is not None and self._last_announce:
            try:
                with gevent.Timeout(5, TrackerError("timed out")):
                    self._announce("stopped", timeout=4.0)
            except (TrackerError, gevent.Timeout):
                pass
        self.pool.kill(block=True, timeout=2)
        try:
            with self._disk_lock:  # waits for a write in a worker thread; none starts after this
                self._storage_closed = True
                self.storage.close()
        except StorageError as exc:
            if self.exit_code in (None, EXIT_OK):
                self.fail(str(exc))
        code = self.exit_code if self.exit_code is not None else EXIT_RUNTIME
        if self.exit_code is None:
            self.exit_code = code
        self.state = "done"
        self.hook.torrentcore_on_finish(torrent=self.meta, snapshot=self.snapshot(), exit_code=code)


_RESERVED = msg.reserved_bytes(msg.RESERVED_EXTENSIONS, msg.RESERVED_FAST)
_RESERVED_DHT = bytes(a | b for a, b in zip(_RESERVED, msg.reserved_bytes(msg.RESERVED_DHT)))


def _listen_hosts(text: str) -> list[str]:
    """``--listen-host``: comma-separated addresses (``[v6]`` brackets allowed); ``0.0.0.0`` adds ``::``."""
    hosts = [h.strip().strip("[]") for h in text.split(",") if h.strip()] or ["0.0.0.0"]
    if hosts == ["0.0.0.0"] and _ipv6_available():
        hosts.append("::")  # listen on IPv6 too (BEP 7)
    return hosts


@functools.lru_cache(maxsize=1)
def _ipv6_available() -> bool:
    """Whether this host can open IPv6 sockets at all."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def _unmap(host: str) -> str:
    """``::ffff:1.2.3.4`` (an IPv4 peer on a dual-stack socket) -> ``1.2.3.4``; other hosts unchanged."""
    if host.startswith("::ffff:"):
        try:
            mapped = ipaddress.IPv6Address(host).ipv4_mapped
        except ValueError:
            return host
        if mapped is not None:
            return str(mapped)
    return host


@functools.lru_cache(maxsize=1)
def _local_addresses() -> frozenset[str]:
    """Addresses of this host (to recognise ourselves in tracker replies)."""
    out = {"0.0.0.0", "::"}
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            out.add(info[4][0])
    except OSError:
        pass
    return frozenset(out)


__all__ = ["Torrent", "make_peer_id", "Candidate"]
