"""A ``--plugin`` module for tests: the ``slow-filesystem`` storage, the filesystem storage whose every write
first sleeps ``TC_WRITE_DELAY`` seconds (in the worker thread that writes).

``TC_WRITE_DELAY=0.3 torrentcore run T -o OUT --plugin tc_slow_storage --storage slow-filesystem`` (with this
folder on ``PYTHONPATH``): a disk slower than the network, without guessing how fast the network is.
"""

from __future__ import annotations

import os

from gevent import monkey

from torrentcore.hookspec import hookimpl
from torrentcore_plugins.filesystem import FilesystemStorage

_sleep = monkey.get_original("time", "sleep")  # a real sleep: writes run in OS threads


class SlowFilesystemStorage(FilesystemStorage):
    """FilesystemStorage with a pause before each write."""

    def write(self, piece: int, offset: int, data) -> None:  # noqa: ANN001 - as FilesystemStorage.write
        _sleep(float(os.environ.get("TC_WRITE_DELAY", "0")))
        super().write(piece, offset, data)


@hookimpl
def torrentcore_storage_backends():
    """Offer ``slow-filesystem``."""
    return {"slow-filesystem": lambda torrent, save_path, options: SlowFilesystemStorage(torrent, save_path)}
