"""torrentcore's own files, read and written without trusting what is already on disk.

Resume records and the DHT state live in the *state directory* (:func:`state_dir`):
``$TORRENTCORE_STATE_DIR`` if set, else ``$XDG_STATE_HOME/torrentcore``, else
``~/.local/state/torrentcore``.

The rules, for every file torrentcore keeps for itself:

* reading (:func:`read_state`): the path is ``lstat``-ed and opened with
  ``O_NOFOLLOW | O_NONBLOCK``, then ``fstat``-ed; only a regular file is read,
  and at most ``max_bytes`` of it. A symlink, FIFO (a plain ``open`` of one
  blocks until a writer appears, and no signal ends the wait), device or folder
  raises :class:`UnsafeStateFile`, whose text is one line for a warning;
* writing (:func:`write_atomic`): a new file made with :func:`tempfile.mkstemp`
  (``O_CREAT | O_EXCL | O_NOFOLLOW``) in the same folder, ``fsync``-ed, then
  ``os.replace``-d over the old name, which replaces a directory entry and never
  writes through whatever was planted there;
* decoding (:func:`decode_json`): any malformed document (5,000 levels of
  nesting included) is a :class:`ValueError`, never a ``RecursionError``.

:func:`open_folder_under` walks a download folder one component at a time with
directory descriptors (``mkdir`` then ``open(O_DIRECTORY | O_NOFOLLOW)`` relative
to the parent), so a symlink planted inside the folder is refused before anything
is created beyond it.

:func:`close_fd` closes the descriptors of these files and folders (``os.close`` as the standard library
has it, also under gevent's monkey-patching).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Sequence
from typing import Any

from gevent import monkey

#: ``os.close`` as the standard library has it, whether or not gevent has patched ``os`` (before or after this
#: import). gevent (25.8.1 and later) makes ``os.close`` cooperate with descriptors its hub may be watching: it
#: checks each one first (``fcntl`` and ``fstat``, two more system calls, each handing the GIL over), and on the
#: event loop's thread it defers the close of anything that is not a regular file (a folder) to the loop's next
#: turn. The descriptors of data files, folders and state files are never watched: strace of one download of
#: benchmarks/swarm.py's tree (512 MiB, 200 files, 3 seeders) counted 2,124 ``close`` and 1,955 ``fcntl``
#: calls, one ``fcntl`` and one ``fstat`` before nearly every close.
close_fd = monkey.get_original("os", "close")

__all__ = [
    "STATE_DIR_ENV",
    "UnsafePath",
    "UnsafeStateFile",
    "decode_json",
    "fsync_dir",
    "keyed_name",
    "open_folder_under",
    "read_state",
    "remove_state",
    "state_dir",
    "write_atomic",
]

#: Environment variable naming the state directory (tests give every process its own).
STATE_DIR_ENV = "TORRENTCORE_STATE_DIR"

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


class UnsafeStateFile(Exception):
    """A state file that must not be read: a link, FIFO, device or folder, too large, or unreadable."""


class UnsafePath(Exception):
    """A folder inside the download folder that is not a real folder (a symlink, a file)."""


def state_dir() -> str:
    """The folder of torrentcore's state (resume records, ``dht.json``); it may not exist yet."""
    base = os.environ.get(STATE_DIR_ENV)
    if not base:
        xdg = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
        base = os.path.join(xdg, "torrentcore")
    return os.path.abspath(base)


def keyed_name(*parts: str, suffix: str = "") -> str:
    """A file name made from the SHA-1 of ``parts`` (joined with NUL): stable, fixed length, no path."""
    digest = hashlib.sha1("\0".join(parts).encode("utf-8", "surrogateescape")).hexdigest()
    return digest + suffix


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def read_state(path: str, max_bytes: int) -> bytes | None:
    """The contents of the regular file at ``path``, or ``None`` if there is none.

    Raises :class:`UnsafeStateFile` (one line: why) for anything else at ``path``, for a file larger
    than ``max_bytes``, and when it cannot be read.
    """
    try:
        before = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnsafeStateFile(f"cannot read it: {exc.strerror}") from None
    if not stat.S_ISREG(before.st_mode):
        raise UnsafeStateFile(f"it is {_kind(before.st_mode)}, not a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeStateFile("it is a symbolic link, not a regular file") from None
        raise UnsafeStateFile(f"cannot read it: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            raise UnsafeStateFile("it was replaced while being opened")
        if st.st_size > max_bytes:
            raise UnsafeStateFile(f"it is {st.st_size} bytes, more than the {max_bytes} expected")
        chunks = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            raise UnsafeStateFile(f"it grew past the {max_bytes} bytes expected")
        return b"".join(chunks)
    except UnsafeStateFile:
        raise
    except OSError as exc:
        raise UnsafeStateFile(f"cannot read it: {exc.strerror}") from None
    finally:
        close_fd(fd)


def decode_json(raw: bytes) -> Any:
    """``json.loads`` that raises only :class:`ValueError` (bad UTF-8 and too deep nesting included)."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except (UnicodeDecodeError, TypeError) as exc:
        raise ValueError(str(exc)) from None


def write_atomic(path: str, data: bytes, mode: int = 0o600, temp_prefix: str | None = None) -> None:
    """Replace ``path`` with a new file holding ``data``: ``mkstemp`` beside it, ``fsync``, ``os.replace``.

    Whatever is at ``path`` (a symlink, a FIFO) is replaced, never written through or opened; the folder
    is created if needed. Raises :class:`OSError`; the temporary file is gone then.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    prefix = temp_prefix if temp_prefix is not None else "." + os.path.basename(path) + "."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            close_fd(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(folder)


def remove_state(path: str) -> None:
    """Remove the state file at ``path`` if there is one (a link is removed, never followed)."""
    try:
        os.unlink(path)
    except OSError:
        pass


def fsync_dir(path: str) -> None:
    """Make a rename in ``path`` durable (best effort: some filesystems cannot sync a folder)."""
    try:
        fd = os.open(path, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        close_fd(fd)


def _what_is(name: str, dir_fd: int) -> str:
    """``"a symlink"``, ``"a FIFO"``, ... for the entry ``name`` of the folder ``dir_fd`` (never followed)."""
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except OSError:
        return "not a folder"
    return "a symlink" if stat.S_ISLNK(mode) else _kind(mode) if not stat.S_ISREG(mode) else "a file, not a folder"


def open_folder_under(root: str, parts: Sequence[str], create: bool) -> int | None:
    """A descriptor of the folder ``root/parts...`` (the caller closes it), walked one component at a time.

    Each component is created if ``create`` (``mkdir`` relative to its parent's descriptor), then opened
    with ``O_DIRECTORY | O_NOFOLLOW``: a symlink or a file where a folder should be raises
    :class:`UnsafePath` before anything is created beyond it. ``root`` itself (the user's choice) may be
    a link. ``None``: a component does not exist and ``create`` is false. Other errors: :class:`OSError`.
    """
    fd = os.open(root, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    walked = []
    try:
        for part in parts:
            walked.append(part)
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                child = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                if create:
                    raise
                close_fd(fd)
                return None
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # Linux says ENOTDIR for a link to a folder
                    raise UnsafePath(f"{os.path.join(*walked)} is {_what_is(part, fd)}") from None
                raise
            close_fd(fd)
            fd = child
    except BaseException:
        close_fd(fd)
        raise
    return fd
