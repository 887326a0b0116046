"""Test set-up shared by every test module.

gevent's monkey-patching must happen before anything imports ``socket``,
``ssl`` or ``threading`` the blocking way, exactly as the CLI entry point does.
"""

from gevent import monkey

monkey.patch_all()

import contextlib  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

#: The shared conformance corpus lives beside the project root.
SHARED = os.environ.get(
    "TORRENTCORE_SHARED", os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "shared")
)

sys.path.insert(0, os.path.dirname(__file__))

# Tests never reach the public DHT or the user's state folder: every torrentcore a test starts (by any means)
# inherits these. tests/torrentcore_cli.py re-enables the DHT for a test that asks (loopback bootstrap only).
os.environ["TORRENTCORE_NO_DHT"] = "1"
os.environ["TORRENTCORE_STATE_DIR"] = os.path.join(tempfile.gettempdir(), f"torrentcore-test-state-{os.getpid()}")


@pytest.fixture
def shared_dir() -> str:
    """Path of the ``shared/`` folder (conformance corpus, real-peer facts)."""
    return os.path.abspath(SHARED)


@contextlib.contextmanager
def mounted_tmpfs(mnt: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``mnt`` with mount ``options`` (needs root, as CI runs), unmounted afterwards.

    The test is skipped where mounting is not allowed.
    """
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({options}) here: {res.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
