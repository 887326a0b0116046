"""The session's clock: one greenlet ticks every torrent (no greenlet per torrent on its own timer)."""

from __future__ import annotations

import gevent

from torrentcore.hookspec import hookimpl
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


class _ProgressRecorder:
    """A reporter plugin that keeps every progress snapshot and the final one."""

    def __init__(self) -> None:
        self.progress: list = []
        self.finish: list = []

    @hookimpl
    def torrentcore_on_progress(self, torrent, snapshot) -> None:
        self.progress.append(snapshot)

    @hookimpl
    def torrentcore_on_finish(self, torrent, snapshot, exit_code) -> None:
        self.finish.append(snapshot)


def _wait_ticks(ticker: Ticker, count: int) -> None:
    """Return after the ticker ticked ``count`` more times (bounded)."""
    seen = []
    token = ticker.add(lambda now: seen.append(now))
    try:
        for _ in range(2000):
            if len(seen) >= count:
                return
            gevent.sleep(0.01)
        raise AssertionError(f"the ticker ticked {len(seen)} times, not {count}")
    finally:
        ticker.remove(token)


def _wait_seeding(handle, ticker: Ticker) -> None:
    """Return once the torrent seeds and ticks on ``ticker`` (bounded)."""
    for _ in range(500):
        if handle.status().state == "seeding" and len(ticker):
            break
        gevent.sleep(0.02)
    assert handle.status().state == "seeding" and len(ticker)


def test_an_idle_seeder_is_reported_only_when_something_changes(tmp_path):
    """No peer and nothing new: no progress report on a tick; a peer fetching it: reported, ending with the
    quiet state (no peer, rates back at zero, what was uploaded), then none again; the finish snapshot last."""
    import os

    from realpeers import make_payload, make_torrent

    from torrentcore import Session, SessionConfig, TorrentConfig
    from torrentcore.plugins import get_plugin_manager

    size = 256 * 1024
    root = make_payload(tmp_path / "data", size, seed=7, name="idle.bin")
    torrent = os.fspath(tmp_path / "idle.torrent")
    make_torrent(root, [], piece_length=16 * 1024, out=torrent)
    recorder = _ProgressRecorder()
    pm = get_plugin_manager()
    pm.register(recorder, name="progress-recorder")
    config = SessionConfig(listen_port=0, listen_hosts=("127.0.0.1",), dht=False, pex=False)
    seeder = Session(config, plugin_manager=pm)
    seeder.ticker.interval = 0.05  # the rule is per tick, not per second
    try:
        handle = seeder.add_torrent(torrent, tmp_path / "data", TorrentConfig.seeding_forever())
        _wait_seeding(handle, seeder.ticker)
        _wait_ticks(seeder.ticker, 2)
        quiet = len(recorder.progress)
        assert quiet >= 1 and recorder.progress[-1].state == "seeding" and recorder.progress[-1].peers == 0
        _wait_ticks(seeder.ticker, 20)
        assert len(recorder.progress) == quiet  # nothing changed: no report

        with Session(SessionConfig(listen_port=0, listen_hosts=("127.0.0.1",), dht=False, pex=False)) as leecher:
            got = leecher.add_torrent(torrent, tmp_path / "out",
                                      TorrentConfig(seed=False, peers=[("127.0.0.1", seeder.port)]))
            assert got.join(timeout=30)
            assert got.status().progress == 1.0
        for _ in range(500):  # the connection's end reaches the seeder
            if not handle.status().peers:
                break
            gevent.sleep(0.02)
        _wait_ticks(seeder.ticker, 5)  # the last bytes' rate, then rates at zero, are reported
        busy = recorder.progress[quiet:]
        assert busy, "the upload was never reported"  # (a peer may come and go between two ticks)
        assert busy[-1].peers == 0 and busy[-1].uploaded >= size and busy[-1].upload_rate == 0.0
        settled = len(recorder.progress)
        _wait_ticks(seeder.ticker, 20)
        assert len(recorder.progress) == settled  # quiet again
    finally:
        seeder.close()
    assert recorder.finish and recorder.finish[-1].uploaded >= size


def test_a_seeder_at_rest_does_its_work_every_few_ticks_and_every_tick_once_busy(tmp_path):
    """A completed torrent with no peer, no candidate and nothing moving does its once-a-second work every
    REST_TICKS ticks (500 of them at rest cost 4.4 ms a second); a candidate to dial makes it tick every time."""
    import os
    import socket

    from realpeers import make_payload, make_torrent

    from torrentcore import Session, SessionConfig, TorrentConfig
    from torrentcore.periodic import REST_TICKS

    root = make_payload(tmp_path / "data", 64 * 1024, seed=3, name="rest.bin")
    torrent = os.fspath(tmp_path / "rest.torrent")
    make_torrent(root, [], piece_length=16 * 1024, out=torrent)
    session = Session(SessionConfig(listen_port=0, listen_hosts=("127.0.0.1",), dht=False, pex=False))
    session.ticker.interval = 0.02
    try:
        handle = session.add_torrent(torrent, tmp_path / "data", TorrentConfig.seeding_forever())
        _wait_seeding(handle, session.ticker)
        periodic = handle.torrent.periodic
        full: list[float] = []
        inner = periodic._tick
        periodic._tick = lambda now: (full.append(now), inner(now))
        _wait_ticks(session.ticker, 2)
        full.clear()
        ticks = 6 * REST_TICKS
        _wait_ticks(session.ticker, ticks)
        assert ticks // REST_TICKS - 1 <= len(full) <= ticks // REST_TICKS + 1, len(full)

        with socket.socket() as closed:  # a port nobody listens on: the candidate stays, backing off
            closed.bind(("127.0.0.1", 0))
            address = closed.getsockname()
        assert handle.torrent.add_peers([address], "manual") == 1
        _wait_ticks(session.ticker, 1)
        full.clear()
        _wait_ticks(session.ticker, 10)
        assert len(full) >= 9  # busy: every tick (one may be the one running when the count began)
    finally:
        session.close()
