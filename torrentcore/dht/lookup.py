"""The iterative lookup of BEP 5 (``find_node`` or ``get_peers`` towards a target), bounded in time and rounds.

Each round asks the ``alpha`` closest candidates not asked yet, in parallel; the nodes they return become
candidates; the lookup ends when no candidate closer than the K closest that answered is left, after
:data:`MAX_ROUNDS` rounds, or at the deadline. The candidate set is trimmed to the closest
:data:`LOOKUP_WIDTH` not asked yet (plus every one asked), and at most :data:`MAX_PEERS` peers are kept.

The node is seen through :class:`LookupPort` (its id, its query call, its routing table's closest nodes,
where to start when the table is nearly empty), never as a whole.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
from gevent import socket

from . import krpc
from .routing import K, distance

#: Most rounds of one lookup.
MAX_ROUNDS = 10
#: Candidates a lookup keeps (the closest ones).
LOOKUP_WIDTH = 4 * K
#: Peers one get_peers lookup collects at most.
MAX_PEERS = 2000

Address = tuple[str, int]


@dataclass
class _Candidate:
    address: Address
    id: bytes | None
    dist: int
    state: str = "new"  # new, asked, ok, failed
    token: bytes | None = None


@dataclass
class LookupResult:
    """What an iterative lookup found."""

    peers: list[Address]
    #: The closest nodes that answered: ``(id, address, token)``, closest first.
    closest: list[tuple[bytes, Address, bytes | None]]
    queries: int
    rounds: int


@dataclass(frozen=True)
class LookupPort:
    """What a lookup needs of its node."""

    node_id: bytes
    #: ``query(address, name, args, timeout)``: the answer, or None (timeout, error reply, shutdown).
    query: Callable[[Address, str, dict, float], krpc.Message | None]
    #: ``closest(target, count)``: the routing table's closest nodes (with ``address`` and ``id``).
    closest: Callable[[bytes, int], list[Any]]
    #: Where to start when the table has fewer than K nodes: saved nodes and bootstrap routers.
    seeds: Callable[[], list[Address]]
    running: Callable[[], bool]
    stats: collections.Counter
    log: Any


def lookup(port: LookupPort, target: bytes, get_peers: bool, timeout: float, max_rounds: int, alpha: int,
           query_timeout: float) -> LookupResult:
    """Iterative ``find_node`` (or ``get_peers``) towards ``target``, bounded in time and rounds."""
    deadline = time.monotonic() + timeout
    far = 1 << 160
    cands: dict[Address, _Candidate] = {}
    for n in port.closest(target, LOOKUP_WIDTH):
        cands[n.address] = _Candidate(n.address, n.id, distance(n.id, target))
    if len(cands) < K:
        for addr in port.seeds():
            cands.setdefault(addr, _Candidate(addr, None, far))
    peers: dict[Address, None] = {}
    queries = rounds = 0
    name = "get_peers" if get_peers else "find_node"
    args = {"info_hash": target} if get_peers else {"target": target}
    while rounds < max_rounds and port.running():
        left = deadline - time.monotonic()
        if left <= 0:
            break
        answered = sorted((c for c in cands.values() if c.state == "ok"), key=lambda c: c.dist)[:K]
        todo = sorted((c for c in cands.values() if c.state == "new"), key=lambda c: c.dist)
        if len(answered) >= K:
            todo = [c for c in todo if c.dist < answered[-1].dist]
        if not todo:
            break
        batch = todo[:alpha]
        rounds += 1
        for c in batch:
            c.state = "asked"
        jobs = [gevent.spawn(port.query, c.address, name, args, min(query_timeout, left)) for c in batch]
        gevent.joinall(jobs, timeout=left + 0.5)
        for c, job in zip(batch, jobs):
            queries += 1
            msg = job.value if job.successful() else None
            if msg is None:
                c.state = "failed"
                continue
            try:
                nodes = krpc.response_nodes(msg)
                values = krpc.response_values(msg) if get_peers else []
            except krpc.KRPCError as exc:
                port.stats["bad_responses"] += 1
                port.log.debug("dht bad response", node=f"{c.address[0]}:{c.address[1]}", error=str(exc))
                c.state = "failed"
                continue
            c.state = "ok"
            c.id = msg.sender_id
            c.dist = distance(msg.sender_id, target)
            c.token = krpc.response_token(msg) if get_peers else None
            for addr in values:
                if len(peers) < MAX_PEERS:
                    peers[addr] = None
            for nid, host, p in nodes:
                if nid != port.node_id and (host, p) not in cands:
                    cands[(host, p)] = _Candidate((host, p), nid, distance(nid, target))
        if len(cands) > LOOKUP_WIDTH * 2:  # keep the closest (and everything already asked)
            keep = sorted(cands.values(), key=lambda c: (c.state == "new", c.dist))
            news = [c for c in keep if c.state == "new"][:LOOKUP_WIDTH]
            cands = {c.address: c for c in keep if c.state != "new"} | {c.address: c for c in news}
    closest = sorted((c for c in cands.values() if c.state == "ok" and c.id), key=lambda c: c.dist)[:K]
    return LookupResult(list(peers), [(c.id, c.address, c.token) for c in closest], queries, rounds)


def resolve_routers(routers: list[Address], log: Any) -> list[Address]:
    """The IPv4 addresses of the bootstrap ``routers`` (at most two per name, 5 s per name); a name that does
    not resolve is logged and skipped."""
    resolved: list[Address] = []
    for host, port in routers:
        try:
            with gevent.Timeout(5.0):
                infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
        except (OSError, gevent.Timeout) as exc:
            log.info("cannot resolve dht bootstrap node", node=f"{host}:{port}", error=str(exc))
            continue
        for info in infos[:2]:
            address = (info[4][0], info[4][1])
            if address not in resolved:
                resolved.append(address)
    return resolved


__all__ = ["lookup", "resolve_routers", "LookupPort", "LookupResult", "MAX_ROUNDS", "LOOKUP_WIDTH", "MAX_PEERS"]
