"""Small helpers the benchmark scripts share (no heavy imports: ``picker.py`` runs without libtorrent)."""

from __future__ import annotations

import json
import os
import random
from typing import Any


def write_json(results: Any, dest: str) -> None:
    """Write ``results`` as indented JSON to the file ``dest``, or to stdout when ``dest`` is ``-``."""
    text = json.dumps(results, indent=2)
    if dest == "-":
        print(text)
    else:
        with open(dest, "w") as f:
            f.write(text + "\n")


def private_state_dir() -> str:
    """Give the torrentcore processes a benchmark starts a state folder of their own (resume records, DHT
    state), never the user's: ``$TORRENTCORE_STATE_DIR`` if already set, else a new temporary folder."""
    import tempfile

    if not os.environ.get("TORRENTCORE_STATE_DIR"):
        os.environ["TORRENTCORE_STATE_DIR"] = tempfile.mkdtemp(prefix="torrentcore-bench-state-")
    return os.environ["TORRENTCORE_STATE_DIR"]


def aria2_done_hook(work: str) -> tuple[str, str]:
    """A script for aria2c's ``--on-bt-download-complete`` that writes the completion time (``date +%s.%N``)
    to a stamp file in ``work``: ``(hook, stamp)``, the stamp removed if an earlier round left one."""
    stamp = os.path.join(work, "aria2-done")
    hook = os.path.join(work, "aria2-hook.sh")
    with open(hook, "w") as f:
        f.write(f"#!/bin/sh\ndate +%s.%N > {stamp}\n")
    os.chmod(hook, 0o755)
    if os.path.exists(stamp):
        os.unlink(stamp)
    return hook, stamp


def tree_spec(total: int, files: int, seed: int = 7) -> dict[str, int]:
    """About ``files`` files of uneven sizes (a few KiB to several MiB) in nested folders, ``total`` bytes."""
    rng = random.Random(seed)
    weights = [rng.choice((0.02, 0.2, 0.5, 1.0, 1.5, 3.0)) for _ in range(files)]
    scale = total / sum(weights)
    sizes = [max(1, int(w * scale)) for w in weights]
    sizes[-1] += total - sum(sizes)
    return {f"d{i % 7}/s{i % 3}/file{i:03d}.bin": n for i, n in enumerate(sizes)}


def median_interval(values: list[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """A 95 % bootstrap interval of the median of ``values`` (per-round ratios): resampled with replacement
    ``resamples`` times, a fixed seed so that a run's report is reproducible from its rounds. Wide with few
    rounds (three rounds can only show their own spread): it says how far a median of this many rounds moves."""
    import statistics

    if not values:
        raise ValueError("median_interval of no values")
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]
