"""Run the ``torrentcore`` command as a subprocess in tests (seeders, leechers, ``create``).

Output goes to files (never a pipe that could fill up); logs are JSON lines on stderr
(``--log-level info --log-format json``), which is how :meth:`TorrentcoreProcess.wait_listening`
learns the port. Every wait is bounded and :meth:`TorrentcoreProcess.stop` always reaps the process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote_from_bytes

import requests
from realpeers import wait_until

from torrentcore import bencode

#: ``python -m torrentcore``: the same code as the installed command, whatever the PATH.
COMMAND = [sys.executable, "-m", "torrentcore"]


def run_cli(args: Sequence[str], timeout: float = 60.0, cwd: str | None = None) -> subprocess.CompletedProcess:
    """Run ``torrentcore ARGS`` to completion; return the completed process (text output)."""
    return subprocess.run(
        [*COMMAND, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL
    )


class TorrentcoreProcess:
    """``torrentcore COMMAND ...`` running in the background, logging JSON to ``log_dir/name.err``."""

    def __init__(self, args: Sequence[str], log_dir: str | os.PathLike, name: str) -> None:
        self.name = name
        log_dir = os.fspath(log_dir)
        os.makedirs(log_dir, exist_ok=True)
        self.out_path = os.path.join(log_dir, f"{name}.out")
        self.err_path = os.path.join(log_dir, f"{name}.err")
        self.args = [*COMMAND, *args, "--log-level", "info", "--log-format", "json"]
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.process = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=out, stderr=err)

    def __enter__(self) -> TorrentcoreProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<TorrentcoreProcess {self.name} pid={self.process.pid} rc={self.process.poll()}>"

    @property
    def returncode(self) -> int | None:
        """The exit code, or ``None`` while running."""
        return self.process.poll()

    def stdout(self) -> str:
        """Everything written to stdout so far."""
        return _read(self.out_path)

    def stderr(self) -> str:
        """Everything written to stderr so far (JSON log lines, error lines)."""
        return _read(self.err_path)

    def events(self) -> list[dict[str, Any]]:
        """The JSON log records written so far."""
        out = []
        for line in self.stderr().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def listening_port(self) -> int | None:
        """The port the engine logged it listens on, if it did."""
        for ev in self.events():
            if ev.get("event") == "listening":
                return int(ev["port"])
        return None

    def peer_id(self) -> bytes | None:
        """The engine's 20-byte peer id (logged with ``listening``), if it was logged."""
        for ev in self.events():
            if ev.get("event") == "listening" and ev.get("peer_id"):
                return ev["peer_id"].encode("latin-1")
        return None

    def wait_listening(self, timeout: float = 15.0) -> int:
        """Wait (bounded) until the engine listens for peers; return the port."""
        ok = wait_until(lambda: self.listening_port() is not None or self.returncode is not None, timeout, 0.05)
        port = self.listening_port()
        assert ok and port is not None, f"{self.name} is not listening:\n{self.describe()}"
        return port

    def has_event(self, name: str) -> bool:
        """Whether a log record with ``event == name`` was written."""
        return any(ev.get("event") == name for ev in self.events())

    def wait(self, timeout: float) -> int | None:
        """Wait at most ``timeout`` seconds for the process to exit; return its code (``None`` if running)."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Send ``sig`` (default SIGTERM, a clean stop), SIGKILL after ``timeout``; reap; return the code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            if self.wait(timeout) is None:
                self.process.kill()
                self.wait(10)
        return self.process.poll()

    def describe(self) -> str:
        """Diagnostics for failure messages: command line, exit code and output tails."""
        return (
            f"{self!r}\n  args: {' '.join(self.args)}\n  stdout:\n{self.stdout()[-3000:]}\n"
            f"  stderr:\n{self.stderr()[-6000:]}"
        )


def _read(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"<no output: {exc}>"


def tracker_counts(tracker, info_hash: bytes) -> tuple[int, int]:
    """``(seeders, leechers)`` opentracker knows for ``info_hash`` (an HTTP scrape; (0, 0) on failure)."""
    url = tracker.http_url.rsplit("/announce", 1)[0] + "/scrape?info_hash=" + quote_from_bytes(info_hash, safe="")
    try:
        body = requests.get(url, timeout=2).content
        entry = bencode.decode(body)[b"files"][info_hash]
        return int(entry.get(b"complete", 0)), int(entry.get(b"incomplete", 0))
    except (requests.RequestException, bencode.BencodeError, KeyError, TypeError, AttributeError):
        return 0, 0


def wait_tracker_count(tracker, info_hash: bytes, seeders: int = 0, leechers: int = 0, timeout: float = 10.0) -> bool:
    """Wait (bounded) until opentracker counts at least ``seeders`` seeders and ``leechers`` leechers."""

    def _enough() -> bool:
        s, n = tracker_counts(tracker, info_hash)
        return s >= seeders and n >= leechers

    return wait_until(_enough, timeout, interval=0.1)
