"""How many bytes one ``pwrite`` of the filesystem storage carries: a whole span, or 32 KiB at a time when
that costs less CPU.

Linux (6.x, ext4) fills the page cache with folios as large as each write asks for. Folios of up to 32 KiB
(order 3) come from per-CPU lists of recently freed pages; larger ones from the buddy allocator. On a virtual
machine whose host takes free guest memory back (free page reporting with a balloon, as on Firecracker and
many cloud guests), pages from the buddy allocator are often memory the host reclaimed, and their first touch
is a fault in the host, counted as the writing thread's system time. Measured on this project's benchmark VM
(1 GiB written in 256 KiB pieces, one file, 2026-12-01):

* 256 KiB per ``pwrite``: 0.30-0.41 s of CPU right after another such write was deleted, 1.2-3.9 s after a
  pause of a few seconds (and in most rounds of ``benchmarks/swarm.py``: 1.8-3.7 s of sys time per GiB);
* 32 KiB per ``pwrite``: 0.43-0.62 s whatever came before;
* every piece 32 KiB at a time, in ``swarm.py`` (1 GiB, 1 and 3 seeders, 4 rounds, the same code with whole
  writes in the same rounds): sys time 1.33-1.54 s per GiB against 1.76-3.71, user time +0.1 s (eight GIL
  hand-overs per piece instead of one), 1.16x the MB/s, 0.82x the CPU.

With no such penalty (bare metal, or a host that never reclaims), whole writes are the cheaper ones: 32 KiB at
a time was 0.94x as fast on one file and 0.80x on a tree of 200 files in a run without it (2026-12-01).
So neither size is right everywhere, and the cost moves during a run (a download can start on freshly freed
pages and run into reclaimed ones halfway). :class:`WriteSize` measures both: the CPU time of the writing
thread per byte (``time.thread_time``, which counts the host's faults and not the time the thread waits),
a running average for each size, the cheaper one used (small ones only by a wide margin: :data:`SMALL_MARGIN`,
:data:`SMALL_FLOOR`), the other tried now and then (less often while the tries do not change the choice:
:data:`PROBE_FIRST`, :data:`PROBE_MOST`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: Bytes per ``pwrite`` in small mode: the largest page-cache folio that still comes from the per-CPU free
#: lists (order 3). 64 KiB per write cost 1.1-1.8 s per GiB in the measurement above, 16 KiB the same as 32.
SMALL_WRITE_BYTES = 32 * 1024
#: Writes shorter than this are neither measured nor split (a 16 KiB tail has nothing to gain).
MEASURED_WRITE_BYTES = 128 * 1024
#: Measured writes between two tries of the size not chosen: PROBE_FIRST after a try that changed the choice
#: or found it much cheaper than thought (and at the start), doubled after each other try, up to PROBE_MOST (128
#: MiB of 256 KiB pieces) while whole writes are chosen. The size chosen is measured at every write, so the start
#: of a penalty is seen at once, its end within PROBE_MOST_SMALL writes and the tries after it. Tries of the worse
#: size cost: with one every 32 writes, 5-7 % of a tree's pieces went out in small writes without the penalty and
#: the writing thread's CPU per GiB was 1.08x that of whole writes only (benchmarks/storage_write.py --extent 16
#: --rate 200, 4 rounds); with gaps of up to 128 writes, 19-21 tries of 2,041 writes and 1.02-1.06x. With these
#: gaps 2,048 writes make 10 tries (writes 2, 10, 26, 58, 122, 250, 506, 1018, 1530, 2042).
PROBE_FIRST = 4
PROBE_MOST = 512
#: ...but while small writes are chosen, whole ones are tried at least every PROBE_MOST_SMALL writes: a wrong
#: choice of small writes costs more (8 GIL hand-overs a piece) than a wrong choice of whole ones.
PROBE_MOST_SMALL = 64
#: Small writes are chosen once whole ones cost this many times their CPU per byte. Costs measured above: whole /
#: small 0.65-0.95 without the penalty, 2.8-6.3 with it. Small writes cost user time too, which the writing
#: thread's clock does not see (the GIL hand-overs), and a tree's whole writes cost 1.5-2.5x their usual now and
#: then without any penalty (the first writes into a new file; fsyncs of the same files meanwhile): with 1.3,
#: 1-7 % of the pieces of storage_write.py's tree went out in small writes and its CPU per GiB was 1.07x.
SMALL_MARGIN = 2.0
#: ...and only once they cost more than this many CPU seconds per byte (1.07 s per GiB): the tree's whole writes
#: cost 0.50 (median) and 0.80 (p90) ns per byte in a swarm.py download, and a few of its slower ones in a row
#: made small writes the choice for 296 of 2,042 writes (15 %, at 0.8 ns per byte) in one of two runs; the
#: penalty's whole writes cost 1.2-3.9 ns.
SMALL_FLOOR = 1.0e-9
#: Weight of the newest measurement in the running average of the size chosen, and of a try of the other.
WEIGHT = 0.25
PROBE_WEIGHT = 0.5


class WriteSize:
    """Chooses the bytes per ``pwrite`` for each write of a storage, from what the earlier ones cost.

    Not thread-safe by itself: the filesystem storage's writes never overlap (the engine holds its disk lock).
    ``clock`` is the CPU clock of the calling thread (tests give another).
    """

    def __init__(self, clock: Callable[[], float] = time.thread_time) -> None:
        self.clock = clock
        #: Running average of CPU seconds per byte, whole and small (None: not measured yet).
        self.cost: dict[bool, float | None] = {False: None, True: None}
        self.small = False  # the size chosen: small writes (True) or whole ones
        self._writes = 0  # measured writes so far
        self._gap = PROBE_FIRST  # measured writes from one try of the other size to the next
        self._next_try = 2  # the measured write that tries the other size next (the second one first)
        self._trying = False  # the write under way tries the other size

    def chunk(self, n: int) -> tuple[int, bool]:
        """Bytes per ``pwrite`` for a span of ``n`` bytes, and whether to measure it (then pass the
        clock's reading to :meth:`measured` afterwards)."""
        if n < MEASURED_WRITE_BYTES:
            return n, False
        self._writes += 1
        self._trying = self._writes >= self._next_try
        small = self.small != self._trying
        return (SMALL_WRITE_BYTES if small else n), True

    def measured(self, chunk: int, n: int, seconds: float) -> None:
        """A measured span of ``n`` bytes was written ``chunk`` bytes at a time in ``seconds`` of CPU."""
        small = chunk < n
        per_byte = max(0.0, seconds) / n
        old = self.cost[small]
        weight = PROBE_WEIGHT if self._trying else WEIGHT
        self.cost[small] = per_byte if old is None else old + weight * (per_byte - old)
        whole, little = self.cost[False], self.cost[True]
        before = self.small
        if whole is not None and little is not None:
            self.small = whole > SMALL_MARGIN * little and whole > SMALL_FLOOR
        if self._trying:
            self._trying = False
            # Changed: the choice, or the size tried is now much cheaper than thought (the penalty ended): try
            # again soon. Otherwise later.
            changed = self.small != before or (old is not None and per_byte < old / 2)
            self._gap = PROBE_FIRST if changed else min(2 * self._gap, PROBE_MOST_SMALL if self.small else PROBE_MOST)
            self._next_try = self._writes + self._gap


__all__ = ["WriteSize", "SMALL_WRITE_BYTES", "MEASURED_WRITE_BYTES", "PROBE_FIRST", "PROBE_MOST", "PROBE_MOST_SMALL",
           "SMALL_MARGIN", "SMALL_FLOOR"]
