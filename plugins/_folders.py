"""The folders of a download kept open, so that opening a data file does not walk its folders again.

The filesystem storage opens each data file relative to a descriptor of its folder, which
:func:`~torrentcore.hookspec.open_folder_under` walks from the download folder down, one component at a time
and never through a link. That walk is an ``open`` and a ``close`` per component, and the storage reopens files
(it keeps a few dozen open: see ``OPEN_FILES_BUDGET`` in :mod:`.filesystem`). :class:`OpenFolders` walks each
folder once and keeps its descriptor for the next files in it, least recently used ones closed first.

A kept descriptor goes on naming the folder that was walked, as a kept file descriptor names its file: if
another program moves or deletes the folder meanwhile, the storage sees a missing file there and asks for a new
walk (:meth:`OpenFolders.forget`), which finds whatever the path holds now (and refuses a link).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torrentcore.hookspec import close_fd, open_folder_under


class OpenFolders:
    """Descriptors of folders under ``root``, keyed by their path components (``()``: ``root`` itself).

    Not thread-safe: the storage calls it one call at a time, as its own callers do.
    """

    def __init__(self, root: str) -> None:
        self._root = root
        self._fds: OrderedDict[tuple[str, ...], int] = OrderedDict()  # least recently used first

    def __len__(self) -> int:
        return len(self._fds)

    def get(self, parts: Sequence[str], create: bool) -> tuple[int | None, bool]:
        """``(descriptor, kept)`` of the folder ``root/parts...``, walked (and created, if ``create``) unless
        it is kept already. The descriptor is lent: valid until the next call of this object; ``None`` when
        the folder does not exist and ``create`` is false. ``kept``: it was kept from an earlier call, so the
        folder may have been moved or deleted since (:meth:`forget` it and ask again). Raises what
        :func:`open_folder_under` raises."""
        key = tuple(parts)
        fd = self._fds.get(key)
        if fd is not None:
            self._fds.move_to_end(key)
            return fd, True
        # The folders usually exist (created by an earlier walk): walked without a mkdir of each component
        # first; only a missing one makes the walk again, creating.
        fd = open_folder_under(self._root, key, False)
        if fd is None and create:
            fd = open_folder_under(self._root, key, True)
        if fd is None:
            return None, False
        self._fds[key] = fd
        return fd, False

    def forget(self, parts: Sequence[str]) -> None:
        """Close the kept descriptor of ``root/parts...``, if any: the next :meth:`get` walks it again."""
        fd = self._fds.pop(tuple(parts), None)
        if fd is not None:
            close_fd(fd)

    def trim(self, most: int) -> None:
        """Keep at most ``most`` descriptors (the least recently used are closed)."""
        while len(self._fds) > most:
            _, fd = self._fds.popitem(last=False)
            close_fd(fd)

    def close(self) -> None:
        """Close every kept descriptor."""
        self.trim(0)
