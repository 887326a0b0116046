#!/usr/bin/env python3
"""Coverage-guided fuzzing of uTP (BEP 29): ``torrentcore.utp.packet.parse`` and one connection's state
machine (``torrentcore.utp.connection``) fed a stream of datagrams.

Anything but a Packet that builds back to itself or a one-line ``PacketError``, or a connection whose
buffers leave their caps, is a crash (see ``harness.check_utp``). See fuzz/README.md::

    python fuzz/fuzz_utp.py -max_total_time=600
"""

import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

with atheris.instrument_imports(include=["torrentcore", "harness"]):
    import harness

import runner  # noqa: E402


def test_one_input(data: bytes) -> None:
    """One input: one datagram, and the same bytes as a stream of length-prefixed datagrams."""
    harness.check_utp(data)


if __name__ == "__main__":
    runner.main("utp", test_one_input, harness.utp_seeds())
