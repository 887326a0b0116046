"""The daemon's pure rules moved out of Daemon: the settings a torrent-add stores, which torrents ``ids`` names."""

import time
from types import SimpleNamespace

from torrentcore.daemon.add_settings import added_settings
from torrentcore.daemon.torrent_ids import RECENTLY_ACTIVE, select


def _entry(id_: int, info_hash: str, activity: float = 0, added: float = 0) -> SimpleNamespace:
    return SimpleNamespace(id=id_, row=SimpleNamespace(info_hash=info_hash, activity_date=activity, added_date=added))


def test_ids_by_number_hash_list_and_recently_active():
    now = time.time()
    a, b, c = _entry(1, "aa" * 20, activity=now), _entry(2, "bb" * 20), _entry(3, "cc" * 20, added=now - 5)
    entries = {3: c, 1: a, 2: b}
    assert select(entries, None) == [a, b, c]
    assert select(entries, 2) == [b]
    assert select(entries, ("BB" * 20)) == [b]
    assert select(entries, [3, "aa" * 20, 3, True, 9, 1.5]) == [c, a]
    assert select(entries, "recently-active") == [c, a]  # in the daemon's order (by insertion)
    b.row.activity_date = now - RECENTLY_ACTIVE - 5
    assert b not in select(entries, "recently-active")


def test_added_settings_wanted_wins_and_out_of_range_is_ignored():
    s = added_settings(3, unwanted=[0, 1, 7], wanted=[1, -1], priorities={2: 1, 5: -1}, labels=["x"], peer_limit=9)
    assert s == {"wanted": [0, 1, 1], "priorities": [0, 0, 1], "labels": ["x"], "peer-limit": 9}
    assert added_settings(0, [0], [1], {0: 1}, None, 50) == {"peer-limit": 50}  # a magnet: no files known yet
    assert added_settings(2, None, None, None, [], 4) == {"peer-limit": 4}
