"""Per-peer budgets for control messages: a peer that sends them beyond any honest rate is dropped.

Control messages (keep-alives, HAVEs for pieces the peer already announced, CHOKE/INTERESTED toggles,
requests while we choke it or repeated, SUGGEST, PORT, extension handshakes and messages, unknown ids) cost us CPU
but carry no data, so a hostile peer can send millions a second of them (the audit of issue 13 sent
keep-alives at 8 MB/s). Each kind has a token bucket (:class:`Allowance`: a burst, then a sustained
rate); a message beyond it raises :class:`FloodError`, a :class:`~torrentcore.errors.ProtocolError`, so
the peer's read loop ends the connection with the reason ("protocol error: flood of ...").

The allowances are far above what the protocol lets an honest client need (BEP 3: a keep-alive after 2
minutes of silence; one BEP 10 handshake, again on a change; no HAVE for a piece already announced; after our
CHOKE at most the requests it had in flight) and far below a flood's rate (the audit's flooder sent 2 million
keep-alives a second): a flooder is dropped within the first fraction of a second. libtorrent 2.0 stays
within every budget in the suite's real-peer tests (tests/test_wire_flood.py and the interop tests).

Kinds bounded by counts rather than rates (new HAVEs by the piece count, CANCELs by the requests the peer
sent, queued requests by ``OUR_REQQ``) are checked in :mod:`torrentcore.peer.upload`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..errors import ProtocolError


@dataclass(frozen=True)
class Allowance:
    """A token bucket: ``burst`` messages at once, then ``per_second`` on average."""

    burst: int
    per_second: float


KEEPALIVE = "keep-alive"
REDUNDANT_HAVE = "redundant have"
STATE = "choke/interest"
USELESS_REQUEST = "useless request"
LATE_BITFIELD = "late bitfield"
SUGGEST = "suggest/allowed-fast"
PORT = "port"
EXTENSION_HANDSHAKE = "extension handshake"
EXTENSION = "extension"
UNKNOWN = "unknown id"

#: The budget of each kind of control message (see the module docstring for the honest rates).
ALLOWANCES: Mapping[str, Allowance] = {
    # BEP 3: a keep-alive every 2 minutes of silence; libtorrent, aria2 and Transmission send none faster.
    KEEPALIVE: Allowance(30, 1.0),
    # A HAVE for a piece the peer already announced: honest peers send none (libtorrent ignores them).
    REDUNDANT_HAVE: Allowance(256, 20.0),
    # CHOKE / UNCHOKE / INTERESTED / NOT INTERESTED: choking rounds are every 10 s (15 s in Transmission);
    # interest follows the pieces we announce, a few changes a second in a busy swarm.
    STATE: Allowance(200, 20.0),
    # Requests while we choke the peer (those in flight when we choked it: its pipeline, at most our reqq of
    # 500 each choking round), or repeating one still queued.
    USELESS_REQUEST: Allowance(1000, 100.0),
    # Late bitfields that bring few new pieces (aria2 sends one instead of its HAVEs when it is no longer than
    # them: those are free, see Peer._on_late_bitfield); each costs O(pieces).
    LATE_BITFIELD: Allowance(32, 2.0),
    # BEP 6 SUGGEST / ALLOWED FAST: libtorrent sends ten allowed-fast pieces and a few suggestions.
    SUGGEST: Allowance(256, 20.0),
    # BEP 5 PORT: once per connection; each one makes our DHT node ping the peer.
    PORT: Allowance(4, 0.05),
    # BEP 10 handshake: once, again on a change (libtorrent: when it learns the metadata); up to 64 KiB each.
    EXTENSION_HANDSHAKE: Allowance(8, 0.1),
    # ut_metadata (a magnet fetch asks each 16 KiB piece of <= 8 MiB once), ut_pex (one a minute), plugins.
    EXTENSION: Allowance(1024, 100.0),
    # Ids we do not know (ignored, as BEP 3 asks).
    UNKNOWN: Allowance(256, 20.0),
}


class FloodError(ProtocolError):
    """A peer sent more control messages of one kind than its :class:`Allowance`."""


class MessageBudget:
    """One connection's token buckets, one per kind of :data:`ALLOWANCES`."""

    __slots__ = ("_allowances", "_tokens", "_last", "_clock", "spent")

    def __init__(self, allowances: Mapping[str, Allowance] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``allowances``: by kind (default :data:`ALLOWANCES`, read when the connection starts)."""
        allowances = ALLOWANCES if allowances is None else allowances
        self._allowances = allowances
        self._clock = clock
        now = clock()
        self._tokens = {kind: float(a.burst) for kind, a in allowances.items()}
        self._last = dict.fromkeys(allowances, now)
        #: Messages of each kind taken so far (for logs and tests).
        self.spent = dict.fromkeys(allowances, 0)

    def spend(self, kind: str) -> None:
        """Take one message of ``kind``; raise :class:`FloodError` if its bucket is empty."""
        allowance = self._allowances[kind]
        now = self._clock()
        tokens = min(allowance.burst, self._tokens[kind] + (now - self._last[kind]) * allowance.per_second)
        self._last[kind] = now
        if tokens < 1.0:
            self._tokens[kind] = tokens
            raise FloodError(f"flood of {kind} messages ({self.spent[kind]} taken; the budget is "
                             f"{allowance.burst} at once and {allowance.per_second:g}/s)")
        self._tokens[kind] = tokens - 1.0
        self.spent[kind] += 1


__all__ = ["ALLOWANCES", "Allowance", "FloodError", "MessageBudget"]
