#!/usr/bin/env python3
"""Coverage-guided fuzzing of the peer wire framing and ``torrentcore.peer.messages`` parsers.

The input's first byte chooses how the stream is read (handshake first or not, read size), the
rest is what a peer sends: the real ``Connection.read_message`` frames it from memory and each
payload goes through the parser the engine uses for its id. Anything but messages or
``ProtocolError`` is a crash. Seeded with streams built by ``messages.py``. See fuzz/README.md::

    python fuzz/fuzz_messages.py -max_total_time=600
"""

import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

with atheris.instrument_imports(include=["torrentcore", "harness"]):
    import harness

    from torrentcore import bencode
    from torrentcore.peer import messages as msg

import runner  # noqa: E402


def test_one_input(data: bytes) -> None:
    """One input: mode byte, then the peer's byte stream."""
    harness.check_messages(data)


def seeds() -> list[bytes]:
    """Streams a real peer could send, in each reading mode."""
    body = b"".join(
        [
            msg.extended(0, bencode.encode({b"m": {b"ut_metadata": 2}, b"p": 6881, b"reqq": 250, b"v": b"fuzz"})),
            msg.bitfield(b"\xff\xf0"),
            msg.have(3),
            msg.simple(msg.UNCHOKE),
            msg.request(0, 0, 16384),
            msg.piece_header(0, 0, 8) + b"12345678",
            msg.cancel(0, 0, 16384),
            msg.KEEPALIVE,
            harness.frame(msg.PORT, b"\x1a\xe1"),
            msg.extended(3, b"d8:msg_typei0e5:piecei0ee"),
        ]
    )
    handshake = msg.handshake(b"\x11" * 20, b"-TC0001-" + b"\x22" * 12, msg.reserved_bytes(msg.RESERVED_EXTENSIONS))
    return [b"\x00" + body, b"\x47" + body, b"\x80" + handshake + body, b"\xc1" + handshake + body]


if __name__ == "__main__":
    runner.main("messages", test_one_input, seeds())
