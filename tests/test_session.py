"""Engine bookkeeping that needs no network (addresses are only remembered, never dialled)."""

from __future__ import annotations

import argparse

from test_piece_selection import meta

from torrentcore import plugins
from torrentcore.session import MAX_CANDIDATES, Torrent


def test_peer_list_from_a_tracker_is_bounded():
    pm = plugins.get_plugin_manager()
    m = meta(2)
    t = Torrent(m, "/nonexistent-never-written", pm, argparse.Namespace(),
                plugins.choose_strategy(pm), lambda *a: None)
    t.add_peers((f"127.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 6881) for i in range(MAX_CANDIDATES + 500))
    assert len(t.candidates) == MAX_CANDIDATES
    for c in list(t.candidates.values())[:10]:
        c.failures = 3
    t.add_peers([("127.200.0.1", 1), ("127.200.0.2", 2)])
    assert ("127.200.0.1", 1) in t.candidates and ("127.200.0.2", 2) in t.candidates
    assert len(t.candidates) == MAX_CANDIDATES
