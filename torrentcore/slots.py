"""Connection slots: the session's caps on connections, by stage (half-open, established), direction and IP.

One :class:`ConnectionSlots` per session, shared by the listener and every torrent's swarm, as
libtorrent's ``session_impl`` counts ``connections_limit``:

* **Half-open connections** (dialling, or accepted and still handshaking) have their own small caps,
  :data:`HALF_OPEN_IN` and :data:`HALF_OPEN_OUT`, apart from established peers: a flood of connections that
  never handshake fills only the incoming half-open cap, and then each new connection pushes out the
  oldest half-open one (:class:`HalfOpen`), so a real peer's handshake, which takes one or two round
  trips, still gets through, and dialling never waits for incoming handshakes.
* **Established connections**: incoming and outgoing ones are counted apart, and each direction keeps
  :data:`RESERVED_SHARE` of the cap for itself (idle strangers connecting to us never stop us from
  dialling the seeder; peers we dialled never lock out incoming ones).
* **Per IP**: at most ``max_per_ip`` incoming connections (half-open and established) from one address, and
  at most ``max_per_ip`` outgoing ones (dialling and established) to one address, over all torrents (a tracker
  reply naming one victim on a thousand ports gets ``max_per_ip`` dials at a time, not a thousand; libtorrent
  keeps one peer per IP unless ``allow_multiple_connections_per_ip``), loopback included; tests and
  benchmarks that run many peers on 127.0.0.1 raise it (``SessionConfig.max_connections_per_ip``).
* **Reconnects** of peers just dropped for a protocol error or a flood are refused or held back
  (:class:`~torrentcore.reconnect_throttle.ReconnectThrottle`, :attr:`ConnectionSlots.reconnects`).

A slot is a :class:`Slot` token whose :meth:`Slot.release` is idempotent, so a connection that is evicted
(its slot handed on at once) and then ends gives nothing back twice.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from .reconnect_throttle import ReconnectThrottle

#: Most incoming connections handshaking at once. A handshake takes one round trip in plaintext and two or
#: three with MSE (libtorrent answers in under 5 ms on loopback), so a full cap that evicts its oldest entry
#: keeps a real peer's handshake alive for 64 / (attack connections per second): 64 ms against 1,000
#: connections a second, which is 30 round trips of a 2 ms link. More only costs fds and greenlets.
HALF_OPEN_IN = 64
#: Most outgoing connections being dialled or handshaking at once, over all torrents (libtorrent's old
#: ``half_open_limit`` was 8-ish on desktop systems; dialling 32 candidates at once finds a seed among
#: tracker peers that do not answer within one connect time-out, and bounds the fds dialling holds).
HALF_OPEN_OUT = 32
#: Seconds an incoming connection has, from accept, to complete its handshake (MSE included). libtorrent's
#: ``handshake_timeout`` is 10 s; 5 s is 2 round trips with MSE even over a 1 s satellite link, and a peer
#: sending one byte a second (68 bytes of handshake) is dropped after 5 bytes.
HANDSHAKE_DEADLINE = 5.0
#: Seconds a dial may take, both attempts (MSE, then plaintext) with their connects and handshakes.
DIAL_DEADLINE = 20.0
#: Share of the established cap each direction keeps for itself (the other may use the rest).
RESERVED_SHARE = 0.25
#: Seconds a new peer is safe from eviction: its bitfield and interest come within one round trip of the
#: handshake (libtorrent sends them with it), under a second on real links; 3 s leaves room for a slow one.
EVICT_GRACE = 3.0
#: ...and for a peer that has sent nothing at all since its handshake (no bitfield, HAVE NONE or extension
#: handshake, which every client sends at once): one second.
SILENT_GRACE = 1.0


class Slot:
    """One taken slot; :meth:`release` gives it back once (later calls do nothing)."""

    __slots__ = ("_owner", "incoming")

    def __init__(self, owner: ConnectionSlots, incoming: bool) -> None:
        self._owner: ConnectionSlots | None = owner
        self.incoming = incoming

    def release(self) -> None:
        """Give the slot back (idempotent)."""
        owner, self._owner = self._owner, None
        if owner is not None:
            owner._give_back(self.incoming)


def direction_limit(total: int) -> int:
    """Most connections one direction may hold of ``total``: all but the other's reserved share."""
    return max(1, total - int(total * RESERVED_SHARE))


class ConnectionSlots:
    """The session's caps (see the module docstring). ``limit``: established peers of all torrents."""

    def __init__(self, limit: int, max_per_ip: int = 8, half_open_in: int = HALF_OPEN_IN,
                 half_open_out: int = HALF_OPEN_OUT) -> None:
        self.limit = max(1, limit)
        self.max_per_ip = max(1, max_per_ip)
        self.incoming = 0
        self.outgoing = 0
        self.dialing = 0
        self.half_open_out = max(1, half_open_out)
        self.half_open = HalfOpen(half_open_in)
        self._per_ip: dict[str, int] = {}
        self._per_ip_out: dict[str, int] = {}
        #: Incoming connections closed at once because their address had ``max_per_ip`` already.
        self.refused_per_ip = 0
        #: Peers dropped for misbehaving, refused or held back when they reconnect (the listener asks it).
        self.reconnects = ReconnectThrottle()

    # --- established --------------------------------------------------------------------------------

    @property
    def used(self) -> int:
        """Established connections, both directions."""
        return self.incoming + self.outgoing

    @property
    def full(self) -> bool:
        """No established slot is free in either direction."""
        return self.used >= self.limit

    def room(self, incoming: bool) -> int:
        """Established slots free for a connection of this direction."""
        mine = self.incoming if incoming else self.outgoing
        return max(0, min(self.limit - self.used, direction_limit(self.limit) - mine))

    def acquire(self, incoming: bool = False) -> Slot | None:
        """Take an established slot of this direction, or None when it has none free."""
        if not self.room(incoming):
            return None
        if incoming:
            self.incoming += 1
        else:
            self.outgoing += 1
        return Slot(self, incoming)

    def _give_back(self, incoming: bool) -> None:
        if incoming:
            self.incoming = max(0, self.incoming - 1)
        else:
            self.outgoing = max(0, self.outgoing - 1)

    # --- dialling -----------------------------------------------------------------------------------

    @property
    def dial_room(self) -> int:
        """Dials that may start now (session-wide :data:`HALF_OPEN_OUT`)."""
        return max(0, self.half_open_out - self.dialing)

    def start_dial(self) -> bool:
        """Count a dial that starts (False: the half-open cap is full, do not dial)."""
        if self.dialing >= self.half_open_out:
            return False
        self.dialing += 1
        return True

    def dial_done(self) -> None:
        """A dial ended (connected and handshaken, or failed)."""
        self.dialing = max(0, self.dialing - 1)

    # --- per IP (incoming) --------------------------------------------------------------------------

    def open_from(self, ip: str) -> bool:
        """Count an incoming connection from ``ip``; False (nothing counted) when it has ``max_per_ip``."""
        n = self._per_ip.get(ip, 0)
        if n >= self.max_per_ip:
            self.refused_per_ip += 1
            return False
        self._per_ip[ip] = n + 1
        return True

    def closed_from(self, ip: str) -> None:
        """An incoming connection from ``ip`` ended."""
        n = self._per_ip.get(ip, 0) - 1
        if n > 0:
            self._per_ip[ip] = n
        else:
            self._per_ip.pop(ip, None)

    def from_ip(self, ip: str) -> int:
        """Incoming connections now open from ``ip``."""
        return self._per_ip.get(ip, 0)

    # --- per IP (outgoing) --------------------------------------------------------------------------

    def room_to(self, ip: str) -> int:
        """Outgoing connections (dials included) that may still open to ``ip``."""
        return max(0, self.max_per_ip - self._per_ip_out.get(ip, 0))

    def open_to(self, ip: str) -> bool:
        """Count an outgoing connection to ``ip`` from its dial on; False (nothing counted) when it has
        ``max_per_ip`` already."""
        n = self._per_ip_out.get(ip, 0)
        if n >= self.max_per_ip:
            return False
        self._per_ip_out[ip] = n + 1
        return True

    def closed_to(self, ip: str) -> None:
        """An outgoing connection to ``ip`` (or its dial) ended."""
        n = self._per_ip_out.get(ip, 0) - 1
        if n > 0:
            self._per_ip_out[ip] = n
        else:
            self._per_ip_out.pop(ip, None)


class HalfOpen:
    """Incoming connections still handshaking, oldest first; over the cap, the oldest is pushed out."""

    def __init__(self, cap: int) -> None:
        self.cap = max(1, cap)
        self._entries: OrderedDict[int, Callable[[], None]] = OrderedDict()
        self._next = 0
        #: Half-open connections closed to make room for newer ones (a flood's measure).
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, close: Callable[[], None]) -> int:
        """Register a handshaking connection (``close`` ends it); evicts the oldest when full. Returns a key."""
        while len(self._entries) >= self.cap:
            self.evict_oldest()
        self._next += 1
        self._entries[self._next] = close
        return self._next

    def done(self, key: int) -> None:
        """The connection finished its handshake (or ended): it no longer counts."""
        self._entries.pop(key, None)

    def evict_oldest(self) -> bool:
        """Close the connection handshaking longest (False: none)."""
        if not self._entries:
            return False
        _key, close = self._entries.popitem(last=False)
        self.evicted += 1
        close()
        return True


def least_useful(peers, now: float | None = None, since: Callable[[object], float] | None = None):
    """The peer to evict for a newcomer, or None: one of no use (:func:`useless`) and past
    :data:`EVICT_GRACE`, the one connected longest first (libtorrent's rule)."""
    now = time.monotonic() if now is None else now
    best = None
    best_since = now
    for peer in peers:
        if peer.conn.closed or not useless(peer):
            continue
        t = since(peer) if since is not None else 0.0
        if now - t < (SILENT_GRACE if silent(peer) else EVICT_GRACE):
            continue
        if best is None or t < best_since:
            best, best_since = peer, t
    return best


def silent(peer) -> bool:
    """A peer that has sent no message since its handshake."""
    return not getattr(peer, "got_first_message", True) and getattr(peer, "extension_handshake", True) is None


def useless(peer) -> bool:
    """A peer that gives and takes nothing: no data either way, not interested in us, choking us, and having
    nothing we want (a seed that has not unchoked us yet is kept: we want its pieces)."""
    return (peer.down.total == 0 and peer.up.total == 0 and not peer.peer_interested
            and peer.peer_choking and not peer.am_interested)


__all__ = ["ConnectionSlots", "Slot", "HalfOpen", "least_useful", "useless", "direction_limit",
           "silent", "HALF_OPEN_IN", "HALF_OPEN_OUT", "HANDSHAKE_DEADLINE", "DIAL_DEADLINE", "EVICT_GRACE",
           "SILENT_GRACE", "RESERVED_SHARE"]
