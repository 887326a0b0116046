"""Fixed per-piece costs with small pieces (16 KiB: one block per piece, 65,536 pieces per GiB).

Found with benchmarks/large_torrent.py (issue 17, item 5). No timing is asserted: these check the behaviour
that keeps the cost per piece flat as pieces get smaller (how many pieces may queue for their hash check,
how many piece buffers are reused, how cheap a reporter event with no listening plugin is).
"""

from __future__ import annotations

import gevent
import pytest

from torrentcore import bencode, hookspec, metainfo, plugins
from torrentcore.bitfield import Bitfield
from torrentcore.events import EventQueue, PieceVerified, Reporter
from torrentcore.hookspec import BLOCK_SIZE
from torrentcore.piecemanager import PieceManager
from torrentcore.verifier import VERIFY_BATCH_BYTES, VERIFY_QUEUE_BYTES, Verifier, verify_slots
from torrentcore_plugins.rarest_first import RarestFirst


def _meta(num_pieces: int, piece_length: int) -> metainfo.Metainfo:
    info = {b"name": b"t", b"piece length": piece_length, b"pieces": b"\x00" * 20 * num_pieces,
            b"length": piece_length * num_pieces}
    return metainfo.parse(bencode.encode({b"info": info}))


@pytest.mark.parametrize("kib", [16, 32, 64])
def test_small_pieces_can_queue_two_hand_over_batches_for_their_hash_check(kib):
    """With 16 pieces at most, 16 KiB pieces (256 KiB) never filled one hand-over batch: every hand-over waited
    for the batch timer while the peers waited for a slot. Now at least two batches fit, still bounded."""
    size = kib << 10
    meta = _meta(8, size)
    verifier = Verifier(meta, object(), Bitfield(8), None, lambda: False, lambda i: None)
    took = []

    def take() -> None:
        for _ in range(2 * VERIFY_BATCH_BYTES // size):
            verifier.acquire_slot()
            took.append(1)

    g = gevent.spawn(take)
    g.join(timeout=5)
    done = g.dead
    g.kill()
    assert done, f"only {len(took)} pieces of {kib} KiB may wait for their hash check"
    assert verify_slots(size) * size <= VERIFY_QUEUE_BYTES


def test_large_pieces_keep_their_queue_of_sixteen_pieces_and_huge_ones_two():
    assert verify_slots(256 << 10) == 16
    assert verify_slots(1 << 20) == 16
    assert verify_slots(VERIFY_QUEUE_BYTES) == 2
    assert verify_slots(4 * VERIFY_QUEUE_BYTES) == 2


def test_one_block_pieces_reuse_their_buffers_after_a_batch_of_them_was_stored():
    """Requests start one-block pieces in batches of hundreds while stored pieces come back one by one: the
    buffers of a whole batch must be kept for the next one (16 spares left nearly every piece a new buffer)."""
    n = 2048
    meta = _meta(n, BLOCK_SIZE)
    manager = PieceManager(meta, Bitfield(n), RarestFirst(n))
    seed = Bitfield(n)
    for i in range(n):
        seed.set(i)
    manager.add_peer_pieces(seed)
    batch = 256
    first = manager.next_requests("peer", seed, batch)
    assert len(first) == batch
    buffers = set()
    for index, begin, length in first:
        view = manager.block_buffer(index, begin, length)
        view[:] = b"\x01" * length
        others, piece = manager.block_received("peer", index, begin)
        assert piece is not None and not others
        buffers.add(id(piece.buffer))
        manager.piece_verified(index)
        manager.recycle(piece)
    second = manager.next_requests("peer", seed, batch)
    assert len(second) == batch
    reused = sum(id(manager.partial[index].buffer) in buffers for index, _b, _n in second)
    assert reused == batch


def test_a_reporter_event_without_a_listening_plugin_still_reaches_the_queue_and_listeners():
    """The direct path for ContainedHooks (no wrapper per call, no plugin scan when none listens) still
    queues the event and calls the torrent's listeners."""
    pm = plugins.get_plugin_manager()
    hooks = plugins.ContainedHooks(pm)
    queue = EventQueue()
    meta = _meta(4, BLOCK_SIZE)
    reporter = Reporter(hooks, meta, meta.info_hash, queue.put)
    heard = []
    reporter.listeners.append(heard.append)
    reporter.emit("piece_verified", index=3)
    (event,) = list(queue.drain(0))
    assert isinstance(event, PieceVerified) and event.index == 3 and event.name == meta.name
    assert heard == [event]


def test_a_failing_reporter_is_still_contained_on_the_direct_path():
    """A reporter plugin that raises is disabled once (one warning), the others still get every event."""
    pm = plugins.get_plugin_manager()
    calls = []

    class Bad:
        @hookspec.hookimpl
        def torrentcore_on_piece_verified(self, torrent, index):
            raise RuntimeError("boom")

    class Good:
        @hookspec.hookimpl
        def torrentcore_on_piece_verified(self, torrent, index):
            calls.append(index)

    pm.register(Bad(), name="bad")
    pm.register(Good(), name="good")
    warnings = []

    class Log:
        def warning(self, message, **kw):
            warnings.append(message)

    hooks = plugins.ContainedHooks(pm, Log())
    meta = _meta(4, BLOCK_SIZE)
    reporter = Reporter(hooks, meta, meta.info_hash, lambda event: None)
    for i in range(3):
        reporter.emit("piece_verified", index=i)
    assert calls == [0, 1, 2]
    assert hooks.disabled == ["bad"] and len(warnings) == 1
