"""The DHT routing table (BEP 5): 160-bit ids, XOR distance, k-buckets.

The table starts as one bucket covering the whole id space. A full bucket is split in two only
when it contains our own id, so the table knows many nodes near us and a few far away. Each node
is *good* (it answered us within the last 15 minutes, or answered once and queried us within the
last 15 minutes), *questionable* (silent for 15 minutes) or *bad* (failed to answer
:data:`BAD_AFTER_FAILURES` queries in a row). A node that finds its bucket full and unsplittable
replaces a bad node if there is one, else waits in the bucket's small replacement cache, from
which it takes the place of the next node that goes bad. Buckets nobody touched for 15 minutes are
*stale*: the node refreshes them with a lookup of a random id in their range.

Memory is bounded: at most 160 buckets of :data:`K` nodes plus :data:`K` replacements each.
"""

from __future__ import annotations

import ipaddress
import random
import time
from dataclasses import dataclass, field

#: Bucket size.
K = 8
ID_BITS = 160
#: A node silent this long is questionable; a bucket untouched this long is stale.
QUESTIONABLE_AFTER = 15 * 60.0
#: Failed queries in a row that make a node bad.
BAD_AFTER_FAILURES = 2
#: Most nodes of one (non-loopback) IP address in the table (one address can't fill it).
MAX_PER_IP = 2


def distance(a: bytes, b: bytes) -> int:
    """XOR distance of two 20-byte ids, as an integer."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def random_id() -> bytes:
    """A random 160-bit node id."""
    return random.getrandbits(ID_BITS).to_bytes(20, "big")


@dataclass
class Node:
    """A remote DHT node."""

    id: bytes
    host: str
    port: int
    last_response: float = 0.0  #: monotonic time of its last answer to us (0: never)
    last_query: float = 0.0  #: monotonic time of its last query to us
    failures: int = 0  #: queries in a row it did not answer

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``."""
        return (self.host, self.port)

    def state(self, now: float) -> str:
        """``"good"``, ``"questionable"`` or ``"bad"`` (BEP 5)."""
        if self.failures >= BAD_AFTER_FAILURES:
            return "bad"
        if self.last_response and (now - self.last_response < QUESTIONABLE_AFTER
                                   or now - self.last_query < QUESTIONABLE_AFTER):
            return "good"
        return "questionable"

    def last_seen(self) -> float:
        """When we last heard from it."""
        return max(self.last_response, self.last_query)


@dataclass
class Bucket:
    """Nodes whose id lies in ``[low, high)``."""

    low: int
    high: int
    nodes: list[Node] = field(default_factory=list)
    replacements: list[Node] = field(default_factory=list)
    last_changed: float = field(default_factory=time.monotonic)

    def covers(self, node_id: bytes) -> bool:
        """Whether ``node_id`` falls in this bucket's range."""
        return self.low <= int.from_bytes(node_id, "big") < self.high

    def random_id(self) -> bytes:
        """A random id in this bucket's range (a refresh target)."""
        return random.randrange(self.low, self.high).to_bytes(20, "big")


class RoutingTable:
    """k-buckets around ``own_id`` (see the module docstring)."""

    def __init__(self, own_id: bytes, k: int = K, clock=time.monotonic) -> None:
        if len(own_id) != 20:
            raise ValueError("a node id is 20 bytes")
        self.own_id = own_id
        self.k = k
        self.clock = clock
        self.buckets: list[Bucket] = [Bucket(0, 1 << ID_BITS, last_changed=clock())]

    def __len__(self) -> int:
        return sum(len(b.nodes) for b in self.buckets)

    def nodes(self) -> list[Node]:
        """Every node in the table (not the replacement caches)."""
        return [n for b in self.buckets for n in b.nodes]

    def bucket_for(self, node_id: bytes) -> Bucket:
        """The bucket whose range holds ``node_id``."""
        value = int.from_bytes(node_id, "big")
        for bucket in self.buckets:  # at most 160 buckets
            if bucket.low <= value < bucket.high:
                return bucket
        raise AssertionError("the buckets cover the whole id space")  # pragma: no cover

    def find(self, node_id: bytes) -> Node | None:
        """The node with this id, if in the table."""
        for n in self.bucket_for(node_id).nodes:
            if n.id == node_id:
                return n
        return None

    def find_address(self, address: tuple[str, int]) -> Node | None:
        """The node at ``address``, if in the table."""
        for b in self.buckets:
            for n in b.nodes:
                if n.address == address:
                    return n
        return None

    def _ip_count(self, host: str) -> int:
        return sum(1 for n in self.nodes() if n.host == host)

    def would_accept(self, node_id: bytes, address: tuple[str, int]) -> bool:
        """Whether :meth:`add` could put a verified node with this id in the table (room, split or bad node)."""
        if node_id == self.own_id or self.find(node_id) is not None:
            return False
        bucket = self.bucket_for(node_id)
        now = self.clock()
        return (len(bucket.nodes) < self.k or self._splittable(bucket)
                or any(n.state(now) == "bad" for n in bucket.nodes))

    def add(self, node_id: bytes, host: str, port: int, responded: bool = True) -> Node | None:
        """Record that ``node_id`` at ``host:port`` answered us (``responded``) or queried us.

        Returns the node when it is (now) in the table, ``None`` when it went to the replacement
        cache or was refused (our own id, an id already known at another address, too many nodes
        of one IP).
        """
        if node_id == self.own_id or len(node_id) != 20:
            return None
        now = self.clock()
        bucket = self.bucket_for(node_id)
        for n in bucket.nodes:
            if n.id == node_id:
                if n.address != (host, port):
                    # Same id, new address: only believe it once the old address stopped answering.
                    if n.state(now) != "bad":
                        return None
                    n.host, n.port = host, port
                if responded:
                    n.last_response = now
                    n.failures = 0
                else:
                    n.last_query = now
                bucket.last_changed = now
                return n
        existing = self.find_address((host, port))
        if existing is not None:  # a node changed its id, or a liar reuses an address: keep the first
            return None
        if not responded:
            return None  # only nodes that answered us enter the table (they are pinged first)
        if not _loopback(host) and self._ip_count(host) >= MAX_PER_IP:
            return None
        node = Node(node_id, host, port, last_response=now)
        while True:
            if len(bucket.nodes) < self.k:
                bucket.nodes.append(node)
                bucket.last_changed = now
                self._drop_replacement(node_id)
                return node
            if self._splittable(bucket):
                self._split(bucket)
                bucket = self.bucket_for(node_id)
                continue
            bad = [n for n in bucket.nodes if n.state(now) == "bad"]
            if bad:
                bucket.nodes.remove(bad[0])
                bucket.nodes.append(node)
                bucket.last_changed = now
                return node
            self._add_replacement(bucket, node)
            return None

    def _splittable(self, bucket: Bucket) -> bool:
        return bucket.covers(self.own_id) and bucket.high - bucket.low > self.k

    def _split(self, bucket: Bucket) -> None:
        mid = (bucket.low + bucket.high) // 2
        left = Bucket(bucket.low, mid, last_changed=bucket.last_changed)
        right = Bucket(mid, bucket.high, last_changed=bucket.last_changed)
        for n in bucket.nodes:
            (left if int.from_bytes(n.id, "big") < mid else right).nodes.append(n)
        for n in bucket.replacements:
            (left if int.from_bytes(n.id, "big") < mid else right).replacements.append(n)
        i = self.buckets.index(bucket)
        self.buckets[i : i + 1] = [left, right]

    def _add_replacement(self, bucket: Bucket, node: Node) -> None:
        for r in bucket.replacements:
            if r.id == node.id or r.address == node.address:
                bucket.replacements.remove(r)
                break
        bucket.replacements.append(node)
        del bucket.replacements[: -self.k]  # the freshest k are kept

    def _drop_replacement(self, node_id: bytes) -> None:
        bucket = self.bucket_for(node_id)
        bucket.replacements = [r for r in bucket.replacements if r.id != node_id]

    def failed(self, node_id: bytes | None = None, address: tuple[str, int] | None = None) -> None:
        """A query to this node timed out; a bad node is replaced from the cache when possible."""
        node = self.find(node_id) if node_id is not None else None
        if node is None and address is not None:
            node = self.find_address(address)
        if node is None:
            return
        node.failures += 1
        if node.state(self.clock()) != "bad":
            return
        bucket = self.bucket_for(node.id)
        if bucket.replacements:
            bucket.nodes.remove(node)
            bucket.nodes.append(bucket.replacements.pop())  # the freshest one
            bucket.last_changed = self.clock()

    def remove(self, node_id: bytes) -> None:
        """Forget a node."""
        bucket = self.bucket_for(node_id)
        bucket.nodes = [n for n in bucket.nodes if n.id != node_id]

    def closest(self, target: bytes, count: int = K, include_bad: bool = False) -> list[Node]:
        """Up to ``count`` nodes closest to ``target`` by XOR distance (bad nodes left out)."""
        now = self.clock()
        candidates = [n for n in self.nodes() if include_bad or n.state(now) != "bad"]
        candidates.sort(key=lambda n: distance(n.id, target))
        return candidates[:count]

    def stale_buckets(self) -> list[Bucket]:
        """Buckets not changed for :data:`QUESTIONABLE_AFTER` seconds."""
        now = self.clock()
        return [b for b in self.buckets if now - b.last_changed >= QUESTIONABLE_AFTER]

    def questionable(self) -> list[Node]:
        """Nodes to ping: questionable ones, oldest first."""
        now = self.clock()
        return sorted((n for n in self.nodes() if n.state(now) == "questionable"), key=Node.last_seen)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


__all__ = ["RoutingTable", "Node", "Bucket", "distance", "random_id", "K"]
