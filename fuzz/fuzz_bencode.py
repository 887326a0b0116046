#!/usr/bin/env python3
"""Coverage-guided fuzzing of ``torrentcore.bencode`` (decode, decode_prefix, decode_dict_with_spans).

Seeded with every .torrent of ``shared/conformance``. See fuzz/README.md::

    python fuzz/fuzz_bencode.py -max_total_time=600
"""

import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

with atheris.instrument_imports(include=["torrentcore", "harness"]):
    import harness

import runner  # noqa: E402


def test_one_input(data: bytes) -> None:
    """One input: any outcome but a value or ``BencodeError`` is a crash."""
    harness.check_bencode(data)


SEEDS = [b"i0e", b"0:", b"le", b"de", b"d1:ai1e1:bl1:xee", b"i-9223372036854775808e"]

if __name__ == "__main__":
    runner.main("bencode", test_one_input, SEEDS + runner.conformance_seeds())
