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


def _shard_of_env() -> tuple[int, int] | None:
    """``TORRENTCORE_TEST_SHARD=i/n`` (set by scripts/test.sh's parallel run): run only shard ``i`` of ``n``."""
    value = os.environ.get("TORRENTCORE_TEST_SHARD", "")
    if not value:
        return None
    index, _, count = value.partition("/")
    shard, shards = int(index), int(count)
    if not 0 <= shard < shards:
        raise pytest.UsageError(f"TORRENTCORE_TEST_SHARD={value!r}: want i/n with 0 <= i < n")
    return shard, shards


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep only this process's shard of the suite (see scripts/test.sh).

    pytest-xdist cannot run this suite: its workers wait on a ``threading.Event`` that gevent's monkey-patching
    (above) turns into a greenlet event. So scripts/test.sh starts several whole pytest processes instead, each
    with its own shard. Tests are dealt out one by one in collection order, so the slow real-client tests of one
    module spread over the shards; a module whose tests share a module-scoped fixture sets
    ``SHARD_WHOLE_MODULE = True`` and stays in one shard.
    """
    shard = _shard_of_env()
    if shard is None:
        return
    index, count = shard
    groups: dict[str, list[pytest.Item]] = {}
    for item in items:
        module = getattr(item, "module", None)
        whole = module is not None and getattr(module, "SHARD_WHOLE_MODULE", False)
        groups.setdefault(item.module.__name__ if whole else item.nodeid, []).append(item)
    loads = [0] * count
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for group in groups.values():
        target = loads.index(min(loads))
        loads[target] += len(group)
        (keep if target == index else dropped).extend(group)
    items[:] = keep
    config.hook.pytest_deselected(items=dropped)
