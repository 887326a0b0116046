"""Run the ``torrentcore`` command as a subprocess in tests, exactly as a user would.

* :func:`run_cli` runs a command to completion (``create``, bad input, a ``run`` that needs no network).
* :class:`TorrentcoreProcess` is any command running in the background. Its stdout (console output:
  progress lines, warnings, the final summary) and stderr (one JSON log object per line) go to files, never
  to pipes that could fill up. Every wait is bounded.
* The ``torrentcore`` fixture (a :class:`TorrentcoreLauncher`) starts ``run`` and ``seed`` on 127.0.0.1
  (or any command) and kills every process it started at the end of the test, whatever happens.
* ``run``/``seed`` get ``--no-dht`` unless a test passes ``dht=True`` (then it must give ``--dht-bootstrap
  127.0.0.1:PORT``). The state folder (``TORRENTCORE_STATE_DIR``: resume records, DHT state) is never the
  user's: the processes of one test share one (``torrentcore/state``, like one user's machine, so a second
  ``run`` finds the first one's resume record), except that a process with ``dht=True`` gets its own
  (``NAME.state``), so two DHT nodes never contend for one ``dht.json``. :func:`resume_record` says where
  a run's resume record is.

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
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
import requests
from realpeers import LOCALHOST, free_port, wait_until

from torrentcore import bencode

#: ``python -m torrentcore``: the same code as the installed command, whatever the PATH.
COMMAND = [sys.executable, "-m", "torrentcore"]

#: Multipliers of the units the console plugin prints (``human_bytes``).
_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
_AMOUNT = r"[0-9.]+ (?:B|KiB|MiB|GiB|TiB)"
_SUMMARY = re.compile(
    rf"(?m)^(?P<name>[^\n]*?): (?P<verdict>[^.:\n]+)\. (?P<done>\d+)/(?P<total>\d+) pieces, "
    rf"downloaded (?P<downloaded>{_AMOUNT}), uploaded (?P<uploaded>{_AMOUNT}),"
)


#: Top-level options that take a value (to find the sub-command in an argument list).
_VALUE_OPTIONS = {"--log-level", "--log-format", "--plugin", "--disable"}


def _subcommand(args: Sequence[str]) -> str | None:
    skip = False
    for arg in map(os.fspath, args):
        if skip:
            skip = False
        elif arg in _VALUE_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def dht_args(args: Sequence[str], dht: bool = False) -> list[str]:
    """``args`` with ``--no-dht`` added to ``run``/``seed`` unless ``dht``: tests never reach the public DHT."""
    args = list(args)
    if not dht and _subcommand(args) in ("run", "seed") and "--no-dht" not in args:
        args.append("--no-dht")
    return args


def cli_env(state_dir: str | os.PathLike, dht: bool = False) -> dict[str, str]:
    """The environment of a launched ``torrentcore``: its own DHT state folder (never the user's); the
    ``TORRENTCORE_NO_DHT`` safety net of conftest.py removed only when the test asks for DHT."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TORRENTCORE_STATE_DIR": os.fspath(state_dir)}
    if dht:
        env.pop("TORRENTCORE_NO_DHT", None)
    return env


def run_cli(args: Sequence[str], timeout: float = 60.0, cwd: str | None = None) -> subprocess.CompletedProcess:
    """Run ``torrentcore ARGS`` to completion (``--no-dht`` for run/seed); return the completed process (text)."""
    with tempfile.TemporaryDirectory(prefix="torrentcore-state-") as state:
        return subprocess.run(
            [*COMMAND, *dht_args(args)], capture_output=True, text=True, timeout=timeout, cwd=cwd,
            stdin=subprocess.DEVNULL, env=cli_env(state),
        )


def parse_summary(stdout: str) -> dict[str, Any] | None:
    """The last final summary in console output (``NAME: VERDICT. D/N pieces, downloaded X, uploaded Y, ...``).

    ``name`` is the torrent it names. ``downloaded`` is in bytes as printed; the console rounds to one
    decimal (exact bytes below 1 KiB), so the true count lies between ``downloaded_min`` and
    ``downloaded_max`` (``uploaded_min``: the same lower bound for uploads). The ``*_text`` values are as
    printed.
    """
    matches = list(_SUMMARY.finditer(stdout))
    return _summary(matches[-1]) if matches else None


def parse_summaries(stdout: str) -> dict[str, dict[str, Any]]:
    """Every final summary in console output (one per torrent of a session), by the name it starts with
    (the last one of a name wins); each as :func:`parse_summary` returns it."""
    return {m["name"]: _summary(m) for m in _SUMMARY.finditer(stdout)}


def _summary(m: re.Match) -> dict[str, Any]:
    number, unit = m["downloaded"].split()
    scale = _UNITS[unit]
    rounding = 0.05 if scale > 1 else 0
    up_number, up_unit = m["uploaded"].split()
    up_scale = _UNITS[up_unit]
    return {
        "name": m["name"],
        "verdict": m["verdict"],
        "pieces_done": int(m["done"]),
        "num_pieces": int(m["total"]),
        "downloaded": int(float(number) * scale),
        "downloaded_min": int((float(number) - rounding) * scale),
        "downloaded_max": int((float(number) + rounding) * scale),
        "downloaded_text": m["downloaded"],
        "uploaded_text": m["uploaded"],
        "uploaded_min": int((float(up_number) - (0.05 if up_scale > 1 else 0)) * up_scale),
    }


class TorrentcoreProcess:
    """``torrentcore ARGS --log-level LEVEL --log-format json`` running in ``workdir``, any command.

    Output goes to ``workdir/NAME.stdout`` and ``workdir/NAME.stderr``; the state (resume records, DHT) to
    ``state_dir``, by default ``workdir/NAME.state/``. ``run``/``seed`` get ``--no-dht`` unless ``dht`` (see
    :func:`dht_args`).
    """

    def __init__(
        self, args: Sequence[str], workdir: str | os.PathLike, name: str = "torrentcore", log_level: str = "info",
        dht: bool = False, state_dir: str | os.PathLike | None = None,
    ) -> None:
        self.name = name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.state_dir = Path(state_dir) if state_dir is not None else self.workdir / f"{name}.state"
        self.args = [*COMMAND, *map(os.fspath, dht_args(args, dht)), "--log-level", log_level, "--log-format", "json"]
        self.stdout_path = self.workdir / f"{name}.stdout"
        self.stderr_path = self.workdir / f"{name}.stderr"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                self.args, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=self.workdir,
                env=cli_env(self.state_dir, dht),
            )

    def __repr__(self) -> str:
        return f"<TorrentcoreProcess {self.name} pid={self.process.pid} rc={self.process.poll()}>"

    # -- process control ----------------------------------------------------------------------------

    @property
    def returncode(self) -> int | None:
        """The exit code, or ``None`` while running."""
        return self.process.poll()

    def wait(self, timeout: float) -> int | None:
        """Wait at most ``timeout`` s for the exit code; past that, SIGKILL and reap it and return ``None``."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)  # a SIGKILLed process always dies
            return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Send ``sig`` (SIGTERM: a clean stop, SIGINT: Ctrl-C, SIGKILL: a crash) if it still runs, then
        :meth:`wait` up to ``timeout`` s; return the exit code (``None``: it had to be killed)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL and reap (bounded); idempotent."""
        self.stop(signal.SIGKILL)

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

    def listening_port(self) -> int | None:
        """The port the engine logged it listens on, if it did."""
        port = self._listening().get("port")
        return None if port is None else int(port)

    def peer_id(self) -> bytes | None:
        """The engine's 20-byte peer id (logged with ``listening``), if it was logged."""
        peer_id = self._listening().get("peer_id")
        return peer_id.encode("latin-1") if peer_id else None

    def _listening(self) -> dict[str, Any]:
        listening = self.events("listening")
        return listening[0] if listening else {}

    def wait_listening(self, timeout: float = 15.0) -> int:
        """Wait (bounded) until the engine listens for peers; return the port."""
        port = self.listening_port() if self.wait_event("listening", timeout) else None
        assert port is not None, f"{self.name} is not listening:\n{self.describe()}"
        return port

    def summary(self) -> dict[str, Any] | None:
        """The final console summary (see :func:`parse_summary`), or ``None`` before it is printed."""
        return parse_summary(self.stdout)

    def summaries(self) -> dict[str, dict[str, Any]]:
        """Every torrent's final console summary so far, by name (see :func:`parse_summaries`)."""
        return parse_summaries(self.stdout)

    def describe(self, limit: int = 6000) -> str:
        """Diagnostics for failure messages: command line, exit code, output tails."""
        return (f"{self!r}\n  args: {' '.join(self.args)}\n  stdout tail:\n{self.stdout[-limit:]}"
                f"\n  stderr tail:\n{self.stderr[-limit:]}")


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return ""


class TorrentcoreLauncher:
    """The ``torrentcore`` fixture: starts :class:`TorrentcoreProcess` instances, kills them all at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        #: The state folder shared by this test's processes that do not use the DHT.
        self.state_dir = workdir / "state"
        self.started: list[TorrentcoreProcess] = []

    def start(self, args: Sequence[str], name: str = "torrentcore", log_level: str = "info",
              dht: bool = False, state_dir: str | os.PathLike | None = None) -> TorrentcoreProcess:
        """``torrentcore ARGS`` (any command); ``name`` gets a serial number (the names of its output files).

        ``dht``: let ``run``/``seed`` use the DHT (the test must give ``--dht-bootstrap 127.0.0.1:PORT``).
        ``state_dir``: its ``TORRENTCORE_STATE_DIR`` instead of the default (see the module docstring).
        """
        state = state_dir if state_dir is not None else None if dht else self.state_dir
        process = TorrentcoreProcess(args, self.workdir, f"{name}-{len(self.started)}", log_level, dht, state)
        self.started.append(process)
        return process

    def run(self, torrent: str | os.PathLike | Sequence[str | os.PathLike], output: str | os.PathLike, *extra: str,
            no_seed: bool = True, peers: Iterable[tuple[str, int]] = (), **kwargs: Any) -> TorrentcoreProcess:
        """``torrentcore run TORRENT... -o OUTPUT EXTRA`` on 127.0.0.1 (see :func:`_network`); ``torrent`` may
        be a list (several torrents in one session); ``kwargs`` as :meth:`start`."""
        torrents = [torrent] if isinstance(torrent, (str, os.PathLike)) else list(torrent)
        args = ["run", *torrents, "-o", output, *_network(peers), *extra]
        if no_seed:
            args.append("--no-seed")
        return self.start(args, **kwargs)

    def seed(self, torrent: str | os.PathLike, data: str | os.PathLike, *extra: str,
             peers: Iterable[tuple[str, int]] = (), **kwargs: Any) -> TorrentcoreProcess:
        """``torrentcore seed TORRENT -d DATA EXTRA`` on 127.0.0.1 (see :func:`_network`); ``kwargs`` as
        :meth:`start`."""
        return self.start(["seed", torrent, "-d", data, *_network(peers), *extra], **kwargs)

    def kill_all(self) -> None:
        """Kill every process started (printing its diagnostics, shown when the test fails)."""
        for process in self.started:
            process.kill()
            print(process.describe(3000))


def resume_record(state_dir: str | os.PathLike, save_path: str | os.PathLike, torrent: Any) -> Path:
    """Where a run with ``TORRENTCORE_STATE_DIR=state_dir`` keeps the resume record of ``torrent`` (a
    :class:`~torrentcore.metainfo.Metainfo`) downloaded to ``save_path`` (``-o``/``-d``)."""
    from torrentcore.statefile import keyed_name
    from torrentcore_plugins._resume_record import RESUME_FOLDER

    name = keyed_name(torrent.info_hash_hex, os.path.abspath(save_path), suffix=".resume")
    return Path(state_dir) / RESUME_FOLDER / name


def _network(peers: Iterable[tuple[str, int]]) -> list[str]:
    """A free port on 127.0.0.1 only, a progress line every second, and ``--peer HOST:PORT`` for each peer."""
    args = ["--port", str(free_port()), "--listen-host", LOCALHOST, "--progress-interval", "1"]
    for host, port in peers:
        args += ["--peer", f"{host}:{port}"]
    return args


@pytest.fixture(name="torrentcore")
def torrentcore_factory(tmp_path: Path) -> Iterator[TorrentcoreLauncher]:
    """A :class:`TorrentcoreLauncher` writing to ``tmp_path/torrentcore``; its processes are killed at teardown."""
    launcher = TorrentcoreLauncher(tmp_path / "torrentcore")
    try:
        yield launcher
    finally:
        launcher.kill_all()


# -- opentracker ------------------------------------------------------------------------------------


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
