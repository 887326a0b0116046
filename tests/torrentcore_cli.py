"""Run ``torrentcore run`` as a subprocess, exactly as a user would, for the integration tests.

:class:`TorrentcoreRun` starts ``python -m torrentcore run FILE -o DIR --no-seed --port P ...`` on
127.0.0.1 only, with its stdout (console output: progress lines, warnings, the final summary) and stderr
(one JSON log object per line) going to files, never to pipes that could fill up. Every wait is bounded;
the process is killed when it outlives its wait and, through the ``torrentcore`` fixture, at the end of
the test whatever happens.

Use the fixture from a test module with::

    from torrentcore_cli import torrentcore_factory  # noqa: F401  (fixture "torrentcore")
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from realpeers import LOCALHOST, free_port, wait_until

#: Multipliers of the units the console plugin prints (``human_bytes``).
_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
_SUMMARY = re.compile(
    r": (?P<verdict>done|interrupted|stopped with errors)\. (?P<done>\d+)/(?P<total>\d+) pieces, "
    r"downloaded (?P<num>[0-9.]+) (?P<unit>B|KiB|MiB|GiB|TiB),"
)


class TorrentcoreRun:
    """One ``torrentcore run`` process (see the module docstring)."""

    def __init__(
        self,
        torrent: str | os.PathLike,
        output: str | os.PathLike,
        workdir: str | os.PathLike,
        *,
        peers: Iterable[tuple[str, int]] = (),
        extra: Iterable[str] = (),
        port: int | None = None,
        name: str = "torrentcore",
        log_level: str = "info",
        log_format: str = "json",
        no_seed: bool = True,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.name = name
        self.args = [sys.executable, "-m", "torrentcore", "run", os.fspath(torrent), "-o", os.fspath(output),
                     "--port", str(self.port), "--listen-host", LOCALHOST, "--log-format", log_format,
                     "--log-level", log_level, "--progress-interval", "1"]
        if no_seed:
            self.args.append("--no-seed")
        for host, peer_port in peers:
            self.args += ["--peer", f"{host}:{peer_port}"]
        self.args += list(extra)
        self.stdout_path = self.workdir / f"{name}.stdout"
        self.stderr_path = self.workdir / f"{name}.stderr"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                self.args, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=self.workdir,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def __repr__(self) -> str:
        return f"<TorrentcoreRun {self.name} pid={self.process.pid} rc={self.process.poll()}>"

    # -- process control ----------------------------------------------------------------------------

    @property
    def returncode(self) -> int | None:
        """The exit code, or ``None`` while running."""
        return self.process.poll()

    def wait(self, timeout: float) -> int | None:
        """Wait at most ``timeout`` s for the exit code; kill the process and return ``None`` if it is late."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` (SIGINT for a Ctrl-C, SIGKILL for a crash) if the process still runs."""
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL and reap (bounded); idempotent."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a SIGKILLed process always dies
            pass

    # -- output -------------------------------------------------------------------------------------

    @property
    def stdout(self) -> str:
        """Console output so far (progress lines, warnings, the summary)."""
        return _read(self.stdout_path)

    @property
    def stderr(self) -> str:
        """Everything written to stderr so far (JSON logs, error lines)."""
        return _read(self.stderr_path)

    def logs(self) -> list[dict[str, Any]]:
        """The JSON log objects on stderr (other lines are skipped)."""
        out = []
        for line in self.stderr.splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log objects whose ``event`` is ``name``."""
        return [entry for entry in self.logs() if entry.get("event") == name]

    def wait_event(self, name: str, timeout: float) -> bool:
        """Wait (bounded) until a JSON log with ``event == name`` appears, or the process exits."""
        return wait_until(lambda: bool(self.events(name)) or self.returncode is not None, timeout,
                          interval=0.05) and bool(self.events(name))

    def summary(self) -> dict[str, Any] | None:
        """The final console summary: verdict, pieces done and total, bytes downloaded (rounded)."""
        matches = list(_SUMMARY.finditer(self.stdout))
        if not matches:
            return None
        m = matches[-1]
        unit = _UNITS[m["unit"]]
        return {
            "verdict": m["verdict"],
            "pieces_done": int(m["done"]),
            "num_pieces": int(m["total"]),
            "downloaded": int(float(m["num"]) * unit),
            # The console rounds to one decimal (exact bytes below 1 KiB): the true count lies between these.
            "downloaded_min": int((float(m["num"]) - (0.05 if unit > 1 else 0)) * unit),
            "downloaded_max": int((float(m["num"]) + (0.05 if unit > 1 else 0)) * unit),
            "downloaded_text": f"{m['num']} {m['unit']}",
        }

    def describe(self, limit: int = 6000) -> str:
        """Diagnostics for failure messages: command line, exit code, output tails."""
        return (f"{self!r}\n  args: {' '.join(self.args)}\n  stdout tail:\n{self.stdout[-limit:]}"
                f"\n  stderr tail:\n{self.stderr[-limit:]}")


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return ""


@pytest.fixture(name="torrentcore")
def torrentcore_factory(tmp_path: Path) -> Iterator[Callable[..., TorrentcoreRun]]:
    """Factory: ``torrentcore(torrent, output, peers=..., extra=...)`` starts a :class:`TorrentcoreRun`.

    Every process it started is killed at teardown, and its diagnostics printed (shown on failure).
    """
    started: list[TorrentcoreRun] = []

    def start(torrent: str | os.PathLike, output: str | os.PathLike, **kwargs: Any) -> TorrentcoreRun:
        kwargs.setdefault("name", f"torrentcore-{len(started)}")
        run = TorrentcoreRun(torrent, output, tmp_path / "torrentcore", **kwargs)
        started.append(run)
        return run

    try:
        yield start
    finally:
        for run in started:
            run.kill()
            print(run.describe(3000))
