"""Small helpers the benchmark scripts share (no heavy imports: ``picker.py`` runs without libtorrent)."""

from __future__ import annotations

import json
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
    import os
    import tempfile

    if not os.environ.get("TORRENTCORE_STATE_DIR"):
        os.environ["TORRENTCORE_STATE_DIR"] = tempfile.mkdtemp(prefix="torrentcore-bench-state-")
    return os.environ["TORRENTCORE_STATE_DIR"]
