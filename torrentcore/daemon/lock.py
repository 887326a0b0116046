"""One daemon per config folder: an exclusive ``flock`` on ``daemon.lock``, held for the daemon's life.

The lock file is opened with ``O_NOFOLLOW`` (a planted symlink is refused, never followed) and holds the
owner's pid, so the refusal can say who has it. The kernel drops the lock when the process dies, even by
``kill -9``, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from ..errors import BadInputError

LOCK_NAME = "daemon.lock"


class ConfigLock:
    """The exclusive lock of a config folder (:meth:`acquire` raises BadInputError when it is taken)."""

    def __init__(self, folder: str) -> None:
        self.path = os.path.join(folder, LOCK_NAME)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise BadInputError (one line: which daemon holds it)."""
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags | getattr(os, "O_NONBLOCK", 0), 0o600)
        except OSError as exc:
            why = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
            raise BadInputError(f"cannot open the lock file {self.path}: {why}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise BadInputError(f"cannot use the lock file {self.path}: it is not a regular file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            finally:
                os.close(fd)
            raise BadInputError(f"another torrentcore daemon (pid {owner}) is using the config folder "
                                f"{os.path.dirname(self.path)}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays; its content is stale then)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
