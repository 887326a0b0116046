"""A ``--plugin`` module for tests: the process signals itself in the middle of the start-up check.

``TC_SIGNAL_AFTER_PIECES=N TC_SIGNAL=15 torrentcore seed ... --plugin tc_signal_during_check`` (with this
folder on ``PYTHONPATH``) sends signal ``TC_SIGNAL`` to its own process when the N-th piece is verified
while the torrent is still checking the data it found on disk: a real signal, delivered at a moment a test
can count on instead of guessing when a check is half done.
"""

from __future__ import annotations

import os
import signal

from torrentcore.hookspec import Metainfo, hookimpl

_count = 0


@hookimpl
def torrentcore_on_piece_verified(torrent: Metainfo, index: int) -> None:
    """Count verified pieces; signal this process once, at the N-th."""
    global _count
    _count += 1
    if _count == int(os.environ.get("TC_SIGNAL_AFTER_PIECES", "0")):
        os.kill(os.getpid(), int(os.environ.get("TC_SIGNAL", str(int(signal.SIGTERM)))))
