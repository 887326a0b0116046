#!/usr/bin/env python3
"""Coverage-guided fuzzing of ``torrentcore.metainfo.parse``: a safe ``Metainfo`` or a one-line error.

Every file path of a torrent that loads is checked to stay inside the download folder, under
POSIX rules and under Windows' (drive letters, device names, trailing dots). Seeded with every
.torrent of ``shared/conformance``. See fuzz/README.md::

    python fuzz/fuzz_metainfo.py -max_total_time=600
"""

import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

with atheris.instrument_imports(include=["torrentcore", "harness"]):
    import harness

import runner  # noqa: E402


def test_one_input(data: bytes) -> None:
    """One input: a crash is any exception but ``MetainfoError``/``BencodeError``, or an unsafe path."""
    harness.check_metainfo(data)


if __name__ == "__main__":
    runner.main("metainfo", test_one_input, runner.conformance_seeds())
