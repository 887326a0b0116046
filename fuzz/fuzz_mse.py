#!/usr/bin/env python3
"""Coverage-guided fuzzing of the MSE/PE handshake state machines (``torrentcore.peer.encryption``).

The input's first byte chooses the side (initiator or responder), the read size, and whether the peer's
key exchange is honest (then the rest is the plaintext of the encrypted part, so the fuzzer reaches the
VC, crypto_provide / crypto_select, padding and IA parsing). Anything but a finished handshake or
``EncryptionError`` is a crash. See fuzz/README.md::

    python fuzz/fuzz_mse.py -max_total_time=600
"""

import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

with atheris.instrument_imports(include=["torrentcore", "harness"]):
    import harness

import runner  # noqa: E402


def test_one_input(data: bytes) -> None:
    """One input: mode byte, pad/provide byte, then the peer's stream (or the plaintext of its encrypted part)."""
    harness.check_mse(data)


if __name__ == "__main__":
    runner.main("mse", test_one_input, harness.mse_seeds())
