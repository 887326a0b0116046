"""Typed errors with the exit code the CLI uses for each.

Exit codes: 0 success, 1 runtime failure, 2 bad input (unreadable or malformed
torrent, unknown plugin, bad option), 130 interrupted.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class TorrentcoreError(Exception):
    """Base of every error torrentcore reports to a user as one line."""

    exit_code = EXIT_RUNTIME


class BadInputError(TorrentcoreError):
    """Input the user gave us cannot be used (file, option, plugin name)."""

    exit_code = EXIT_BAD_INPUT


class BencodeError(BadInputError):
    """Data is not valid bencoding (or exceeds the size/depth limits)."""


class MetainfoError(BadInputError):
    """A .torrent or magnet link is malformed or unsupported."""


class PluginError(BadInputError):
    """A plugin name is unknown, or plugins disagree (duplicate names)."""


class StorageError(TorrentcoreError):
    """The storage backend failed (disk full, permission denied, ...)."""


class TrackerError(TorrentcoreError):
    """A tracker could not be reached or answered with an error or garbage."""


class ProtocolError(TorrentcoreError):
    """A peer broke the wire protocol; the connection is dropped."""
