"""The outcome of a checked piece (torrentcore.piece_outcome), driven through its port without a torrent.

The end-to-end proofs (a lying peer banned, a resumed download re-fetching a bad trusted piece) are in
test_hostile_peers.py and test_connection_slots.py; these pin down each outcome's steps and their order.
"""

from __future__ import annotations

import dataclasses

import gevent.event
import pytest

from torrentcore.errors import StorageError
from torrentcore.piece_outcome import OutcomeCalls, PieceOutcome
from torrentcore.piecemanager import BLOCK_SIZE, Piece
from torrentcore.smart_ban import BAN_STRIKES


class _Manager:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.complete = False

    def piece_verified(self, index: int) -> None:
        self.calls.append(("verified", index))

    def piece_failed(self, index: int) -> None:
        self.calls.append(("failed", index))

    def piece_lost(self, index: int) -> None:
        self.calls.append(("lost", index))

    def piece_found(self, index: int) -> None:
        self.calls.append(("found", index))

    def recycle(self, piece: Piece) -> None:
        self.calls.append(("recycle", piece.index))


class _Has(dict):
    def __missing__(self, key: int) -> bool:
        return False


class _Peer:
    def __init__(self, has: set[int], interested: bool = False) -> None:
        self.has = _Has({i: True for i in has})
        self.am_interested = interested

    def set_interested(self, value: bool) -> None:
        self.am_interested = value


class _Swarm:
    def __init__(self) -> None:
        self.peers: dict = {}
        self.connect_now = gevent.event.Event()
        self.haves: list[int] = []
        self.banned: list[tuple] = []
        self.wakes = 0

    def wake_requesters(self) -> None:
        self.wakes += 1

    def broadcast_have(self, index: int) -> None:
        self.haves.append(index)

    def ban(self, address, reason: str) -> None:
        self.banned.append((address, reason))


class _Seed:
    def __init__(self, url: str) -> None:
        self.url = url


class _WebSeeds:
    def __init__(self, *seeds: _Seed) -> None:
        self.seeds = list(seeds)
        self.dropped: list[tuple] = []

    def owns(self, who) -> bool:
        return who in self.seeds

    def drop(self, seed, reason: str) -> None:
        self.dropped.append((seed.url, reason))


class _Events:
    def __init__(self) -> None:
        self.seen: list[tuple] = []

    def emit(self, kind: str, **kwargs) -> None:
        self.seen.append((kind, kwargs))


class _Log:
    def warning(self, *args, **kwargs) -> None:
        pass


class _Verifier:
    def __init__(self, unconfirmed: set[int], bad: set[int]) -> None:
        self.unconfirmed = set(unconfirmed)
        self.bad = bad

    def confirm(self, index: int) -> bool:
        self.unconfirmed.discard(index)
        return index not in self.bad


def _guard(fn, *args) -> None:
    fn(*args)


def _outcome(*, stopping=False, verifier=None, webseeds=None):
    manager, swarm, events = _Manager(), _Swarm(), _Events()
    record = {"completed": 0, "incomplete": 0, "wasted": 0}

    def wasted(n: int) -> None:
        record["wasted"] += n

    calls = OutcomeCalls(manager=lambda: manager, stopping=lambda: stopping,
                         completed=lambda: record.__setitem__("completed", record["completed"] + 1),
                         incomplete_again=lambda: record.__setitem__("incomplete", record["incomplete"] + 1),
                         guard=_guard)
    outcome = PieceOutcome(calls, verifier, swarm, webseeds or _WebSeeds(), events, wasted, _Log())
    return outcome, manager, swarm, events, record


def _piece(index: int, senders: list, fill: int = 0) -> Piece:
    piece = Piece(index, BLOCK_SIZE * len(senders), bytearray([fill]) * (BLOCK_SIZE * len(senders)))
    piece.senders = dict(enumerate(senders))
    return piece


def test_a_stored_piece_is_marked_reported_recycled_and_announced():
    outcome, manager, swarm, events, record = _outcome()
    outcome._apply_verdict(_piece(3, [("10.0.0.1", 1)]), True)
    assert manager.calls == [("verified", 3), ("recycle", 3)]
    assert events.seen == [("piece_verified", {"index": 3})]
    assert swarm.haves == [3] and record["completed"] == 0
    manager.complete = True
    outcome._apply_verdict(_piece(4, [("10.0.0.1", 1)]), True)
    assert swarm.haves == [3, 4] and record["completed"] == 1


def test_a_piece_stored_while_stopping_is_only_counted():
    outcome, manager, swarm, events, record = _outcome(stopping=True)
    manager.complete = True
    outcome._apply_verdict(_piece(1, [("10.0.0.1", 1)]), True)
    assert manager.calls == [("verified", 1), ("recycle", 1)]
    assert events.seen == [("piece_verified", {"index": 1})]
    assert swarm.haves == [] and record["completed"] == 0


def test_a_failed_piece_is_wasted_re_requested_and_a_lone_sender_struck_until_banned():
    outcome, manager, swarm, events, record = _outcome()
    liar = ("10.0.0.9", 6881)
    for k in range(BAN_STRIKES):
        outcome._apply_verdict(_piece(k, [liar, liar]), False)
        assert ("failed", k) in manager.calls and ("recycle", k) in manager.calls
    assert record["wasted"] == BAN_STRIKES * 2 * BLOCK_SIZE
    assert [e for e in events.seen if e[0] == "piece_failed"][0] == ("piece_failed", {"index": 0, "peers": [liar]})
    assert swarm.banned == [(liar, "sent data for several pieces that failed their hash")]
    assert swarm.wakes == BAN_STRIKES


def test_a_none_verdict_changes_nothing_and_an_exception_reaches_the_guard():
    outcome, manager, swarm, events, _ = _outcome()
    outcome._apply_verdict(_piece(0, [("10.0.0.1", 1)]), None)
    assert manager.calls == [] and events.seen == []
    with pytest.raises(StorageError):
        outcome._on_verdict(_piece(0, [("10.0.0.1", 1)]), StorageError("disk full"))


def test_smart_ban_drops_the_web_seed_that_sent_the_block_that_differs():
    seed = _Seed("http://127.0.0.1:1/data")
    honest = ("10.0.0.2", 2)
    outcome, manager, swarm, events, _ = _outcome(webseeds=_WebSeeds(seed))
    outcome._apply_verdict(_piece(5, [seed, honest], fill=1), False)  # both blocks wrong, two senders
    failed = [kw for kind, kw in events.seen if kind == "piece_failed"]
    assert failed == [{"index": 5, "peers": sorted({(seed.url, 0), honest})}]
    good = _piece(5, [honest, honest], fill=1)
    good.buffer[:BLOCK_SIZE] = bytes(BLOCK_SIZE)  # block 0 (the seed's) differs from the failed copy
    outcome._apply_verdict(good, True)
    assert outcome._webseeds.dropped == [(seed.url, "sent corrupt data")]
    assert swarm.banned == []  # block 1 (the honest peer's) was the same: not to blame


def test_a_held_piece_found_good_is_marked_reported_and_announced():
    outcome, manager, swarm, events, record = _outcome()
    outcome.held_piece_good(7)
    assert manager.calls == [("found", 7)] and events.seen == [("piece_verified", {"index": 7})]
    assert swarm.haves == [7] and record["completed"] == 0
    manager.complete = True
    outcome.held_piece_good(8)
    assert swarm.haves == [7, 8] and record["completed"] == 1


def test_a_bad_trusted_piece_is_fetched_again_from_peers_that_have_it():
    verifier = _Verifier(unconfirmed={1, 2, 3}, bad={2})
    outcome, manager, swarm, events, record = _outcome(verifier=verifier)
    has_it, lacks_it = _Peer({2}), _Peer({1})
    swarm.peers = {("10.0.0.1", 1): has_it, ("10.0.0.2", 2): lacks_it}
    assert outcome.confirm_trusted() is False
    assert manager.calls == [("lost", 2)] and not verifier.unconfirmed
    assert events.seen == [("piece_failed", {"index": 2, "peers": []})]
    assert record["incomplete"] == 1
    assert has_it.am_interested and not lacks_it.am_interested
    assert swarm.connect_now.is_set() and swarm.wakes == 1
    assert outcome.confirm_trusted() is True  # nothing left to confirm


def test_a_failed_hand_over_to_the_verifier_is_fatal_not_a_stalled_download():
    """An internal error while a complete piece is handed to the verifier reaches the torrent's guard (which
    makes it fatal, one clear line) and frees the slot: the piece, already out of the download, would otherwise
    never be verified nor asked for again."""
    errors: list[BaseException] = []
    slots = {"taken": 0}

    class BrokenVerifier:
        def acquire_slot(self) -> None:
            slots["taken"] += 1

        def release_slot(self) -> None:
            slots["taken"] -= 1

        def submit(self, piece, on_verdict) -> None:
            raise RuntimeError("a bug in the hand-over")

    def guard(fn, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - what Torrent._guard turns into a failed torrent
            errors.append(exc)

    outcome, manager, *_ = _outcome(verifier=BrokenVerifier())
    outcome._calls = dataclasses.replace(outcome._calls, guard=guard)
    outcome.verify_piece(_piece(5, [("10.0.0.1", 1)]))
    assert [str(e) for e in errors] == ["a bug in the hand-over"]
    assert slots["taken"] == 0
