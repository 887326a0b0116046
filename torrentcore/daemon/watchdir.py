"""The watch folder (``--watch-dir``): a ``.torrent`` dropped there is added and renamed ``.added``,
as Transmission does; a malformed one is renamed ``.invalid`` with one log line; a ``.magnet`` text file
holding a magnet link works the same way.

The folder is polled (every :data:`POLL_INTERVAL` seconds; no inotify dependency). A file is taken
once its size stayed the same for one round (a copy in progress is not read half-way); only regular
files are read (a symlink or FIFO dropped there is renamed ``.invalid``, never followed or opened).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

import gevent
import structlog

from ..errors import TorrentcoreError
from ..statefile import UnsafeStateFile, read_state

log = structlog.get_logger(__name__)

#: Seconds between two looks at the folder (Transmission polls every 10 s where inotify is missing).
POLL_INTERVAL = 1.0
#: Largest .torrent read from the folder.
MAX_TORRENT = 64 << 20
SUFFIXES = (".torrent", ".magnet")


class DuplicateIsFine(Exception):
    """Raised by the add callback for a torrent already there (the file is renamed ``.added`` too)."""


class WatchDir:
    """Polls ``folder`` and calls ``add(source)`` (bytes of a .torrent, or a magnet link) for new files."""

    def __init__(self, folder: str, add: Callable[[str | bytes], object]) -> None:
        self.folder = os.path.abspath(folder)
        self.add = add
        self._sizes: dict[str, int] = {}
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        """Poll in a greenlet of its own."""
        os.makedirs(self.folder, exist_ok=True)
        self._greenlet = gevent.spawn(self._loop)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)

    def _loop(self) -> None:
        while True:
            try:
                self.scan()
            except OSError as exc:
                log.warning("cannot read the watch folder", folder=self.folder, error=exc.strerror)
            gevent.sleep(POLL_INTERVAL)

    def scan(self) -> None:
        """One look at the folder."""
        seen = set()
        for name in sorted(os.listdir(self.folder)):
            if not name.lower().endswith(SUFFIXES) or name.startswith("."):
                continue
            path = os.path.join(self.folder, name)
            seen.add(path)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and self._sizes.get(path) != st.st_size:
                self._sizes[path] = st.st_size  # wait one round: it may still be being written
                continue
            self._take(path, st)
        self._sizes = {p: s for p, s in self._sizes.items() if p in seen}

    def _take(self, path: str, st: os.stat_result) -> None:
        name = os.path.basename(path)
        try:
            if not stat.S_ISREG(st.st_mode):
                raise TorrentcoreError("it is not a regular file")
            try:
                data = read_state(path, MAX_TORRENT)
            except UnsafeStateFile as exc:
                raise TorrentcoreError(str(exc)) from None
            if data is None:
                return
            if name.lower().endswith(".magnet"):
                source: str | bytes = data.decode("utf-8", "replace").strip()
            else:
                source = data
            try:
                self.add(source)
            except DuplicateIsFine:
                pass
        except TorrentcoreError as exc:
            log.warning("watch folder: invalid torrent file", file=name, error=str(exc))
            self._rename(path, ".invalid")
            return
        log.info("watch folder: torrent added", file=name)
        self._rename(path, ".added")

    def _rename(self, path: str, suffix: str) -> None:
        try:
            os.replace(path, path + suffix)
        except OSError as exc:
            log.warning("watch folder: cannot rename", file=os.path.basename(path), error=exc.strerror)
        self._sizes.pop(path, None)


__all__ = ["WatchDir", "DuplicateIsFine", "POLL_INTERVAL"]
