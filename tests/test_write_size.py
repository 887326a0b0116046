"""plugins/_write_size.py: the filesystem storage writes whole spans, or 32 KiB at a time while whole writes cost
more CPU per byte (a VM's page-cache penalty), trying the other size now and then. A fake CPU clock stands in for
the machine's state; the storage test checks the bytes on disk and the sizes of the real ``pwrite`` calls."""

from __future__ import annotations

import os

from test_storage_filesystem import make_meta

from torrentcore_plugins import _write_size as ws
from torrentcore_plugins import filesystem as fsmod
from torrentcore_plugins.filesystem import FilesystemStorage

PIECE = 256 * 1024


class FakeCost:
    """A CPU clock whose writes cost ``whole`` or ``small`` seconds per byte (as the caller sets them)."""

    def __init__(self, whole: float, small: float) -> None:
        self.whole, self.small, self.now = whole, small, 0.0

    def __call__(self) -> float:
        return self.now


def write_once(sizer: ws.WriteSize, cost: FakeCost, n: int = PIECE) -> int:
    """One write of ``n`` bytes as the storage does it; returns the bytes per pwrite used."""
    size, measure = sizer.chunk(n)
    began = cost() if measure else 0.0
    cost.now += n * (cost.small if size < n else cost.whole)
    if measure:
        sizer.measured(size, n, cost() - began)
    return size


def tries(sizes: list[int], small: bool) -> list[int]:
    """The writes (0-based) that used the size not chosen: small ones while whole is chosen, or whole ones."""
    return [k for k, size in enumerate(sizes) if (size < PIECE) != small]


def test_whole_writes_stay_while_they_are_cheaper_and_the_other_size_is_tried_less_and_less_often():
    cost = FakeCost(whole=0.3e-9, small=0.5e-9)  # no penalty: whole writes are the cheaper ones
    sizer = ws.WriteSize(clock=cost)
    n = 4 * ws.PROBE_MOST
    sizes = [write_once(sizer, cost) for _ in range(n)]
    assert not sizer.small
    tried = tries(sizes, small=False)
    assert tried[0] == 1  # the second write
    gaps = [b - a for a, b in zip(tried, tried[1:])]
    assert gaps == sorted(gaps) and gaps[0] == 2 * ws.PROBE_FIRST and max(gaps) == ws.PROBE_MOST
    assert len(tried) <= 1 + n // ws.PROBE_MOST + ws.PROBE_MOST.bit_length()


def test_small_writes_are_chosen_while_whole_ones_cost_more_and_dropped_when_that_ends():
    cost = FakeCost(whole=2.0e-9, small=0.5e-9)  # the penalty: 4x the CPU per byte
    sizer = ws.WriteSize(clock=cost)
    sizes = [write_once(sizer, cost) for _ in range(3 * ws.PROBE_MOST)]
    assert sizer.small
    assert sizes[1] == ws.SMALL_WRITE_BYTES  # the first try, after which small writes are the choice
    tried = tries(sizes[2:], small=True)  # whole ones tried at least every PROBE_MOST_SMALL writes
    assert len(tried) <= 1 + 3 * ws.PROBE_MOST // ws.PROBE_MOST_SMALL + ws.PROBE_MOST_SMALL.bit_length()
    assert max(b - a for a, b in zip(tried, tried[1:])) == ws.PROBE_MOST_SMALL
    cost.whole = 0.3e-9  # the penalty ends (pages freed just before)
    later = [write_once(sizer, cost) for _ in range(2 * ws.PROBE_MOST + 4 * ws.PROBE_FIRST)]
    assert not sizer.small  # seen within the longest gap and the tries after it
    cost.whole = 2.0e-9  # and starts again: the size chosen is measured at every write
    again = [write_once(sizer, cost) for _ in range(8)]
    assert sizer.small and later[-1] == PIECE and again[-1] == ws.SMALL_WRITE_BYTES


def test_whole_writes_cheaper_than_the_floor_stay_however_cheap_small_ones_are():
    """A tree's whole writes cost 0.5-0.8 ns per byte with no penalty: below SMALL_FLOOR nothing is split."""
    cost = FakeCost(whole=0.9e-9, small=0.3e-9)
    sizer = ws.WriteSize(clock=cost)
    sizes = [write_once(sizer, cost) for _ in range(200)]
    assert not sizer.small and len(tries(sizes, small=False)) <= 1 + 200 // ws.PROBE_FIRST


def test_a_small_margin_keeps_whole_writes():
    """Small writes cost user time the writing thread's clock does not see: a gain below SMALL_MARGIN is not
    taken."""
    cost = FakeCost(whole=1.5e-9, small=1.0e-9)  # above SMALL_FLOOR, 1.5x
    sizer = ws.WriteSize(clock=cost)
    for _ in range(100):
        write_once(sizer, cost)
    assert not sizer.small


def test_short_spans_are_neither_split_nor_measured():
    sizer = ws.WriteSize(clock=FakeCost(1, 1))
    assert sizer.chunk(ws.MEASURED_WRITE_BYTES - 1) == (ws.MEASURED_WRITE_BYTES - 1, False)
    assert sizer.cost == {False: None, True: None}


def test_the_storage_writes_32_kib_at_a_time_while_whole_writes_cost_more(tmp_path, monkeypatch):
    """A tree whose pieces span files: written with small writes chosen, every pwrite is at most 32 KiB, the
    files are byte-exact, and the probes still write whole spans (at most the span)."""
    files = [([b"a"], os.urandom(3 * PIECE + 1000)), ([b"d", b"b"], os.urandom(5 * PIECE - 77)),
             ([b"c"], os.urandom(PIECE // 2 + 5))]
    meta, blob = make_meta(files, piece_length=PIECE)
    st = FilesystemStorage(meta, str(tmp_path))
    cost = FakeCost(whole=3e-9, small=0.5e-9)
    sizer = st._write_size = ws.WriteSize(clock=cost)
    real_pwrite = os.pwrite
    calls: list[int] = []

    def pwrite(fd, data, offset):
        calls.append(len(data))
        cost.now += len(data) * (cost.small if len(data) <= ws.SMALL_WRITE_BYTES else cost.whole)
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(fsmod.os, "pwrite", pwrite)
    for i in range(meta.num_pieces):
        st.write(i, 0, blob[i * PIECE : i * PIECE + meta.piece_size(i)])
        st.mark_complete(i)
    st.close()
    assert sizer.small
    probes = [n for n in calls[2:] if n > ws.SMALL_WRITE_BYTES]
    assert len(probes) <= 1 + meta.num_pieces // ws.PROBE_FIRST
    assert calls.count(ws.SMALL_WRITE_BYTES) >= 3 * len(probes)
    for path, data in files:
        assert tmp_path.joinpath("t", *(p.decode() for p in path)).read_bytes() == data
