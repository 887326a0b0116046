"""The addresses a torrent may dial: where each came from, its failures and back-off, bans, ourselves.

:class:`PeerList` is the torrent's memory of peers it is not necessarily connected to, like
libtorrent's ``peer_list``: it learns addresses (:meth:`add`), forgets the most-failed ones when full,
picks the next ones to dial (:meth:`ready`), backs off after failures, refuses banned peers and our own
addresses, and remembers peers that are seeds so a seed does not dial seeds (both sides would only
hang up on each other).
"""

from __future__ import annotations

import functools
import ipaddress
import random
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

#: Re-dial delays for a known peer after failures (seconds), capped.
RETRY_BASE = 2.0
RETRY_MAX = 60.0
#: Most peer addresses remembered for dialling.
MAX_CANDIDATES = 2000

#: Where a peer address can come from (shown by the console and in logs).
PEER_SOURCES = ("tracker", "dht", "pex", "incoming", "manual", "magnet")

Address = tuple[str, int]


@dataclass
class Candidate:
    """A peer address we may dial."""

    address: Address
    source: str = "tracker"  #: where we learnt it: one of PEER_SOURCES
    failures: int = 0
    next_try: float = 0.0
    connected: bool = False  #: being dialled or connected
    seed: bool = False  #: it had every piece when we last saw it
    #: MSE/PE: True if the peer can encrypt (it said so, or MSE worked), False if it refused MSE, None: unknown.
    encryption: bool | None = None
    #: PEX ``added.f`` 0x04: True if a peer told us it speaks uTP (dialled over uTP first), None: not said.
    utp: bool | None = None


class PeerList:
    """Known peer addresses of one torrent. ``listen_port()`` is our port (to recognise ourselves)."""

    def __init__(self, listen_port: Callable[[], int], on_new: Callable[[], None] = lambda: None) -> None:
        self.candidates: dict[Address, Candidate] = {}
        self.banned_addresses: set[Address] = set()
        self.banned_ids: set[bytes] = set()
        self.self_addresses: set[Address] = set()
        self._listen_port = listen_port
        self._on_new = on_new

    def __len__(self) -> int:
        return len(self.candidates)

    def __contains__(self, address: object) -> bool:
        return address in self.candidates

    def add(self, addresses: Iterable[Address], source: str = "tracker") -> int:
        """Learn addresses; return how many were new. A tracker listing a million costs bounded memory."""
        added = 0
        for host, port in addresses:
            addr = (host, int(port))
            if addr in self.candidates or addr in self.banned_addresses or self.is_self(addr):
                continue
            if len(self.candidates) >= MAX_CANDIDATES and not self._forget_one():
                break
            self.candidates[addr] = Candidate(addr, source)
            added += 1
        if added:
            self._on_new()
        return added

    def _forget_one(self) -> bool:
        """Make room by dropping the unconnected candidate that failed most often (if any failed)."""
        worst = max((c for c in self.candidates.values() if not c.connected and c.failures),
                    key=lambda c: c.failures, default=None)
        if worst is None:
            return False
        del self.candidates[worst.address]
        return True

    def is_self(self, addr: Address) -> bool:
        """Whether ``addr`` is this engine: seen as ourselves before, or our port on a local address."""
        if addr in self.self_addresses:
            return True
        port = self._listen_port()
        if port and addr[1] == port:
            try:
                ip = ipaddress.ip_address(addr[0])
            except ValueError:
                return False
            return ip.is_loopback or addr[0] in local_addresses()
        return False

    def found_self(self, addr: Address) -> None:
        """A connection reached ourselves (our own peer id answered): never dial that address again."""
        self.self_addresses.add(addr)
        self.candidates.pop(addr, None)

    def ban(self, addr: Address, peer_id: bytes | None = None, listen_port: int | None = None) -> bool:
        """Never talk to this peer again; False if it was banned already."""
        if addr in self.banned_addresses:
            return False
        self.banned_addresses.add(addr)
        if peer_id is not None:
            self.banned_ids.add(peer_id)
        if listen_port:
            self.banned_addresses.add((addr[0], listen_port))
        self.candidates.pop(addr, None)
        return True

    def is_banned(self, addr: Address, peer_id: bytes) -> bool:
        """Whether this address or peer id was banned."""
        return addr in self.banned_addresses or peer_id in self.banned_ids

    def ready(self, room: int, connected: Callable[[Address], bool], we_are_seed: bool,
              now: float | None = None, ip_room: Callable[[str], int] | None = None) -> list[Candidate]:
        """Up to ``room`` candidates to dial now (fewest failures first, random among equals); marks them.

        A seed does not dial peers known to be seeds. ``ip_room(ip)``: how many more connections that address
        may take (the session's per-IP cap); the candidates chosen on one address stay within it.
        """
        if room <= 0:
            return []
        now = time.monotonic() if now is None else now
        ready = [c for c in self.candidates.values()
                 if not c.connected and c.next_try <= now and not (we_are_seed and c.seed)
                 and not connected(c.address) and c.address not in self.banned_addresses
                 and not self.is_self(c.address)]
        random.shuffle(ready)
        ready.sort(key=lambda c: c.failures)
        if ip_room is None:
            chosen = ready[:room]
        else:
            chosen, left = [], {}
            for cand in ready:
                if len(chosen) >= room:
                    break
                ip = cand.address[0]
                n = left[ip] if ip in left else ip_room(ip)
                if n > 0:
                    chosen.append(cand)
                left[ip] = n - 1
        for cand in chosen:
            cand.connected = True
        return chosen

    def dialing(self) -> int:
        """Candidates being dialled or connected."""
        return sum(1 for c in self.candidates.values() if c.connected)

    def waiting(self, now: float | None = None) -> bool:
        """Whether some candidate may be dialled now."""
        now = time.monotonic() if now is None else now
        return any(not c.connected and c.next_try <= now for c in self.candidates.values())

    def failed(self, cand: Candidate, max_exponent: int = 8) -> None:
        """A dial or connection failed: back off exponentially."""
        cand.connected = False
        cand.failures += 1
        cand.next_try = time.monotonic() + min(RETRY_MAX, RETRY_BASE * 2 ** min(cand.failures - 1, max_exponent))

    def succeeded(self, cand: Candidate) -> None:
        """A dial reached a peer we keep."""
        cand.failures = 0

    def released(self, cand: Candidate) -> None:
        """A dial ended without a connection to keep (duplicate, or both seeds)."""
        cand.connected = False

    def mark_seed(self, addr: Address, seed: bool = True) -> None:
        """Remember that the peer at ``addr`` is (or is no longer) a seed."""
        cand = self.candidates.get(addr)
        if cand is not None:
            cand.seed = seed


@functools.lru_cache(maxsize=1)
def local_addresses() -> frozenset[str]:
    """Addresses of this host (to recognise ourselves in tracker replies)."""
    out = {"0.0.0.0", "::"}
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            out.add(info[4][0])
    except OSError:
        pass
    return frozenset(out)


__all__ = ["PeerList", "Candidate", "PEER_SOURCES", "MAX_CANDIDATES", "RETRY_BASE", "RETRY_MAX", "local_addresses"]
