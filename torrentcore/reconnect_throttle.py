"""Reconnect throttle: a peer dropped for breaking the protocol or flooding does not come straight back in.

The per-peer budgets (:mod:`torrentcore.peer.budget`) drop a flooding connection within a fraction of a second,
but a flooder that reconnects at once (the audit's harness on 127.0.0.1: about 230 times a second) makes us pay
each time for an accept, a handshake, our bitfield and extension handshake, a peer's setup and the budget's
burst again: seeding, that cost an honest libtorrent leecher a quarter of its rate (0.75x of clean).

A *drop* is recorded (:meth:`ReconnectThrottle.dropped`) when an incoming peer's connection ends for a protocol
error, floods included. Two records come of it, each forgotten :data:`WINDOW` seconds after its last drop:

* **by address and peer id**: from the second drop in the window on, that peer (the same IP *and* peer id)
  is refused for :data:`REFUSE_BASE` seconds, doubling with each further drop up to :data:`REFUSE_MAX`
  (libtorrent waits ``(failcount + 1) * min_reconnect_time`` before dialling a failed peer again; it bans by IP
  alone, which on one address shared by several peers, loopback or a NAT, would refuse the honest ones too).
  The refusal comes right after its handshake is read, held :data:`DELAY_MAX` first (so a flooder that
  reconnects at once comes back at most ``1 / DELAY_MAX`` times a second per connection): nothing is sent
  back and no peer is set up.
* **by address alone**: from the second drop in the window on, every new connection from that IP waits
  :data:`DELAY_BASE` seconds once its handshake is read, before it is answered, doubling with each further
  drop up to :data:`DELAY_MAX`, well under a second. Nothing is ever refused by address alone: an honest peer
  sharing the address (loopback, a NAT) only waits that long for its answer, and a flooder that changes its
  peer id on every connection is slowed the same way.

The listener holds at most ``HELD_MAX`` connections at once (others go on at once), outside the half-open cap
(they sent their handshake): a crowd held from one address never pushes out an honest newcomer's handshake.

Loopback is treated like any address. Memory is bounded: at most :data:`MAX_RECORDS` of each kind, the least
recently dropped forgotten first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

#: Seconds after its last drop that a record is forgotten (a second drop within it starts the back-off).
WINDOW = 60.0
#: Seconds a peer (IP and peer id) is refused after its second drop in the window, doubled per further drop...
REFUSE_BASE = 30.0
#: ...up to this (libtorrent dials a failed peer again after ``(failcount + 1) * min_reconnect_time``, 60 s per
#: failure; an honest peer is never dropped for a flood, and ten minutes bounds a mistake).
REFUSE_MAX = 600.0
#: Seconds a new connection from an address with two drops in the window waits before its handshake is read,
#: doubled per further drop...
DELAY_BASE = 0.01
#: ...up to this: a flooder reconnecting at once then costs at most 4 connections a second (measured before:
#: 230 a second, each ~2-4 ms of engine CPU seeding), and an honest newcomer from its address still
#: completes its handshake within a second.
DELAY_MAX = 0.25
#: Most records of each kind (a few hundred bytes each).
MAX_RECORDS = 4096


class _Record:
    __slots__ = ("drops", "last", "until")

    def __init__(self) -> None:
        self.drops = 0
        self.last = 0.0
        self.until = 0.0  # refused until (by address and peer id)


class ReconnectThrottle:
    """The session's memory of peers dropped for misbehaving (see the module docstring)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._peers: OrderedDict[tuple[str, bytes], _Record] = OrderedDict()
        self._addresses: OrderedDict[str, _Record] = OrderedDict()
        #: Connections refused because their peer was in its back-off, and connections held back by their address.
        self.refused = 0
        self.delayed = 0

    def dropped(self, ip: str, peer_id: bytes) -> float:
        """An incoming peer was dropped for a protocol error or a flood; return the seconds it is now refused for."""
        now = self._clock()
        _bump(self._addresses, ip, now)
        record = _bump(self._peers, (ip, peer_id), now)
        if record.drops >= 2:
            record.until = now + min(REFUSE_MAX, REFUSE_BASE * 2 ** min(record.drops - 2, 30))
        return max(0.0, record.until - now)

    def refuses(self, ip: str, peer_id: bytes) -> bool:
        """Whether a connection from ``ip`` whose handshake names ``peer_id`` is refused now (counted)."""
        record = self._peers.get((ip, peer_id))
        if record is None or record.until <= self._clock():
            return False
        self.refused += 1
        return True

    def delay(self, ip: str) -> float:
        """Seconds a new connection from ``ip`` waits before it is answered (0: none; counted)."""
        record = self._addresses.get(ip)
        if record is None or record.drops < 2:
            return 0.0
        if self._clock() - record.last > WINDOW:
            return 0.0
        self.delayed += 1
        return min(DELAY_MAX, DELAY_BASE * 2 ** min(record.drops - 2, 30))

    def __len__(self) -> int:
        return len(self._peers)


def _bump(records: OrderedDict, key, now: float) -> _Record:
    """Count one drop for ``key`` (a record past its window starts again), most recent last, bounded."""
    record = records.pop(key, None)
    if record is None or now - record.last > WINDOW + max(0.0, record.until - record.last):
        record = _Record()
    record.drops += 1
    record.last = now
    records[key] = record
    while len(records) > MAX_RECORDS:
        records.popitem(last=False)
    return record


__all__ = ["ReconnectThrottle", "WINDOW", "REFUSE_BASE", "REFUSE_MAX", "DELAY_BASE", "DELAY_MAX", "MAX_RECORDS"]
