"""One flooding peer beside an honest libtorrent peer: the flooder is dropped, the honest transfer is not disturbed.

``torrentcore run`` (a subprocess) downloads from a rate-limited libtorrent seeder on 127.0.0.1, or
``torrentcore seed`` (rate-limited) serves a libtorrent leecher (the audit's case). Meanwhile a flooder
(tests/floodpeer.py) connects to torrentcore's listening port again and again, and on each connection sends one
kind of valid but useless message as fast as torrentcore reads it: keep-alives, HAVEs for a piece it already
announced, CANCELs for requests it never sent, INTERESTED/NOT INTERESTED toggles, ut_metadata requests, ut_pex
messages, extension handshakes, a 58 KiB extension handshake naming 5,000 extensions, messages of an unknown
id; against the seeder also 500 REQUESTs (its upload queue full) then CANCELs. Each connection must be closed
by torrentcore with a reason naming the flood (and the budget it exceeded) before the flooder runs out of
bytes; from the third round on, a flooder coming back under the same peer id is refused right after its
handshake (torrentcore.reconnect_throttle: nothing is sent back); fresh connections opened while the flood runs,
from the same address, get their handshake answered; the honest transfer ends with the files byte for byte
equal (the download with exit code 0). The rate the honest peer keeps under the
flood is measured by benchmarks/flood_wire.py (a ratio to its clean rate), not asserted here. Every wait is
bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fakepeer import assert_clean_finish, honest_swarm
from floodpeer import KINDS, REASONS, SEED_KINDS, Flooder, fresh_handshake
from realpeers import LOCALHOST, LibtorrentPeer, assert_same_tree, wait_until
from torrentcore_cli import torrentcore_factory  # noqa: F401  (fixture "torrentcore")

PIECE_LENGTH = 64 * 1024
SIZE = 6 << 20
#: The honest seeder's (or torrentcore's) upload cap (bytes/s): a transfer lasts ~4 s, long enough for every
#: kind of flood.
HONEST_RATE = 1_500_000
RUN_TIMEOUT = 60
#: Bytes the flooder may send on one connection (more than loopback's socket buffers hold): torrentcore
#: must close it before.
MAX_BYTES = 64 << 20
#: Fresh handshakes tried while the flood runs, and rounds of flooding (every kind once a round).
FRESH = 5
ROUNDS = 3


@pytest.fixture
def swarm(tmp_path: Path) -> Iterator[dict]:
    with honest_swarm(tmp_path, SIZE, seed=131, name="flood.bin", piece_length=PIECE_LENGTH,
                      rate=HONEST_RATE) as honest:
        yield honest


def _flood_while(endpoint: tuple[str, int], info_hash: bytes, kinds: tuple[str, ...], request_blocks=()):
    """Start the flooder, and probe fresh handshakes while a flood connection is sending."""
    flooder = Flooder(endpoint, info_hash, kinds=kinds, rounds=ROUNDS, max_bytes=MAX_BYTES,
                      request_blocks=request_blocks).start()
    fresh = []
    for _ in range(FRESH):  # bounded: FRESH probes, each waiting at most for the flood to be sending
        wait_until(lambda: flooder.active or flooder.join(0), 10)
        fresh.append(fresh_handshake(endpoint, info_hash, flooder))
    return flooder, fresh


def _assert_flooder_dropped(run, flooder: Flooder, fresh: list, kinds: tuple[str, ...], context: str) -> dict:
    lost = {e.get("peer"): e.get("reason", "") for e in run.events("peer lost")}
    assert len(flooder.connections) == ROUNDS * len(kinds), context
    for number, conn in enumerate(flooder.connections):
        about = f"{conn} reason {lost.get(conn.address)!r}\n{context}"
        if number >= 2 * len(kinds):  # dropped twice under this peer id: refused, its handshake unanswered
            assert not conn.handshake_answered and conn.closed_by_them and conn.bytes == 0, about
            continue
        assert conn.handshake_answered and conn.closed_by_them, about
        assert conn.bytes < MAX_BYTES, about  # dropped before the flood was spent
        reasons = REASONS[conn.kind]
        reasons = (reasons,) if isinstance(reasons, str) else reasons
        assert any(r in lost.get(conn.address, "") for r in reasons), about
    # Fresh connections were answered while the flood ran, after a bounded amount of flood.
    assert all(ok for ok, _ in fresh), fresh
    assert all(during < MAX_BYTES for _, during in fresh), fresh
    print("flood bytes sent (at most; the kernel buffers some) per connection:",
          {c.kind: c.bytes for c in flooder.connections}, "during fresh handshakes:", [d for _, d in fresh])
    print("reasons:", {c.kind: lost.get(c.address) for c in flooder.connections})
    return lost


def test_flooder_is_dropped_and_the_honest_download_completes(tmp_path, swarm, torrentcore):
    # It seeds on after the download (stopped below, which is success), so that the flood, slowed down by the
    # reconnect throttle, finds it listening to the end.
    run = torrentcore.run(swarm["torrent"], tmp_path / "out", "--seed-time", "10", peers=[swarm["seeder"].endpoint],
                          no_seed=False, log_level="debug")
    endpoint = (LOCALHOST, run.wait_listening())
    kinds = tuple(KINDS)
    flooder, fresh = _flood_while(endpoint, swarm["info_hash"], kinds)
    try:
        assert flooder.join(RUN_TIMEOUT), f"the flooder is still sending: {flooder.connections[-1]}"
        assert run.wait_event("download complete", RUN_TIMEOUT), run.describe()
        run.stop()
        context = assert_clean_finish(run, swarm, tmp_path / "out" / "flood.bin", repr(flooder.connections),
                                      RUN_TIMEOUT)
    finally:
        flooder.stop()
    lost = _assert_flooder_dropped(run, flooder, fresh, kinds, context)
    # The honest seeder was never dropped for a protocol error.
    honest = f"{LOCALHOST}:{swarm['seeder'].port}"
    assert "protocol" not in lost.get(honest, ""), context
    summary = run.summary()
    assert summary is not None and summary["verdict"] == "complete (seeding stopped)", context


def test_flooder_is_dropped_and_the_honest_leecher_completes(tmp_path, swarm, torrentcore):
    seeder = torrentcore.seed(swarm["torrent"], tmp_path / "seed", "--max-upload-rate", str(HONEST_RATE),
                              "--seed-ratio", "0", log_level="debug")
    endpoint = (LOCALHOST, seeder.wait_listening())
    kinds = tuple(KINDS) + SEED_KINDS
    blocks = tuple((i, b, 16384) for i in range(SIZE // PIECE_LENGTH) for b in range(0, PIECE_LENGTH, 16384))
    with LibtorrentPeer(name="honest-leecher") as leecher:
        leecher.add_torrent(swarm["torrent"], tmp_path / "leech")
        leecher.connect_peer(*endpoint)
        flooder, fresh = _flood_while(endpoint, swarm["info_hash"], kinds, blocks)
        try:
            assert flooder.join(RUN_TIMEOUT), f"the flooder is still sending: {flooder.connections[-1]}"
            finished = leecher.wait_finished(timeout=RUN_TIMEOUT)
        finally:
            flooder.stop()
        context = f"{seeder.describe()}\n{leecher.describe()}\n{flooder.connections!r}"
        assert finished, context
        assert_same_tree(swarm["root"], tmp_path / "leech" / "flood.bin", context)
    lost = _assert_flooder_dropped(seeder, flooder, fresh, kinds, context)
    honest = {e.get("peer") for e in seeder.events("peer connected") if str(e.get("client", "")).startswith("LT")}
    assert honest and not [a for a in honest if "protocol" in lost.get(a, "")], context
    assert seeder.returncode is None and "Traceback" not in seeder.stderr, context
