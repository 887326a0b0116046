"""The session's clock: one greenlet ticks every torrent (no greenlet per torrent on its own timer)."""

from __future__ import annotations

import gevent

from torrentcore.ticker import Ticker


def test_one_greenlet_calls_every_callback_each_tick_and_stops_when_none_is_left():
    ticker = Ticker(interval=0.01)
    calls: dict[str, int] = {"a": 0, "b": 0}
    ta = ticker.add(lambda now: calls.__setitem__("a", calls["a"] + 1))
    tb = ticker.add(lambda now: calls.__setitem__("b", calls["b"] + 1))
    greenlet = ticker._greenlet
    for _ in range(500):  # bounded: until both were called a few times
        if min(calls.values()) >= 3:
            break
        gevent.sleep(0.01)
    assert min(calls.values()) >= 3
    assert ticker._greenlet is greenlet  # one greenlet for both
    ticker.remove(ta)
    before = calls["a"]
    gevent.sleep(0.05)
    assert calls["a"] == before  # removed: no more calls
    ticker.remove(tb)
    greenlet.join(timeout=5)
    assert greenlet.dead  # nothing registered: the greenlet ends


def test_torrents_of_a_session_share_its_ticker(tmp_path):
    """Every torrent of a session registers with the session's ticker while its network runs."""
    import os

    from realpeers import make_payload, make_torrent

    from torrentcore import Session, SessionConfig, TorrentConfig

    session = Session(SessionConfig(listen_port=0, listen_hosts=("127.0.0.1",), dht=False))
    try:
        handles = []
        for i in range(3):
            root = make_payload(tmp_path / "data", 64 * 1024, seed=i, name=f"f{i}.bin")
            torrent = tmp_path / f"t{i}.torrent"
            make_torrent(root, [], piece_length=16 * 1024, out=torrent)
            handles.append(session.add_torrent(os.fspath(torrent), tmp_path / "data", TorrentConfig.seeding_forever()))
        for _ in range(500):
            if all(h.status().state == "seeding" for h in handles) and len(session.ticker) == 3:
                break
            gevent.sleep(0.02)
        assert [h.status().state for h in handles] == ["seeding"] * 3
        assert len(session.ticker) == 3
        handles[0].stop()
        handles[0].join(timeout=10)
        assert len(session.ticker) == 2  # a stopped torrent no longer ticks
    finally:
        session.close()
    assert len(session.ticker) == 0
