"""The daemon's queue decisions (torrentcore.daemon.queue.plan) on plain objects: order, sizes, stalled; and
the queue order after queue-move-* (queue.moved)."""

from __future__ import annotations

from dataclasses import dataclass

from torrentcore.daemon.queue import moved, plan


@dataclass(eq=False)
class T:
    position: int
    complete: bool = False
    queued: bool = True
    wants_to_run: bool = True
    stalled: bool = False


def _settings(**kw):
    base = {"download-queue-enabled": True, "download-queue-size": 2, "seed-queue-enabled": False,
            "seed-queue-size": 10}
    base.update(kw)
    return base


def test_queue_order_and_size():
    ts = [T(2), T(0), T(1), T(3)]
    p = plan(ts, _settings(), lambda t: t.stalled)
    assert [t.position for t in p.start] == [0, 1] and p.enqueue == []


def test_a_stalled_torrent_holds_no_slot():
    running = T(0, queued=False, stalled=True)
    waiting = [T(1), T(2)]
    p = plan([running, *waiting], _settings(**{"download-queue-size": 1}), lambda t: t.stalled)
    assert p.start == [waiting[0]] and p.enqueue == []


def test_lowering_the_size_queues_the_last_ones_and_stopped_ones_never_start():
    ts = [T(0, queued=False), T(1, queued=False), T(2, queued=False), T(3, wants_to_run=False)]
    p = plan(ts, _settings(**{"download-queue-size": 1}), lambda t: False)
    assert p.start == [] and p.enqueue == ts[1:3]


def test_seeds_have_their_own_queue_and_a_disabled_queue_starts_everything():
    seeds = [T(0, complete=True), T(1, complete=True)]
    downloads = [T(2), T(3), T(4)]
    p = plan([*seeds, *downloads], _settings(**{"seed-queue-enabled": True, "seed-queue-size": 1,
                                                 "download-queue-enabled": False}), lambda t: False)
    assert p.start == [*downloads, seeds[0]] and p.enqueue == []


def test_stalled_means_no_data_moved_for_the_stall_time():
    """fields.is_stalled on a torrent entry whose handle reports a running download (a stand-in handle:
    only the status the queue reads)."""
    import time
    from types import SimpleNamespace

    from torrentcore.daemon.database import TorrentRow
    from torrentcore.daemon.entry import TorrentEntry
    from torrentcore.daemon.fields import is_stalled

    status = SimpleNamespace(state="downloading", num_pieces=10, progress=0.5)
    handle = SimpleNamespace(status=lambda: status, meta=None)
    now = time.monotonic()
    entry = TorrentEntry(row=TorrentRow(info_hash="ab", name="x", download_dir="/x"), handle=handle,
                         started=now - 120, last_active=now - 90)
    assert is_stalled(entry, 60) and not is_stalled(entry, 100) and not is_stalled(entry, None)
    entry.last_active = now
    assert not is_stalled(entry, 60)
    entry.last_active, entry.queued = 0.0, True  # a queued torrent is waiting, not stalled
    assert not is_stalled(entry, 60)
    entry.queued, status.state = False, "paused"
    assert not is_stalled(entry, 60)


def test_queue_moves_as_transmission_does():
    a, b, c, d, e = (T(i) for i in range(5))
    order = [a, b, c, d, e]
    assert moved(order, [d, b], "top") == [b, d, a, c, e]
    assert moved(order, [b, d], "bottom") == [a, c, e, b, d]
    assert moved(order, [a, b, d], "up") == [a, b, d, c, e]  # a and b are first already: they stay
    assert moved(order, [b, d, e], "down") == [a, c, b, d, e]  # d and e are last already: they stay
    assert moved(order, [c], "sideways") == order and order == [a, b, c, d, e]  # never changed in place
