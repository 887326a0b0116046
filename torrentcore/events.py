"""Typed events: what happened to a torrent, for scripts (``session.events()``) and reporter plugins alike.

Every reporter hook call of the engine (``torrentcore_on_*`` in :mod:`torrentcore.hookspec`) is also
one event here, with the same arguments plus the torrent's info-hash, so a script sees exactly what
a reporter plugin sees. A few events exist only here (added, paused, resumed, removed).

:class:`Reporter` is the torrent's side: ``reporter.emit("piece_verified", index=3)`` calls the hook
(each plugin contained: one that raises is disabled with one warning) and queues the event.
:class:`EventQueue` is the session's side: a bounded queue that ``Session.events()`` drains.
"""

from __future__ import annotations

import collections
import functools
import reprlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any

import gevent.event

#: The event classes' ``@dataclass`` options. ``__repr__``, ``__eq__`` and ``__hash__`` are :class:`Event`'s, one
#: for every class and the same as the generated ones: ``@dataclass`` compiles each method it generates, and
#: the three were 8-10 ms of every start-up here (15 classes; 18-20 ms for all six methods).
_EVENT = {"frozen": True, "repr": False, "eq": False}


@functools.cache
def _field_names(cls: type) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The names of ``cls``'s fields in its repr, and of those compared (and hashed), in order."""
    every = fields(cls)
    return tuple(f.name for f in every if f.repr), tuple(f.name for f in every if f.compare)


@dataclass(**_EVENT)
class Event:
    """Something that happened to one torrent (``info_hash`` is its 20-byte v1 info-hash).

    Frozen; equal when of the same class with equal fields (``at`` aside), hashable, and shown as
    ``PieceVerified(info_hash=..., name=..., at=..., index=3)``: as ``@dataclass(frozen=True)`` makes them.
    """

    info_hash: bytes
    name: str
    #: ``time.time()`` when it happened.
    at: float = field(default_factory=time.time, compare=False)

    @property
    def kind(self) -> str:
        """The event's short name, e.g. ``piece_verified`` (the hook's name without ``torrentcore_on_``)."""
        return _KIND_OF[type(self)]

    @reprlib.recursive_repr()
    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in _field_names(self.__class__)[0])
        return f"{self.__class__.__qualname__}({shown})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            compared = _field_names(self.__class__)[1]
            return tuple(getattr(self, n) for n in compared) == tuple(getattr(other, n) for n in compared)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, n) for n in _field_names(self.__class__)[1]))


@dataclass(**_EVENT)
class TorrentAdded(Event):
    """The torrent was added to the session."""


@dataclass(**_EVENT)
class Started(Event):
    """The torrent starts: checking existing data comes first (hook ``torrentcore_on_start``)."""

    save_path: str = ""


@dataclass(**_EVENT)
class Progress(Event):
    """About once a second while running (hook ``torrentcore_on_progress``)."""

    snapshot: Any = None


@dataclass(**_EVENT)
class PieceVerified(Event):
    """A piece passed its hash check and is on disk (hook ``torrentcore_on_piece_verified``)."""

    index: int = 0


@dataclass(**_EVENT)
class PieceFailed(Event):
    """A piece failed its hash check; it is fetched again (hook ``torrentcore_on_piece_failed``)."""

    index: int = 0
    peers: tuple = ()


@dataclass(**_EVENT)
class PeerConnected(Event):
    """A peer finished its handshake (hook ``torrentcore_on_peer_connected``)."""

    peer: Any = None


@dataclass(**_EVENT)
class PeerLost(Event):
    """A peer connection ended (hook ``torrentcore_on_peer_lost``)."""

    peer: Any = None
    reason: str = ""


@dataclass(**_EVENT)
class Completed(Event):
    """Every wanted piece is verified (hook ``torrentcore_on_completed``)."""

    snapshot: Any = None


@dataclass(**_EVENT)
class Error(Event):
    """A warning (``fatal`` false) or the error that stopped the torrent (hook ``torrentcore_on_error``)."""

    message: str = ""
    fatal: bool = False


@dataclass(**_EVENT)
class Finished(Event):
    """The torrent stopped for good: done, failed or removed (hook ``torrentcore_on_finish``)."""

    snapshot: Any = None
    exit_code: int = 0


@dataclass(**_EVENT)
class Paused(Event):
    """``handle.pause()`` took effect: no peer, no tracker, nothing read or written."""


@dataclass(**_EVENT)
class Resumed(Event):
    """``handle.resume()`` took effect."""


@dataclass(**_EVENT)
class Removed(Event):
    """The torrent left the session (``handle.remove()``)."""

    deleted_data: bool = False


#: Reporter hook name -> (event class, {hook argument: event field}).
HOOK_EVENTS: dict[str, tuple[type[Event], dict[str, str]]] = {
    "torrentcore_on_start": (Started, {"save_path": "save_path"}),
    "torrentcore_on_progress": (Progress, {"snapshot": "snapshot"}),
    "torrentcore_on_piece_verified": (PieceVerified, {"index": "index"}),
    "torrentcore_on_piece_failed": (PieceFailed, {"index": "index", "peers": "peers"}),
    "torrentcore_on_peer_connected": (PeerConnected, {"peer": "peer"}),
    "torrentcore_on_peer_lost": (PeerLost, {"peer": "peer", "reason": "reason"}),
    "torrentcore_on_completed": (Completed, {"snapshot": "snapshot"}),
    "torrentcore_on_error": (Error, {"message": "message", "fatal": "fatal"}),
    "torrentcore_on_finish": (Finished, {"snapshot": "snapshot", "exit_code": "exit_code"}),
}

_KIND_OF: dict[type, str] = {cls: hook[len("torrentcore_on_"):] for hook, (cls, _a) in HOOK_EVENTS.items()}
_KIND_OF.update({TorrentAdded: "added", Paused: "paused", Resumed: "resumed", Removed: "removed", Event: "event"})


class EventQueue:
    """The session's events, oldest first, at most ``limit`` (the oldest are dropped and counted)."""

    def __init__(self, limit: int = 10_000) -> None:
        self._items: collections.deque[Event] = collections.deque(maxlen=limit)
        self._ready = gevent.event.Event()
        self.dropped = 0
        self.closed = False

    def put(self, event: Event) -> None:
        """Queue one event (never blocks)."""
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
        self._items.append(event)
        self._ready.set()

    def close(self) -> None:
        """No more events: :meth:`drain` ends once the queue is empty."""
        self.closed = True
        self._ready.set()

    def drain(self, timeout: float | None) -> Iterator[Event]:
        """Yield events as they arrive; stop after ``timeout`` seconds without one (None: until closed)."""
        while True:
            while self._items:
                yield self._items.popleft()
            if self.closed:
                return
            self._ready.clear()
            if not self._ready.wait(timeout) and not self._items:
                return


class Reporter:
    """One torrent's reporting: calls the reporter hooks (contained) and queues the same events."""

    def __init__(self, hooks: Any, meta: Any, info_hash: bytes, sink: Callable[[Event], None]) -> None:
        self._hooks = hooks
        self.meta = meta
        self._info_hash = info_hash
        self._sink = sink
        #: Callables that get every event of this torrent too (e.g. streaming readers waiting for pieces).
        self.listeners: list[Callable[[Event], None]] = []

    def emit(self, kind: str, **kwargs: Any) -> None:
        """Report ``kind`` (e.g. ``"piece_verified"``) to the plugins and the session's queue."""
        hook = f"torrentcore_on_{kind}"
        direct = getattr(self._hooks, "call_reporter", None)  # ContainedHooks: no wrapper closure per call
        if direct is not None:
            direct(hook, {"torrent": self.meta, **kwargs})
        else:
            getattr(self._hooks, hook)(torrent=self.meta, **kwargs)
        cls, fields_of = HOOK_EVENTS[hook]
        values = {f: kwargs[a] for a, f in fields_of.items() if a in kwargs}
        if "peers" in values:
            values["peers"] = tuple(values["peers"])
        self._send(cls(info_hash=self._info_hash, name=self.meta.name, **values))

    def _send(self, event: Event) -> None:
        self._sink(event)
        for listener in list(self.listeners):
            listener(event)

    def event(self, cls: type[Event], **values: Any) -> None:
        """Queue an event that no hook has (added, paused, resumed, removed)."""
        self._send(cls(info_hash=self._info_hash, name=self.meta.name, **values))


__all__ = ["Event", "TorrentAdded", "Started", "Progress", "PieceVerified", "PieceFailed", "PeerConnected",
           "PeerLost", "Completed", "Error", "Finished", "Paused", "Resumed", "Removed", "EventQueue", "Reporter",
           "HOOK_EVENTS"]
