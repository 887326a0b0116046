#!/usr/bin/env python3
"""Coverage-guided fuzzing of tracker replies: ``torrentcore.tracker.http.parse_announce_reply`` (through
``TrackerTiers``, which raises short intervals), the compact peer parsers of ``tracker/peers.py``, and the
UDP tracker's connect and announce exchanges (BEP 15) fed the input as datagrams.

Anything but a sensible ``AnnounceResponse`` or a one-line ``TrackerError`` is a crash (see
``harness.check_tracker_reply``). Seeded with replies real trackers send. See fuzz/README.md::

    python fuzz/fuzz_tracker.py -max_total_time=600
"""

import os
import socket
import struct
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

with atheris.instrument_imports(include=["torrentcore", "harness"]):
    import harness

    from torrentcore import bencode

import runner  # noqa: E402

#: Separates the datagrams of a UDP exchange in an input (see harness.check_udp_reply).
SPLIT = b"\xff\xfe\xfd\xfc"


def test_one_input(data: bytes) -> None:
    """One input: the body of a tracker's announce reply (and the same bytes as UDP datagrams)."""
    harness.check_tracker_reply(data)


def seeds() -> list[bytes]:
    """Replies of the shapes trackers send: compact, peers6, dictionaries, failure, warning, odd counts."""
    v4 = socket.inet_aton("10.0.0.1") + struct.pack(">H", 6881) + socket.inet_aton("127.0.0.1") + b"\x1a\xe1"
    v6 = socket.inet_pton(socket.AF_INET6, "2001:db8::1") + struct.pack(">H", 51413)
    dicts = [{"ip": "192.0.2.7", "peer id": b"-LT2110-abcdefghijkl", "port": 6881}, {"ip": "tracker.example",
                                                                                      "port": 1}]
    return [
        bencode.encode({"interval": 1800, "min interval": 900, "complete": 3, "incomplete": 4, "peers": v4}),
        bencode.encode({"interval": 1, "peers": v4, "peers6": v6, "tracker id": b"T-42"}),
        bencode.encode({"interval": 60, "peers": dicts, "warning message": "please upgrade\nsoon"}),
        bencode.encode({"failure reason": "torrent not registered"}),
        bencode.encode({"interval": 1800, "peers": v4[:-1]}),
        b"d8:intervali1e5:peersl" + b"le" * 200 + b"ee",
        v4 + v6,
        # UDP (BEP 15, harness.check_udp_reply): mode byte, then datagrams (connect reply, announce reply).
        b"\x00" + struct.pack(">IIQ", 0, 0, 0x41727101980) + SPLIT + struct.pack(">IIiii", 1, 0, 1800, 3, 4) + v4,
        b"\x01" + struct.pack(">IIQ", 0, 0, 7) + SPLIT + struct.pack(">IIiii", 1, 0, 60, -1, 2) + v6,
        b"\x04" + struct.pack(">II", 3, 0) + b"torrent not registered",
        b"\x06" + struct.pack(">IIiii", 1, 7, 0, 0, 0) + SPLIT + struct.pack(">IIiii", 1, 0, 10, 0, 0) + v4[:-1],
    ]


if __name__ == "__main__":
    runner.main("tracker", test_one_input, seeds())
