"""The daemon's state in SQLite: every torrent (metainfo, folder, settings, dates, totals) and the
session settings that ``session-set`` changed.

* WAL mode, ``synchronous=NORMAL`` (a crash loses at most the last transactions, never the file);
  every change is one transaction (``with self._db:``).
* ``PRAGMA user_version`` is the schema version; :data:`MIGRATIONS` brings an older file up to
  :data:`SCHEMA_VERSION` one step at a time, each in its own transaction. A file from a newer
  torrentcore, or one SQLite cannot read, raises :class:`DatabaseError` (one line): the daemon exits
  with code 2 and never resets the file.
* The file is created ``O_CREAT | O_EXCL | O_NOFOLLOW`` mode 0600 before SQLite opens it; a path that is
  a symlink, FIFO, device or folder (the database or its ``-wal``/``-shm`` companions) is refused.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadInputError

DB_NAME = "torrents.db"
SCHEMA_VERSION = 2

#: Schema steps: MIGRATIONS[n] takes a version-n file to version n+1.
MIGRATIONS: dict[int, list[str]] = {
    0: [
        """CREATE TABLE torrents (
               id INTEGER PRIMARY KEY AUTOINCREMENT,
               info_hash TEXT NOT NULL UNIQUE,
               name TEXT NOT NULL,
               metainfo BLOB,
               magnet TEXT,
               download_dir TEXT NOT NULL,
               stopped INTEGER NOT NULL DEFAULT 0,
               queue_position INTEGER NOT NULL DEFAULT 0,
               added_date INTEGER NOT NULL DEFAULT 0,
               done_date INTEGER NOT NULL DEFAULT 0,
               downloaded_ever INTEGER NOT NULL DEFAULT 0,
               uploaded_ever INTEGER NOT NULL DEFAULT 0,
               settings TEXT NOT NULL DEFAULT '{}')""",
        "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ],
    # Version 2: the last time data moved, so that "activityDate" survives a restart.
    1: ["ALTER TABLE torrents ADD COLUMN activity_date INTEGER NOT NULL DEFAULT 0"],
}

COLUMNS = ("info_hash", "name", "metainfo", "magnet", "download_dir", "stopped", "queue_position", "added_date",
           "done_date", "downloaded_ever", "uploaded_ever", "settings", "activity_date")


class DatabaseError(BadInputError):
    """The database cannot be used (corrupt, newer schema, not a regular file): exit code 2."""


@dataclass
class TorrentRow:
    """One torrent as stored (``settings``: its per-torrent RPC settings by Transmission name)."""

    info_hash: str
    name: str
    download_dir: str
    metainfo: bytes | None = None
    magnet: str | None = None
    stopped: bool = False
    queue_position: int = 0
    added_date: int = 0
    done_date: int = 0
    downloaded_ever: int = 0
    uploaded_ever: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    activity_date: int = 0
    id: int = 0

    def values(self) -> tuple:
        return (self.info_hash, self.name, self.metainfo, self.magnet, self.download_dir, int(self.stopped),
                self.queue_position, self.added_date, self.done_date, self.downloaded_ever, self.uploaded_ever,
                json.dumps(self.settings, separators=(",", ":")), self.activity_date)


def _refuse_special(path: str) -> bool:
    """True when ``path`` exists (as a regular file); DatabaseError for anything else there."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode):
        kind = ("a symbolic link" if stat.S_ISLNK(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file")
        raise DatabaseError(f"refusing the database {path}: it is {kind}")
    return True


class Database:
    """The daemon's SQLite file (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        for companion in (path + "-wal", path + "-shm", path + "-journal"):
            _refuse_special(companion)
        if not _refuse_special(path):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
                os.close(fd)
            except OSError as exc:
                raise DatabaseError(f"cannot create the database {path}: {exc.strerror}") from None
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
            bad = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if bad != "ok":
                raise sqlite3.DatabaseError(bad)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise DatabaseError(f"the database {path} cannot be read ({exc}); it was left as it is: restore it "
                                "from a backup or move it away to start with an empty one") from None

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise DatabaseError(f"the database {self.path} has schema version {version}, newer than the "
                                f"{SCHEMA_VERSION} this torrentcore knows: use a newer torrentcore")
        while version < SCHEMA_VERSION:
            with self._transaction():
                for statement in MIGRATIONS[version]:
                    self._db.execute(statement)
                version += 1
                self._db.execute(f"PRAGMA user_version={version}")

    def _transaction(self):
        return _Transaction(self._db)

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed by SQLite)."""
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
            self._db = None

    # --- torrents ----------------------------------------------------------------------------------

    def torrents(self) -> list[TorrentRow]:
        """Every stored torrent, in id order."""
        rows = self._db.execute(f"SELECT id, {', '.join(COLUMNS)} FROM torrents ORDER BY id").fetchall()
        out = []
        for r in rows:
            try:
                settings = json.loads(r[12]) if r[12] else {}
            except ValueError:
                settings = {}
            out.append(TorrentRow(id=r[0], info_hash=r[1], name=r[2], metainfo=r[3], magnet=r[4], download_dir=r[5],
                                  stopped=bool(r[6]), queue_position=r[7], added_date=r[8], done_date=r[9],
                                  downloaded_ever=r[10], uploaded_ever=r[11],
                                  settings=settings if isinstance(settings, dict) else {}, activity_date=r[13]))
        return out

    def insert(self, row: TorrentRow) -> int:
        """Store a new torrent; returns its id (also set on ``row``)."""
        with self._transaction():
            cur = self._db.execute(f"INSERT INTO torrents ({', '.join(COLUMNS)}) VALUES "
                                   f"({', '.join('?' * len(COLUMNS))})", row.values())
            row.id = cur.lastrowid
        return row.id

    def update(self, rows: Iterable[TorrentRow]) -> None:
        """Save these torrents, all in one transaction."""
        assignments = ", ".join(f"{c}=?" for c in COLUMNS)
        with self._transaction():
            self._db.executemany(f"UPDATE torrents SET {assignments} WHERE id=?", [(*r.values(), r.id) for r in rows])

    def delete(self, torrent_id: int) -> None:
        """Forget a torrent."""
        with self._transaction():
            self._db.execute("DELETE FROM torrents WHERE id=?", (torrent_id,))

    # --- session settings ----------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """The stored session settings (those ``session-set`` changed)."""
        out = {}
        for key, value in self._db.execute("SELECT key, value FROM settings").fetchall():
            try:
                out[key] = json.loads(value)
            except ValueError:
                continue
        return out

    def save_settings(self, values: dict[str, Any]) -> None:
        """Store session settings, in one transaction."""
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                                 [(k, json.dumps(v)) for k, v in values.items()])


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an exception) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, *exc) -> None:
        self.db.execute("ROLLBACK" if kind is not None else "COMMIT")


__all__ = ["Database", "DatabaseError", "TorrentRow", "SCHEMA_VERSION", "DB_NAME"]
