"""Run ``torrentcore daemon`` as a subprocess in tests and talk to it (raw RPC, transmission-remote).

:class:`DaemonProcess` starts ``python -m torrentcore daemon`` on 127.0.0.1 with a free RPC port, any
peer port, no DHT, and its own config and state folders; output goes to files. :meth:`rpc` speaks the
RPC with the session-id handshake; :meth:`remote` runs Debian's ``transmission-remote`` against it.
Every wait is bounded; :meth:`close` kills the process whatever happened.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from realpeers import LOCALHOST, free_port, wait_port_open, wait_until

COMMAND = [sys.executable, "-m", "torrentcore", "daemon"]


def require_transmission_remote() -> str:
    path = shutil.which("transmission-remote")
    if path is None:
        pytest.skip("transmission-remote is not installed (apt-get install transmission-cli)")
    return path


class DaemonProcess:
    """One daemon process (see the module docstring)."""

    def __init__(self, workdir: str | os.PathLike, *extra: str, name: str = "daemon", config_dir: Path | None = None,
                 env: dict[str, str] | None = None, wait: bool = True) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_dir = config_dir or self.workdir / "config"
        self.state_dir = self.workdir / "state"
        self.download_dir = self.workdir / "downloads"
        self.port = free_port()
        self.name = name
        self.args = [*COMMAND, "--config-dir", str(self.config_dir), "--download-dir", str(self.download_dir),
                     "--rpc-port", str(self.port), "--peer-port", "0", "--no-dht", "--log-level", "info",
                     "--log-format", "json", *extra]
        self.stdout_path = self.workdir / f"{name}.stdout"
        self.stderr_path = self.workdir / f"{name}.stderr"
        self.env = {**os.environ, "TORRENTCORE_STATE_DIR": str(self.state_dir), **(env or {})}
        if "TORRENTCORE_RPC_PASSWORD" not in (env or {}):
            self.env.pop("TORRENTCORE_RPC_PASSWORD", None)
        self._session_id = ""
        self.auth: tuple[str, str] | None = None
        self.start(wait)

    def start(self, wait: bool = True) -> None:
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.process = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                            cwd=self.workdir, env=self.env)
        if wait and not wait_until(lambda: self.returncode is not None or wait_port_open(self.port, 0.2), 20):
            raise AssertionError(f"the daemon did not open its RPC port: {self.stderr()[-2000:]}")
        if wait and self.returncode is not None:
            raise AssertionError(f"the daemon exited with {self.returncode}: {self.stderr()[-2000:]}")

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}/transmission/rpc"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def peer_port(self) -> int:
        for line in self.stdout().splitlines():
            if "peer port" in line:
                return int(line.rsplit("peer port", 1)[1].strip(" )"))
        raise AssertionError("the daemon did not print its peer port")

    # -- talking -------------------------------------------------------------------------------------

    def post(self, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
        """POST ``body`` (JSON) with the session-id handshake done."""
        for _ in range(3):
            h = {"X-Transmission-Session-Id": self._session_id, **(headers or {})}
            r = requests.post(self.url, data=json.dumps(body), headers=h, timeout=30, auth=self.auth)
            if r.status_code != 409:
                return r
            self._session_id = r.headers["X-Transmission-Session-Id"]
        raise AssertionError("the session-id handshake did not settle")

    def rpc(self, method: str, **arguments: Any) -> dict:
        """The ``arguments`` of a successful answer (AssertionError with the result otherwise)."""
        r = self.post({"method": method, "arguments": arguments, "tag": 7})
        assert r.status_code == 200, (r.status_code, r.text[:500])
        answer = r.json()
        assert answer.get("tag") == 7
        assert answer["result"] == "success", answer
        return answer["arguments"]

    def torrent(self, torrent_id: int, *fields: str) -> dict:
        """``torrent-get`` of one torrent."""
        found = self.rpc("torrent-get", ids=[torrent_id], fields=["id", *fields])["torrents"]
        assert len(found) == 1, found
        return found[0]

    def wait_torrent(self, torrent_id: int, predicate, timeout: float, *fields: str) -> dict:
        """Poll ``torrent-get`` until ``predicate(torrent)``; the last answer, AssertionError on timeout."""
        last: dict = {}

        def check() -> bool:
            nonlocal last
            last = self.torrent(torrent_id, *fields)
            return bool(predicate(last))

        if not wait_until(check, timeout, interval=0.25):
            raise AssertionError(f"torrent {torrent_id} never matched; last {last}; log {self.stderr()[-1500:]}")
        return last

    def remote(self, *args: str, check: bool = True) -> str:
        """``transmission-remote 127.0.0.1:PORT ARGS``: its standard output."""
        cmd = [require_transmission_remote(), f"{LOCALHOST}:{self.port}", *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if check:
            assert res.returncode == 0 and "Error" not in res.stderr, (cmd, res.returncode, res.stdout, res.stderr)
        return res.stdout + res.stderr

    # -- ending --------------------------------------------------------------------------------------

    def terminate(self, timeout: float = 60) -> int | None:
        """SIGTERM and wait; the exit code (None: it had to be killed)."""
        if self.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        """SIGKILL (kill -9) and reap."""
        if self.returncode is None:
            self.process.kill()
        self.process.wait(10)

    close = kill
