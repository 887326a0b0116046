"""What the ``torrentcore`` command needs from its process: stop signals and a usable standard output.

* :data:`STOP_SIGNALS`: SIGINT (Ctrl-C), SIGTERM and SIGHUP (the terminal went away, or a service manager
  asks) all stop ``run``/``seed`` cleanly (trackers told ``stopped``, files flushed, the resume record
  written); the exit code is ``128 + signal number`` (130, 143, 129).
* :func:`require_stdout` / :func:`flush_stdout`: a command whose job is to print (``info``, ``plugins``)
  started with standard output closed (``>&-``) or unwritable (``>/dev/full``) fails with one line on
  standard error and exit code 1, not a traceback.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

from .errors import EXIT_INTERRUPTED, TorrentcoreError

__all__ = ["STOP_SIGNALS", "flush_stdout", "install_stop_handlers", "printing", "require_stdout"]

#: Signals that stop a running torrent cleanly, with their exit codes (128 + the signal number).
STOP_SIGNALS: dict[int, int] = {signal.SIGINT: EXIT_INTERRUPTED, signal.SIGTERM: 128 + signal.SIGTERM}
if hasattr(signal, "SIGHUP"):  # not on Windows
    STOP_SIGNALS[signal.SIGHUP] = 128 + signal.SIGHUP


def install_stop_handlers(stop: Callable[[int], object]) -> list:
    """Call ``stop(exit_code)`` on the event loop for each of :data:`STOP_SIGNALS`; return the handlers
    (``handler.cancel()`` removes one)."""
    import gevent

    return [gevent.signal_handler(sig, stop, code) for sig, code in STOP_SIGNALS.items()]


def require_stdout() -> None:
    """Raise :class:`TorrentcoreError` (exit 1) if there is no standard output to print to."""
    out = sys.stdout
    if out is None or getattr(out, "closed", False):
        raise TorrentcoreError("standard output is closed: nothing can be printed")


def flush_stdout() -> None:
    """Flush standard output; a write error (disk full, closed pipe end aside) becomes :class:`TorrentcoreError`.

    ``BrokenPipeError`` passes through: the reader went away on purpose (``| head``), which is not an error.
    """
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except (OSError, ValueError) as exc:
        _discard_stdout()  # or the interpreter's own flush at exit prints a second complaint
        raise TorrentcoreError(f"cannot write to standard output: {getattr(exc, 'strerror', None) or exc}") from None


def _discard_stdout() -> None:
    """Point file descriptor 1 at the null device, so buffered output can be flushed (and lost) quietly."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 1)
        finally:
            os.close(null)
    except OSError:
        pass


def printing(command: Callable[..., int], *args: object) -> int:
    """Run a command whose job is to print: :func:`require_stdout` first, :func:`flush_stdout` after."""
    require_stdout()
    try:
        code = command(*args)
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        _discard_stdout()
        raise TorrentcoreError(f"cannot write to standard output: {exc.strerror or exc}") from None
    flush_stdout()
    return code
