"""``torrentcore seed``: seed data already on disk (checked first), with the machinery of ``run``."""

from __future__ import annotations

import os

from .run import run_torrents


def cmd_seed(args, pm) -> int:
    """``torrentcore seed``."""
    return run_torrents(args, pm, args.torrent, os.path.abspath(args.data), seed_only=True)
