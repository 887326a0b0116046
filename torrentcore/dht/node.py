"""A DHT node (BEP 5) on one UDP socket, run by gevent greenlets.

Server side: answers ``ping``, ``find_node``, ``get_peers`` (stored peers and/or the closest nodes,
plus a token) and ``announce_peer`` (token checked against a secret rotated every 5 minutes; the
previous secret still accepted; ``implied_port`` honoured) into a bounded :class:`PeerStore`
whose entries expire after 30 minutes.

Client side: iterative lookups (``find_node``, ``get_peers``) with ``alpha`` queries in flight,
a per-query timeout, an overall timeout and a bounded number of rounds; ``announce_peer`` to the
closest nodes that gave us tokens.

Abuse resistance: incoming queries are rate limited per source IP and globally (token buckets;
over the limit they are dropped silently); replies go only to the query's source address and are
small (at most 8 nodes and :data:`MAX_VALUES_REPLY` peers); responses are accepted only when both
the transaction id and the address match a query we sent; every table is bounded.
"""

from __future__ import annotations

import collections
import hashlib
import random
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import gevent
import gevent.event
import gevent.lock
import structlog
from gevent import socket

from . import krpc
from .lookup import MAX_ROUNDS, LookupPort, LookupResult, lookup, resolve_routers
from .routing import K, RoutingTable, random_id
from .state import MAX_SAVED_NODES, StateFile, default_state_path

log = structlog.get_logger(__name__)

#: The well-known public bootstrap routers (used when none are configured).
DEFAULT_BOOTSTRAP: tuple[tuple[str, int], ...] = (
    ("router.bittorrent.com", 6881),
    ("router.utorrent.com", 6881),
    ("dht.transmissionbt.com", 6881),
    ("dht.libtorrent.org", 25401),
)

#: Seconds to wait for one answer.
QUERY_TIMEOUT = 2.0
#: Queries in flight per lookup round.
ALPHA = 4
#: Most queries of ours waiting for an answer at once.
MAX_OUTSTANDING = 256
#: Pings of nodes that queried us (so that they can join the table) in flight at once.
MAX_PINGS_IN_FLIGHT = 32
#: Peers returned in one get_peers reply (6 bytes each).
MAX_VALUES_REPLY = 32
#: Token secret rotation (the previous secret stays valid for another period).
TOKEN_ROTATION = 300.0
#: How long an announced peer is kept.
PEER_TTL = 30 * 60.0
#: Incoming query limits: per source IP and in total (queries per second, burst).
PER_IP_RATE = (20.0, 40.0)
GLOBAL_RATE = (400.0, 800.0)
#: All datagrams (queries, responses, garbage) read per second before any parsing (rate, burst).
PACKET_RATE = (2000.0, 4000.0)
#: Source IPs whose rate we track (least recently seen forgotten first).
MAX_TRACKED_IPS = 4096
#: Maintenance tick, state saving period.
TICK = 5.0
SAVE_EVERY = 600.0


class RateLimiter:
    """Token buckets: one per source IP (bounded number of IPs) and one global."""

    def __init__(self, per_ip: tuple[float, float] = PER_IP_RATE, overall: tuple[float, float] = GLOBAL_RATE,
                 max_ips: int = MAX_TRACKED_IPS, clock=time.monotonic) -> None:
        self.per_ip = per_ip
        self.overall = overall
        self.max_ips = max_ips
        self.clock = clock
        self._ips: collections.OrderedDict[str, list[float]] = collections.OrderedDict()
        self._global = [overall[1], clock()]

    @staticmethod
    def _take(bucket: list[float], rate: float, burst: float, now: float) -> bool:
        bucket[0] = min(burst, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return True
        return False

    def allow(self, ip: str) -> bool:
        """Whether one more query from ``ip`` may be answered now (takes a token when it may)."""
        now = self.clock()
        bucket = self._ips.get(ip)
        if bucket is None:
            bucket = [self.per_ip[1], now]
            self._ips[ip] = bucket
            if len(self._ips) > self.max_ips:
                self._ips.popitem(last=False)
        else:
            self._ips.move_to_end(ip)
        # Refill the global bucket, but only spend from it if the per-IP bucket allows.
        self._global[0] = min(self.overall[1], self._global[0] + (now - self._global[1]) * self.overall[0])
        self._global[1] = now
        if self._global[0] < 1.0:
            return False
        if not self._take(bucket, self.per_ip[0], self.per_ip[1], now):
            return False
        self._global[0] -= 1.0
        return True


class PeerStore:
    """Peers announced to us: per info-hash and overall caps, expiry after ``ttl`` seconds."""

    def __init__(self, max_per_hash: int = 200, max_hashes: int = 2000, max_total: int = 20000,
                 ttl: float = PEER_TTL, clock=time.monotonic) -> None:
        self.max_per_hash = max_per_hash
        self.max_hashes = max_hashes
        self.max_total = max_total
        self.ttl = ttl
        self.clock = clock
        self._peers: dict[bytes, collections.OrderedDict[tuple[str, int], float]] = {}
        self.total = 0

    def add(self, info_hash: bytes, address: tuple[str, int]) -> bool:
        """Store (or refresh) a peer; ``False`` when the caps refuse it."""
        peers = self._peers.get(info_hash)
        if peers is None:
            if len(self._peers) >= self.max_hashes:
                self.expire()
                if len(self._peers) >= self.max_hashes:
                    return False
            peers = self._peers[info_hash] = collections.OrderedDict()
        expiry = self.clock() + self.ttl
        if address in peers:
            peers[address] = expiry
            peers.move_to_end(address)
            return True
        if len(peers) >= self.max_per_hash:
            peers.popitem(last=False)  # the oldest announce makes room
            self.total -= 1
        elif self.total >= self.max_total:
            self.expire()
            if self.total >= self.max_total:
                if not peers:
                    del self._peers[info_hash]
                return False
        peers[address] = expiry
        self.total += 1
        return True

    def get(self, info_hash: bytes, count: int = MAX_VALUES_REPLY) -> list[tuple[str, int]]:
        """Up to ``count`` live peers of ``info_hash`` (a random sample when there are more)."""
        now = self.clock()
        peers = [a for a, exp in self._peers.get(info_hash, {}).items() if exp > now]
        if len(peers) > count:
            peers = random.sample(peers, count)
        return peers

    def count(self, info_hash: bytes) -> int:
        """Peers stored for ``info_hash`` (expired ones included until :meth:`expire`)."""
        return len(self._peers.get(info_hash, ()))

    def __len__(self) -> int:
        return len(self._peers)

    def expire(self) -> None:
        """Drop expired peers and empty info-hashes."""
        now = self.clock()
        for ih in list(self._peers):
            peers = self._peers[ih]
            for addr in [a for a, exp in peers.items() if exp <= now]:
                del peers[addr]
                self.total -= 1
            if not peers:
                del self._peers[ih]


class Tokens:
    """get_peers tokens: a hash of the asker's IP and a secret rotated every :data:`TOKEN_ROTATION` s."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.secret = secrets.token_bytes(16)
        self.previous = self.secret
        self.rotated_at = clock()

    def rotate(self) -> None:
        """New secret; the previous one stays valid for one more period."""
        self.previous, self.secret = self.secret, secrets.token_bytes(16)
        self.rotated_at = self.clock()

    def maybe_rotate(self) -> None:
        """Rotate when the period is over."""
        if self.clock() - self.rotated_at >= TOKEN_ROTATION:
            self.rotate()

    @staticmethod
    def _make(secret: bytes, ip: str) -> bytes:
        return hashlib.sha1(secret + ip.encode()).digest()[:8]

    def make(self, ip: str) -> bytes:
        """The token for ``ip``."""
        return self._make(self.secret, ip)

    def valid(self, ip: str, token: bytes) -> bool:
        """Whether ``token`` was given to ``ip`` under the current or the previous secret."""
        return token in (self._make(self.secret, ip), self._make(self.previous, ip))


@dataclass
class _Pending:
    address: tuple[str, int]
    result: gevent.event.AsyncResult = field(default_factory=gevent.event.AsyncResult)


class DHTNode:
    """One DHT node; see the package docstring for the API the engine uses.

    About 400 lines: the server, the queries we send and the abuse limits share the socket, the routing
    table and the token secrets; the message formats (:mod:`.krpc`), the table (:mod:`.routing`), the
    iterative lookup (:mod:`.lookup`) and the state file (:mod:`.state`) live in their own modules.
    """

    def __init__(self, port: int = 0, bootstrap=None, state_path: str | None = None, host: str = "0.0.0.0",
                 node_id: bytes | None = None, *, per_ip_rate: tuple[float, float] = PER_IP_RATE,
                 global_rate: tuple[float, float] = GLOBAL_RATE, alpha: int = ALPHA,
                 query_timeout: float = QUERY_TIMEOUT, sock: Any = None) -> None:
        #: A bound UDP socket shared with uTP (the session's): this node then neither binds nor reads it; its
        #: owner passes KRPC datagrams to :meth:`handle_datagram` and closes it.
        self.shared_sock = sock
        self.requested_port = port
        self.host = host
        self.bootstrap = list(DEFAULT_BOOTSTRAP if bootstrap is None else bootstrap)
        self.state_path = state_path
        self.alpha = max(1, min(8, alpha))
        self.query_timeout = query_timeout
        #: The state file (None: no file, or another process holds its lock).
        self._state = StateFile(state_path) if state_path else None
        if self._state is not None and not self._state.lock():
            log.info("dht state file in use by another process: this node uses a fresh id and saves nothing",
                     path=state_path)
            self.state_path = self._state = None
        saved_id, saved_nodes = self._state.load() if self._state is not None else (None, [])
        self.node_id = node_id or saved_id or random_id()
        self.saved_nodes: list[tuple[str, int]] = saved_nodes
        self.table = RoutingTable(self.node_id)
        self.store = PeerStore()
        self.tokens = Tokens()
        self.limiter = RateLimiter(per_ip_rate, global_rate)
        self._packets = RateLimiter(PACKET_RATE, PACKET_RATE, max_ips=1)  # one bucket for every datagram
        self.stats: collections.Counter[str] = collections.Counter()
        self.log = log.bind(dht_node=self.node_id.hex()[:8])
        self.sock = None
        self.port = 0
        self._pending: dict[bytes, _Pending] = {}
        self._slots = gevent.lock.BoundedSemaphore(MAX_OUTSTANDING)
        self._greenlets: list[gevent.Greenlet] = []
        self._bootstrap_addresses: list[tuple[str, int]] | None = None
        self._pinged: collections.OrderedDict[tuple[str, int], float] = collections.OrderedDict()
        self._pings_in_flight = 0
        self._bootstrapped = gevent.event.Event()
        self.running = False
        self._lookup_port = LookupPort(self.node_id, self.query, self.table.closest, self._seed_addresses,
                                       lambda: self.running, self.stats, self.log)

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> DHTNode:
        """Bind the UDP socket (the requested port, else any free one) and start serving and bootstrapping."""
        if self.shared_sock is not None:
            self.sock = self.shared_sock
            self.port = self.sock.getsockname()[1]
            self.running = True
            self._greenlets = [gevent.spawn(self._maintenance_loop)]
            self.log.info("dht node started", port=self.port, node_id=self.node_id.hex(), shared_with_utp=True,
                          bootstrap=[f"{h}:{p}" for h, p in self.bootstrap], saved_nodes=len(self.saved_nodes))
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, self.requested_port))
        except (OSError, OverflowError):  # taken, or not a port number at all
            if not self.requested_port:
                sock.close()
                raise
            self.log.info("dht port taken, using any free port", port=self.requested_port)
            try:
                sock.bind((self.host, 0))
            except OSError:
                sock.close()
                raise
        self.sock = sock
        self.port = sock.getsockname()[1]
        self.running = True
        self._greenlets = [gevent.spawn(self._receive_loop), gevent.spawn(self._maintenance_loop)]
        self.log.info("dht node started", port=self.port, node_id=self.node_id.hex(),
                      bootstrap=[f"{h}:{p}" for h, p in self.bootstrap], saved_nodes=len(self.saved_nodes))
        return self

    def stop(self) -> None:
        """Stop serving, save the state file, close the socket (idempotent)."""
        if not self.running:
            self._unlock_state()  # constructed but never started (or start failed)
            return
        self.running = False
        for g in self._greenlets:
            g.kill(block=False)
        for pending in list(self._pending.values()):
            pending.result.set(None)
        self._pending.clear()
        self.save_state()
        self._unlock_state()
        if self.sock is not None and self.shared_sock is None:
            self.sock.close()
        self.log.info("dht node stopped", nodes=len(self.table), **dict(self.stats))

    def __enter__(self) -> DHTNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- persistence ----------------------------------------------------------------------------------

    def _unlock_state(self) -> None:
        if self._state is not None:
            self._state.unlock()

    def save_state(self) -> None:
        """Write the node id and the routing table's nodes atomically (errors are logged, not raised)."""
        if self._state is None:
            return
        nodes = [(n.host, n.port) for n in self.table.closest(self.node_id, MAX_SAVED_NODES)]
        if not nodes:  # keep what we had rather than forget every node after a run that found none
            nodes = list(self.saved_nodes)
        try:
            self._state.save(self.node_id, nodes)
        except OSError as exc:
            self.log.warning("cannot save dht state", path=self._state.path, error=str(exc))

    # --- receiving -------------------------------------------------------------------------------------

    def _receive_loop(self) -> None:
        while self.running:
            try:
                data, addr = self.sock.recvfrom(krpc.MAX_DATAGRAM + 1)
            except OSError as exc:
                if not self.running:
                    return
                self.log.debug("dht receive error", error=str(exc))
                gevent.sleep(0.01)
                continue
            try:
                self._handle_datagram(data, (addr[0], addr[1]))
            except Exception as exc:  # noqa: BLE001 - one bad datagram must never stop the node
                self.stats["internal_errors"] += 1
                self.log.warning("dht internal error on a datagram", error=repr(exc), exc_info=True)

    def handle_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        """One datagram read from a shared socket (never raises)."""
        if not self.running:
            return
        try:
            self._handle_datagram(data, (addr[0], addr[1]))
        except Exception as exc:  # noqa: BLE001 - one bad datagram must never stop the node
            self.stats["internal_errors"] += 1
            self.log.warning("dht internal error on a datagram", error=repr(exc), exc_info=True)

    def _handle_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) > krpc.MAX_DATAGRAM:
            self.stats["dropped_oversize"] += 1
            return
        if not self._packets.allow(""):
            self.stats["dropped_flood"] += 1
            return
        try:
            msg = krpc.decode(data)
        except krpc.KRPCError as exc:
            self.stats["malformed"] += 1
            if exc.is_query and exc.tid is not None and self.limiter.allow(addr[0]):
                self._send(krpc.error(exc.tid, exc.code, str(exc)), addr)
            return
        if msg.kind == "q":
            if not self.limiter.allow(addr[0]):
                self.stats["dropped_rate"] += 1
                return
            self._handle_query(msg, addr)
            return
        pending = self._pending.get(msg.tid)
        if pending is None or pending.address != addr:
            self.stats["unmatched_responses"] += 1
            return
        del self._pending[msg.tid]
        pending.result.set(msg)

    def _send(self, data: bytes, addr: tuple[str, int]) -> bool:
        try:
            self.sock.sendto(data, addr)
            return True
        except OSError as exc:
            self.log.debug("dht send failed", to=f"{addr[0]}:{addr[1]}", error=str(exc))
            return False

    # --- server side -----------------------------------------------------------------------------------

    def _handle_query(self, msg: krpc.Message, addr: tuple[str, int]) -> None:
        args = msg.args
        reply: dict = {"id": self.node_id}
        if msg.query == "find_node":
            reply["nodes"] = self._compact_closest(args[b"target"])
        elif msg.query == "get_peers":
            info_hash = args[b"info_hash"]
            reply["token"] = self.tokens.make(addr[0])
            values = self.store.get(info_hash, MAX_VALUES_REPLY)
            if values:
                reply["values"] = [krpc.encode_peer(h, p) for h, p in values]
            reply["nodes"] = self._compact_closest(info_hash)
        elif msg.query == "announce_peer":
            if not self.tokens.valid(addr[0], args[b"token"]):
                self.stats["bad_tokens"] += 1
                self._send(krpc.error(msg.tid, krpc.PROTOCOL_ERROR, "bad token"), addr)
                return
            port = addr[1] if args.get(b"implied_port") == 1 else args[b"port"]
            if self.store.add(args[b"info_hash"], (addr[0], port)):
                self.stats["announces_stored"] += 1
        self.stats[f"answered_{msg.query}"] += 1
        self._send(krpc.response(msg.tid, reply), addr)
        if args.get(b"ro") != 1:  # BEP 43: read-only nodes answer no queries, so they never join the table
            self._note_querier(msg.sender_id, addr)

    def _compact_closest(self, target: bytes) -> bytes:
        return krpc.encode_nodes((n.id, n.host, n.port) for n in self.table.closest(target, K))

    def _note_querier(self, node_id: bytes, addr: tuple[str, int]) -> None:
        """A node queried us: refresh it, or ping it (once in a while) so that it can join the table."""
        if node_id == self.node_id or not krpc.usable_address(*addr):
            return
        known = self.table.find(node_id)
        if known is not None:
            self.table.add(node_id, addr[0], addr[1], responded=False)
            return
        if not self.table.would_accept(node_id, addr):
            return
        self._maybe_ping(addr)

    def add_contact(self, addr: tuple[str, int]) -> None:
        """A node address learnt elsewhere (a peer's PORT message): ping it; if it answers it may join the table."""
        if self.running and krpc.usable_address(*addr) and self.table.find_address(addr) is None:
            self._maybe_ping(addr)

    def _maybe_ping(self, addr: tuple[str, int]) -> None:
        """Ping ``addr`` unless it was pinged in the last minute or too many such pings are in flight."""
        now = time.monotonic()
        last = self._pinged.get(addr)
        if last is not None and now - last < 60.0:
            return
        self._pinged[addr] = now
        self._pinged.move_to_end(addr)
        while len(self._pinged) > 1024:
            self._pinged.popitem(last=False)
        if self._pings_in_flight < MAX_PINGS_IN_FLIGHT and len(self._pending) < MAX_OUTSTANDING // 2:
            self._pings_in_flight += 1
            gevent.spawn(self._ping_querier, addr)

    def _ping_querier(self, addr: tuple[str, int]) -> None:
        try:
            self.ping(addr)
        finally:
            self._pings_in_flight -= 1

    # --- client side -----------------------------------------------------------------------------------

    def _new_tid(self) -> bytes:
        while True:
            tid = secrets.token_bytes(2)
            if tid not in self._pending:
                return tid

    def query(self, addr: tuple[str, int], name: str, args: dict,
              timeout: float | None = None) -> krpc.Message | None:
        """Send one query and wait (bounded) for its answer; ``None`` on timeout, error reply or shutdown.

        A node that answers is added to the routing table; one that times out is marked failed.
        """
        if not self.running:
            return None
        timeout = self.query_timeout if timeout is None else timeout
        if not self._slots.acquire(timeout=timeout):
            self.stats["no_query_slot"] += 1
            return None
        try:
            tid = self._new_tid()
            pending = self._pending[tid] = _Pending(addr)
            full_args = {"id": self.node_id, **args}
            if not self._send(krpc.query(tid, name, full_args), addr):
                self._pending.pop(tid, None)
                return None
            self.stats[f"sent_{name}"] += 1
            try:
                msg = pending.result.get(timeout=timeout)
            except gevent.Timeout:
                msg = None
            self._pending.pop(tid, None)
        finally:
            self._slots.release()
        if msg is None:
            if self.running:
                self.stats["timeouts"] += 1
                self.table.failed(address=addr)
            return None
        if msg.kind == "e":
            self.stats["error_replies"] += 1
            self.log.debug("dht error reply", to=f"{addr[0]}:{addr[1]}", query=name, error=msg.error)
            return None
        if msg.sender_id != self.node_id:
            self.table.add(msg.sender_id, addr[0], addr[1], responded=True)
        return msg

    def ping(self, addr: tuple[str, int], timeout: float | None = None) -> bytes | None:
        """Ping ``addr``; return its node id, or ``None``."""
        msg = self.query(addr, "ping", {}, timeout)
        return msg.sender_id if msg is not None else None

    def _seed_addresses(self) -> list[tuple[str, int]]:
        """Where a lookup starts when the table is (nearly) empty: saved nodes and bootstrap routers."""
        if self._bootstrap_addresses is None:
            resolved = resolve_routers(self.bootstrap, self.log)
            if not resolved and self.bootstrap:
                return list(self.saved_nodes)  # try again next time (network may come up later)
            self._bootstrap_addresses = resolved
        return list(self.saved_nodes) + self._bootstrap_addresses

    def lookup(self, target: bytes, get_peers: bool = False, timeout: float = 20.0,
               max_rounds: int = MAX_ROUNDS) -> LookupResult:
        """Iterative ``find_node`` (or ``get_peers``) towards ``target``, bounded in time and rounds
        (:mod:`torrentcore.dht.lookup`)."""
        return lookup(self._lookup_port, target, get_peers, timeout, max_rounds, self.alpha, self.query_timeout)

    def find_node(self, target: bytes, timeout: float = 20.0) -> list[tuple[bytes, tuple[str, int]]]:
        """The closest nodes to ``target`` found by an iterative lookup: ``[(id, (host, port))]``."""
        return [(nid, addr) for nid, addr, _ in self.lookup(target, False, timeout).closest]

    def get_peers(self, info_hash: bytes, timeout: float = 30.0,
                  announce_port: int | None = None) -> list[tuple[str, int]]:
        """Peers for ``info_hash`` found by an iterative get_peers lookup (bounded by ``timeout``).

        With ``announce_port``, also announce that we are a peer on that TCP port to the closest
        nodes that gave us a token (see :meth:`announce`).
        """
        started = time.monotonic()
        result = self.lookup(info_hash, True, timeout)
        acks = 0
        if announce_port:
            acks = self._announce_to(info_hash, announce_port, result, max(1.0, timeout - (time.monotonic() - started)))
        self.log.info("dht get_peers done", info_hash=info_hash.hex(), peers=len(result.peers),
                      queries=result.queries, rounds=result.rounds, closest=len(result.closest),
                      announced_to=acks, table=len(self.table))
        return result.peers

    def announce(self, info_hash: bytes, port: int, timeout: float = 30.0) -> int:
        """Announce ``port`` for ``info_hash`` to the closest nodes; return how many accepted."""
        started = time.monotonic()
        result = self.lookup(info_hash, True, timeout)
        return self._announce_to(info_hash, port, result, max(1.0, timeout - (time.monotonic() - started)))

    def _announce_to(self, info_hash: bytes, port: int, result: LookupResult, timeout: float) -> int:
        targets = [(addr, token) for _id, addr, token in result.closest if token]
        jobs = [
            gevent.spawn(self.query, addr, "announce_peer",
                         {"info_hash": info_hash, "port": port, "token": token, "implied_port": 0},
                         min(self.query_timeout, timeout))
            for addr, token in targets
        ]
        gevent.joinall(jobs, timeout=timeout + 0.5)
        return sum(1 for j in jobs if j.successful() and j.value is not None)

    def wait_bootstrapped(self, timeout: float) -> bool:
        """Wait (bounded) until the first bootstrap lookup has finished."""
        return self._bootstrapped.wait(timeout)

    # --- maintenance -----------------------------------------------------------------------------------

    def bootstrap_once(self, timeout: float = 20.0) -> int:
        """A lookup of our own id (fills the table); return the table size."""
        self.lookup(self.node_id, False, timeout)
        self.log.info("dht bootstrap lookup done", nodes=len(self.table))
        return len(self.table)

    def _maintenance_loop(self) -> None:
        backoff = 10.0
        next_bootstrap = 0.0
        last_save = last_expire = time.monotonic()
        while self.running:
            now = time.monotonic()
            try:
                if len(self.table) < K and now >= next_bootstrap:
                    before = len(self.table)
                    found = self.bootstrap_once()
                    # Again soon while the table grows; back off while it does not (a tiny or absent network).
                    backoff = 10.0 if found > before else min(300.0, backoff * 2)
                    next_bootstrap = time.monotonic() + backoff
                    self._bootstrapped.set()
                self.tokens.maybe_rotate()
                if now - last_expire >= 60.0:
                    self.store.expire()
                    last_expire = now
                stale = self.table.stale_buckets()
                if stale:
                    bucket = random.choice(stale)
                    bucket.last_changed = now  # one refresh per period even if nothing answers
                    self.lookup(bucket.random_id(), False, 15.0)
                for node in self.table.questionable()[:2]:
                    gevent.spawn(self.ping, node.address)
                if now - last_save >= SAVE_EVERY:
                    self.save_state()
                    last_save = now
            except gevent.GreenletExit:
                raise
            except Exception as exc:  # noqa: BLE001 - maintenance must go on
                self.log.warning("dht maintenance error", error=repr(exc), exc_info=True)
            gevent.sleep(TICK)


__all__ = ["DHTNode", "PeerStore", "RateLimiter", "Tokens", "LookupResult", "DEFAULT_BOOTSTRAP",
           "default_state_path"]
