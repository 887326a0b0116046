#!/usr/bin/env python3
"""Coverage-guided fuzzing of the peer message dispatcher: a real ``Peer`` and its state machine.

The input is a script (``harness.parse_wire_script``): a mode byte (fast extension, extension protocol,
which pieces we have, incoming or not), then the peer's bytes in chunks with engine actions between them
(unchoke, choke, uploads, request timeouts, endgame cancels, request top-ups). ``Peer.run`` reads it with
the real ``Connection`` against a ``TorrentPort`` of real parts (``harness.WirePort``: the metainfo, a
``PieceManager``, hash checks). Anything but a one-line end of the read loop (a ``ProtocolError``, a
flood, the script's end) is a crash, and so is a broken invariant (see ``harness.check_peer``). Seeded
with honest conversations (``harness.peer_seeds``). See fuzz/README.md::

    python fuzz/fuzz_peer.py -max_total_time=600
"""

import logging
import os
import sys

import atheris
import structlog

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

with atheris.instrument_imports(include=["torrentcore", "torrentcore_plugins", "harness"]):
    import harness

import runner  # noqa: E402

# The peer logs what it does (floods, snubs): keep libFuzzer's output readable.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))


def test_one_input(data: bytes) -> None:
    """One input: mode byte, then the script."""
    harness.check_peer(data)


if __name__ == "__main__":
    runner.main("peer", test_one_input, harness.peer_seeds())
