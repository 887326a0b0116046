"""Shared ``main`` of the atheris targets: seed a working corpus folder, then hand over to libFuzzer.

libFuzzer writes the inputs it finds interesting into its first corpus folder, so the seeds are
copied into a working folder (``--corpus DIR``, default ``fuzz/corpus/<target>``) instead of
pointing libFuzzer at ``shared/conformance``. Every other argument goes to libFuzzer
(``-runs=N``, ``-max_total_time=S``, ``-seed=N``, ``-artifact_prefix=DIR/`` ...).

Given input files instead (``python fuzz/fuzz_X.py crash-<sha1> ...``), the target replays each of them
once: no corpus folder is seeded or passed (libFuzzer reads its arguments either all as files to run or
all as corpus folders, and one folder among files made it stop with "Not a directory").
"""

from __future__ import annotations

import csv
import hashlib
import os
import sys
from collections.abc import Callable, Iterable

HERE = os.path.dirname(os.path.abspath(__file__))
#: Where the conformance corpus lives (as in the tests: ``TORRENTCORE_SHARED`` or ``../shared``).
SHARED = os.environ.get("TORRENTCORE_SHARED", os.path.join(HERE, os.pardir, os.pardir, "shared"))
#: Seeds larger than this are left out: they slow every mutation and add little.
MAX_SEED_BYTES = 128 * 1024


def conformance_seeds() -> list[bytes]:
    """The .torrent files listed in the ``MANIFEST.tsv`` of each ``shared/conformance`` folder."""
    seeds = []
    root = os.path.join(SHARED, "conformance")
    for folder in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        manifest = os.path.join(root, folder, "MANIFEST.tsv")
        if not os.path.exists(manifest):
            continue
        with open(manifest, newline="") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                path = os.path.join(root, folder, row.get("file") or row.get("File") or "")
                if os.path.isfile(path) and os.path.getsize(path) <= MAX_SEED_BYTES:
                    with open(path, "rb") as f:
                        seeds.append(f.read())
    return seeds


def _split_args(argv: list[str], name: str) -> tuple[str, list[str]]:
    corpus = os.path.join(HERE, "corpus", name)
    rest = [argv[0]]
    args = iter(argv[1:])
    for arg in args:
        if arg == "--corpus":
            corpus = next(args, corpus)
        elif arg.startswith("--corpus="):
            corpus = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return corpus, rest


def replay_inputs(argv: list[str]) -> list[str]:
    """The input files named among libFuzzer's arguments (``argv[1:]``), to be replayed; empty: fuzz.

    Raises SystemExit with one line for a name that does not exist, or for files and folders mixed.
    """
    named = [a for a in argv[1:] if not a.startswith("-")]
    missing = [a for a in named if not os.path.exists(a)]
    if missing:
        raise SystemExit(f"no such input file or corpus folder: {missing[0]}")
    files = [a for a in named if not os.path.isdir(a)]
    if files and len(files) != len(named):
        raise SystemExit("give input files to replay or corpus folders to fuzz, not both")
    return files


def main(name: str, test_one_input: Callable[[bytes], None], seeds: Iterable[bytes]) -> None:
    """Seed ``--corpus`` with ``seeds`` and run libFuzzer on ``test_one_input``; or, given input files,
    replay each of them once."""
    import atheris

    corpus, argv = _split_args(sys.argv, name)
    if replay_inputs(argv):
        atheris.Setup(argv, test_one_input)
        atheris.Fuzz()
        return
    os.makedirs(corpus, exist_ok=True)
    for seed in seeds:
        path = os.path.join(corpus, "seed-" + hashlib.sha1(seed).hexdigest())
        if not os.path.exists(path):
            with open(path, "wb") as fh:
                fh.write(seed)
    atheris.Setup(argv + [corpus], test_one_input)
    atheris.Fuzz()
