"""Inputs the fuzzers found, replayed through the same checks (fuzz/harness.py) on every run.

Each file under ``tests/fuzz_regressions/<target>/`` broke ``harness.check_<target>`` once:

* ``metainfo/windows-*``: names that were unsafe under Windows' rules (a device name, a drive
  letter, a name ending in a dot), found by tests/test_fuzz_properties.py before the rules existed.
* ``tracker/compact-peers-not-whole-entries-*``: an HTTP reply whose ``peers`` string is not whole
  6-byte entries was refused with an error that did not name the tracker (fuzz/fuzz_tracker.py).
* ``tracker/udp-compact-peers-not-whole-entries-*``: the same in a UDP tracker's announce reply (BEP 15),
  fed as datagrams by ``harness.check_udp_reply`` (fuzz/fuzz_tracker.py).
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "fuzz"))
import harness  # noqa: E402

FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_regressions")
CHECKS = {"bencode": harness.check_bencode, "metainfo": harness.check_metainfo, "messages": harness.check_messages,
          "mse": harness.check_mse, "tracker": harness.check_tracker_reply}
CASES = [
    pytest.param(target, name, id=f"{target}/{name}")
    for target in sorted(CHECKS)
    if os.path.isdir(os.path.join(FOLDER, target))
    for name in sorted(os.listdir(os.path.join(FOLDER, target)))
]


def test_regressions_are_present():
    assert CASES, f"no inputs under {FOLDER}"


@pytest.mark.parametrize("target,name", CASES)
def test_fuzz_regression(target, name):
    with open(os.path.join(FOLDER, target, name), "rb") as fh:
        CHECKS[target](fh.read())
