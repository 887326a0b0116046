"""Shared ``main`` of the atheris targets: seed a working corpus folder, then hand over to libFuzzer.

libFuzzer writes the inputs it finds interesting into its first corpus folder, so the seeds are
copied into a working folder (``--corpus DIR``, default ``fuzz/corpus/<target>``) instead of
pointing libFuzzer at ``shared/conformance``. Every other argument goes to libFuzzer
(``-runs=N``, ``-max_total_time=S``, ``-seed=N``, ``-artifact_prefix=DIR/`` ...).
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


def main(name: str, test_one_input: Callable[[bytes], None], seeds: Iterable[bytes]) -> None:
    """Seed ``--corpus`` with ``seeds`` and run libFuzzer on ``test_one_input``."""
    import atheris

    corpus, argv = _split_args(sys.argv, name)
    os.makedirs(corpus, exist_ok=True)
    for seed in seeds:
        path = os.path.join(corpus, "seed-" + hashlib.sha1(seed).hexdigest())
        if not os.path.exists(path):
            with open(path, "wb") as fh:
                fh.write(seed)
    atheris.Setup(argv + [corpus], test_one_input)
    atheris.Fuzz()
