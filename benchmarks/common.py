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
