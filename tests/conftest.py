"""Test set-up shared by every test module.

gevent's monkey-patching must happen before anything imports ``socket``,
``ssl`` or ``threading`` the blocking way, exactly as the CLI entry point does.
"""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

#: The shared conformance corpus lives beside the project root.
SHARED = os.environ.get(
    "TORRENTCORE_SHARED", os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "shared")
)

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture
def shared_dir() -> str:
    """Path of the ``shared/`` folder (conformance corpus, real-peer facts)."""
    return os.path.abspath(SHARED)
