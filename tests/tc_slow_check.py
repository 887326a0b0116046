"""A ``--plugin`` module for tests: the start-up check takes ``TC_CHECK_DELAY`` seconds more per piece.

``TC_CHECK_DELAY=0.005 torrentcore seed ... --plugin tc_slow_check`` (with this folder on ``PYTHONPATH``)
sleeps in every ``torrentcore_on_piece_verified`` call, which the check makes for each good piece it finds:
a check that lasts long enough for a test to act while it runs, without guessing how fast hashing is.
"""

from __future__ import annotations

import os
import time

from torrentcore.hookspec import Metainfo, hookimpl


@hookimpl
def torrentcore_on_piece_verified(torrent: Metainfo, index: int) -> None:
    """Sleep a little (cooperatively: the program is gevent-patched) for each verified piece."""
    time.sleep(float(os.environ.get("TC_CHECK_DELAY", "0")))
