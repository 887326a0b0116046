"""The DHT node's state file: its node id and good contacts between runs, and the lock that keeps two
processes from running with the same id.

``STATE.lock`` beside the file is held (``flock``) for the node's life; a node that cannot take it uses a
fresh id and saves nothing. The file is JSON (``{"version": 1, "node_id": hex, "nodes": [[host, port]]}``),
read with a size cap and strict checks (an unreadable one is ignored with a warning) and written
atomically, never through a link or FIFO planted at its path.
"""

from __future__ import annotations

import errno
import json
import os
import stat

import structlog

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows: no lock, one process per state file is up to the user
    fcntl = None

from ..statefile import UnsafeStateFile, decode_json, read_state, state_dir, write_atomic
from . import krpc

log = structlog.get_logger(__name__)

#: Nodes written to the state file.
MAX_SAVED_NODES = 200
STATE_FILE = "dht.json"
#: Largest state file read (MAX_SAVED_NODES nodes take about 6 KiB).
MAX_STATE_BYTES = 1 << 20

Address = tuple[str, int]


def default_state_path() -> str:
    """Where the node id and routing table are kept between runs.

    ``$TORRENTCORE_STATE_DIR/dht.json`` if set, else ``$XDG_STATE_HOME/torrentcore/dht.json``,
    else ``~/.local/state/torrentcore/dht.json``.
    """
    return os.path.join(state_dir(), STATE_FILE)


class StateFile:
    """One node's state file at ``path`` (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock_fd: int | None = None

    def lock(self) -> bool:
        """Hold ``STATE.lock`` so that two processes never run with the same node id (``False``: held elsewhere)."""
        if fcntl is None:
            return True
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            # Never through a link planted at the lock's path (O_NOFOLLOW), and never blocking on a FIFO.
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
            fd = os.open(self.path + ".lock", flags | getattr(os, "O_CLOEXEC", 0), 0o600)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise OSError(errno.EINVAL, "not a regular file")
        except OSError as exc:
            log.warning("cannot open the dht state lock", path=self.path, error=str(exc))
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def unlock(self) -> None:
        """Release the lock (idempotent)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the lock
            self._lock_fd = None

    def load(self) -> tuple[bytes | None, list[Address]]:
        """The saved node id and contacts; ``(None, [])`` when there is no file or it is unreadable."""
        path = self.path
        try:
            raw = read_state(path, MAX_STATE_BYTES)
            if raw is None:
                return None, []
            data = decode_json(raw)
            node_id = bytes.fromhex(data["node_id"])
            if len(node_id) != 20:
                raise ValueError("node id is not 20 bytes")
            nodes = []
            saved = data.get("nodes", [])
            if not isinstance(saved, list):
                raise ValueError("'nodes' is not a list")
            for entry in saved[:MAX_SAVED_NODES]:
                if not isinstance(entry, list) or len(entry) != 2:
                    raise ValueError("a node is not [host, port]")
                host, port = entry
                if (not isinstance(host, str) or len(host) > 64 or type(port) is not int
                        or not krpc.usable_address(host, port)):
                    raise ValueError(f"bad node {str(host)[:64]!r}:{str(port)[:8]}")
                nodes.append((host, port))
            return node_id, nodes
        except (UnsafeStateFile, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring unreadable dht state file", path=path, error=str(exc)[:200])
            return None, []

    def save(self, node_id: bytes, nodes: list[Address]) -> None:
        """Write ``node_id`` and ``nodes`` atomically; OSError when the disk refuses."""
        data = json.dumps({"version": 1, "node_id": node_id.hex(), "nodes": [[h, p] for h, p in nodes]}).encode()
        write_atomic(self.path, data)  # mkstemp + os.replace: never through a link or FIFO planted at path


__all__ = ["StateFile", "default_state_path", "MAX_SAVED_NODES", "STATE_FILE", "MAX_STATE_BYTES"]
