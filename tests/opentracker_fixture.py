"""Run Debian's ``opentracker`` on 127.0.0.1 for tests (HTTP and UDP on one free port).

Debian builds opentracker in whitelist mode: it serves only the info-hashes
listed in its whitelist file. This helper writes that file, starts the tracker
chrooted into a fresh folder (``-u nobody`` when running as root), waits until
it answers, and stops it again.

Context manager::

    from opentracker_fixture import OpenTracker

    with OpenTracker(tmp_path, [info_hash]) as tracker:
        tracker.http_url   # "http://127.0.0.1:PORT/announce"
        tracker.udp_url    # "udp://127.0.0.1:PORT/announce"
        tracker.add(other_hash)   # rewrites the whitelist, SIGHUP, waits until served

pytest fixture ``opentracker`` (a factory; every tracker it made is stopped at
teardown). Importing the fixture function makes the fixture visible in a test
module (it is defined under another name so ruff's F811 does not fire)::

    from opentracker_fixture import opentracker_factory  # noqa: F401  (fixture "opentracker")

    def test_x(opentracker):
        tracker = opentracker([info_hash])            # started, whitelisting info_hash
        tracker2 = opentracker([h1, h2], startup_timeout=5)

Both skip the test when the ``opentracker`` binary is not installed.

Facts measured with Debian's 0.0~git20210823 build:

* IPv4 only (``-i ::1`` exits with "V4 Tracker is V4 only!"); starts in about 30 ms.
* It returns the announcing peer in its own peer list. When the swarm is larger
  than ``numwant`` it sends a random subset, which may or may not include the caller.
* ``interval`` is randomised per reply around 1800 s (1620..1975 seen, HTTP and
  UDP alike); ``min interval`` (HTTP only) is half of it. Replies are always
  compact, whatever ``compact`` says.
* A hash that is not whitelisted: over HTTP a ``failure reason`` ("Requested
  download is not authorized for use with this tracker."); over UDP a bare
  8-byte announce header (no error packet). ``event=stopped`` is accepted for
  any hash, whitelisted or not.
* A wrong UDP connection id gets an error packet "Connection ID missmatch.".
* SIGHUP rereads the whitelist within milliseconds (removals too).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import quote_from_bytes

import pytest
import requests

if TYPE_CHECKING:
    from typing import Self

__all__ = ["SKIP_REASON", "OpenTracker", "opentracker_available", "opentracker_binary", "opentracker_factory"]

SKIP_REASON = "Debian's opentracker binary is not installed (apt-get install opentracker)"
_PROBE_PEER_ID = b"-OTPROBE-0000000000-"
_PROBE_PORT = 1
_UDP_PROTOCOL_ID = 0x41727101980
_START_ATTEMPTS = 5


def opentracker_binary() -> str | None:
    """Path of the ``opentracker`` executable, or None."""
    return shutil.which("opentracker")


def opentracker_available() -> bool:
    """Whether the ``opentracker`` executable is installed."""
    return opentracker_binary() is not None


def _free_port(host: str) -> int:
    """A port that is free for both TCP and UDP on ``host`` right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both TCP and UDP")


class OpenTracker:
    """A running opentracker serving ``info_hashes`` on ``host`` (HTTP and UDP, same port).

    ``workdir`` is a folder this object may write into (pytest's ``tmp_path``);
    the tracker's chroot folder and log file are created inside it.
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        info_hashes: Iterable[bytes] = (),
        *,
        host: str = "127.0.0.1",
        startup_timeout: float = 10.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.host = host
        self.startup_timeout = startup_timeout
        self.port = 0
        self._hashes: list[bytes] = []
        for info_hash in info_hashes:
            self._remember(info_hash)
        self._proc: subprocess.Popen[bytes] | None = None
        self._root: Path | None = None
        self._log_path: Path | None = None

    # -- public ---------------------------------------------------------------------

    @property
    def http_url(self) -> str:
        """The HTTP announce URL."""
        return f"http://{self.host}:{self.port}/announce"

    @property
    def udp_url(self) -> str:
        """The UDP announce URL (with a ``/announce`` path, sent as BEP 41 URL data)."""
        return f"udp://{self.host}:{self.port}/announce"

    @property
    def info_hashes(self) -> list[bytes]:
        """The whitelisted info-hashes."""
        return list(self._hashes)

    @property
    def running(self) -> bool:
        """Whether the tracker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_text(self) -> str:
        """What opentracker wrote to stdout/stderr so far."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(errors="replace")

    def start(self) -> Self:
        """Start the tracker and wait until it answers; skip the test if opentracker is absent."""
        binary = opentracker_binary()
        if binary is None:
            pytest.skip(SKIP_REASON)
        if self.running:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._root = Path(tempfile.mkdtemp(prefix="opentracker-", dir=self.workdir))
        os.chmod(self._root, 0o755)  # it drops to "nobody" after chroot and rereads the whitelist
        self._write_whitelist()
        self._log_path = self._root.with_suffix(".log")
        last_error = "(no output)"
        for _ in range(_START_ATTEMPTS):
            self.port = _free_port(self.host)
            cmd = [binary, "-i", self.host, "-p", str(self.port), "-P", str(self.port),
                   "-d", str(self._root), "-w", "whitelist.txt"]
            if os.geteuid() == 0:
                cmd += ["-u", "nobody"]
            with open(self._log_path, "ab") as log_file:
                self._proc = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, cwd=self._root
                )
            if self._wait_ready():
                break
            self._kill()
            lines = self.log_text.strip().splitlines()
            last_error = lines[-1] if lines else last_error
            if "in use" not in last_error:  # only a lost port race is worth another try
                break
        if not self.running:
            raise RuntimeError(f"opentracker did not start on {self.host}:{self.port}: {last_error}")
        if self._hashes and not self._wait_served(self._hashes[0]):
            self.stop()
            raise RuntimeError("opentracker started but does not serve its whitelist")
        return self

    def add(self, info_hash: bytes) -> None:
        """Whitelist ``info_hash`` too: rewrite the file, SIGHUP, wait until it is served.

        opentracker rereads its whitelist on SIGHUP; this waits (up to 5 s) until
        an announce for the new hash is accepted. The probe announce uses a
        dedicated peer id and is followed by ``stopped``, so no peer is left behind.
        """
        if not self._remember(info_hash):
            return
        self._write_whitelist()
        self.reload()
        if not self._wait_served(info_hash):
            raise RuntimeError(f"opentracker did not pick up {info_hash.hex()} after SIGHUP")

    def reload(self) -> None:
        """Send SIGHUP (reload the whitelist file)."""
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError("opentracker is not running")
        self._proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        """Stop the tracker (SIGTERM, then SIGKILL after 5 s)."""
        self._kill()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"OpenTracker({self.host}:{self.port}, {len(self._hashes)} hashes, running={self.running})"

    # -- internals ------------------------------------------------------------------

    def _remember(self, info_hash: bytes) -> bool:
        info_hash = bytes(info_hash)
        if len(info_hash) != 20:
            raise ValueError("an info-hash is 20 bytes")
        if info_hash in self._hashes:
            return False
        self._hashes.append(info_hash)
        return True

    def _write_whitelist(self) -> None:
        if self._root is None:
            return
        path = self._root / "whitelist.txt"
        tmp = self._root / "whitelist.txt.tmp"
        tmp.write_text("".join(f"{h.hex()}\n" for h in self._hashes))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def _wait_ready(self) -> bool:
        """Wait until the UDP port answers a connect request (TCP is bound first)."""
        deadline = time.monotonic() + self.startup_timeout
        packet = struct.pack(">QII", _UDP_PROTOCOL_ID, 0, 0x5EED)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.connect((self.host, self.port))  # so "port unreachable" is reported at once
            udp.settimeout(0.1)
            while time.monotonic() < deadline:
                if self._proc is None or self._proc.poll() is not None:
                    return False
                try:
                    udp.send(packet)
                    data = udp.recv(64)
                except OSError:
                    time.sleep(0.01)
                    continue
                if len(data) >= 16 and data[:8] == struct.pack(">II", 0, 0x5EED):
                    try:
                        with socket.create_connection((self.host, self.port), timeout=1):
                            return True
                    except OSError:
                        time.sleep(0.01)
        return False

    def _wait_served(self, info_hash: bytes, timeout: float = 5.0) -> bool:
        """Whether an announce for ``info_hash`` is accepted within ``timeout`` (probe peer removed)."""
        deadline = time.monotonic() + timeout
        query = (f"info_hash={quote_from_bytes(info_hash, safe='')}"
                 f"&peer_id={quote_from_bytes(_PROBE_PEER_ID, safe='')}&port={_PROBE_PORT}"
                 "&uploaded=0&downloaded=0&left=1&compact=1&numwant=0")
        while time.monotonic() < deadline:
            try:
                body = requests.get(f"{self.http_url}?{query}&event=started", timeout=2).content
            except requests.RequestException:
                body = b""
            if b"interval" in body:
                try:
                    requests.get(f"{self.http_url}?{query}&event=stopped", timeout=2)
                except requests.RequestException:
                    pass
                return True
            time.sleep(0.05)
        return False


@pytest.fixture(name="opentracker")
def opentracker_factory(tmp_path: Path) -> Iterator[Callable[..., OpenTracker]]:
    """Factory fixture: ``opentracker(info_hashes, **kwargs)`` returns a started :class:`OpenTracker`.

    Skips the test if the ``opentracker`` binary is not installed; stops every
    tracker it started at teardown.
    """
    if not opentracker_available():
        pytest.skip(SKIP_REASON)
    started: list[OpenTracker] = []

    def make(info_hashes: Iterable[bytes] = (), **kwargs: object) -> OpenTracker:
        tracker = OpenTracker(tmp_path / f"ot{len(started)}", info_hashes, **kwargs)  # type: ignore[arg-type]
        started.append(tracker)
        return tracker.start()

    yield make
    for tracker in started:
        tracker.stop()
