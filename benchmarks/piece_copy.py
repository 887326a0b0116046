"""What zero-copy piece buffers would save and cost, per operation (no engine code; min of many repetitions of
``time.thread_time_ns``, so a loaded machine inflates nothing but the spread).

    python benchmarks/piece_copy.py

Today a 1 MiB read buffer is reused, each 16 KiB block is copied into its piece's (recycled) bytearray, and a
worker hashes the piece in one ``sha1`` call and writes it with one ``pwrite``. A zero-copy design would read
into 1 MiB chunks kept immutable while a piece holds a view of them: a piece keeps 16 views, hashed with 16
``update`` calls and written with one ``os.pwritev``. Printed: per block, the copy against keeping a view and a
fresh chunk per read; per piece, hashing and writing (to /dev/shm) the whole buffer against its 16 views.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time

BLOCK, PIECE, CHUNK = 16384, 256 * 1024, 1 << 20
PER_CHUNK = CHUNK // (BLOCK + 13)  # whole PIECE messages (13-byte header + 16 KiB) in one 1 MiB read
OFFSETS = [i * (BLOCK + 13) + 13 for i in range(PER_CHUNK)]


def best(f, reps: int = 200) -> float:
    """Nanoseconds of the fastest of ``reps`` calls of ``f``."""
    b = 1 << 62
    for _ in range(reps):
        t = time.thread_time_ns()
        f()
        b = min(b, time.thread_time_ns() - t)
    return float(b)


def main() -> None:
    view = memoryview(bytearray(os.urandom(CHUNK)))
    piece = bytearray(PIECE)

    def copy_blocks() -> None:
        for k, o in enumerate(OFFSETS):
            s = (k & 15) * BLOCK
            piece[s : s + BLOCK] = view[o : o + BLOCK]

    def keep_views() -> None:
        views = []
        for o in OFFSETS:
            views.append(view[o : o + BLOCK])

    def fresh_chunk() -> None:
        bytearray(CHUNK)

    copy, keep, fresh = (best(f) / PER_CHUNK for f in (copy_blocks, keep_views, fresh_chunk))
    print(f"per block (ns): copy into its piece {copy:.0f}; keep a view {keep:.0f}; "
          f"a fresh 1 MiB chunk per read {fresh:.0f}")
    views = [view[o : o + BLOCK] for o in OFFSETS[: PIECE // BLOCK]]

    def hash_views() -> None:
        h = hashlib.sha1()
        for v in views:
            h.update(v)
        h.digest()

    whole = best(lambda: hashlib.sha1(piece).digest(), 100) / 1e3
    print(f"per piece (us): sha1 of the buffer {whole:.1f}; of 16 views {best(hash_views, 100) / 1e3:.1f}")
    fd, path = tempfile.mkstemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        one = best(lambda: os.pwrite(fd, piece, 0), 100) / 1e3
        many = best(lambda: os.pwritev(fd, views, 0), 100) / 1e3
        print(f"per piece (us): pwrite of the buffer {one:.1f}; pwritev of 16 views {many:.1f}")
    finally:
        os.close(fd)
        os.unlink(path)
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
