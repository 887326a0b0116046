"""Several torrents in one process: one port serves them all, routed by info-hash; the worst exit code wins."""

from __future__ import annotations

import os
import socket
import struct

from realpeers import LOCALHOST, assert_same_tree, free_port, make_payload, make_torrent, peers_fixture  # noqa: F401
from torrentcore_cli import run_cli, torrentcore_factory  # noqa: F401  (fixture "torrentcore")

KiB = 1024
MiB = 1024 * KiB


def _two_payloads(tmp_path):
    a = make_payload(tmp_path / "data", 2 * MiB + 333, seed=51, name="alpha.bin")
    b = make_payload(tmp_path / "data", {"x.bin": 1 * MiB, "y/z.bin": 700 * KiB}, seed=52, name="beta")
    ta, tb = tmp_path / "alpha.torrent", tmp_path / "beta.torrent"
    make_torrent(a, [], piece_length=32 * KiB, out=ta)
    make_torrent(b, [], piece_length=16 * KiB, out=tb)
    return a, b, ta, tb


def test_seed_a_b_on_one_port_each_libtorrent_leecher_reaches_its_torrent(tmp_path, peers, torrentcore):
    a, b, ta, tb = _two_payloads(tmp_path)
    seeder = torrentcore.start(["seed", ta, tb, "-d", tmp_path / "data", "--port", str(free_port()),
                                "--listen-host", LOCALHOST, "--progress-interval", "1"], name="seeder")
    port = seeder.wait_listening()
    leechers = []
    for name, torrent in (("leech-a", ta), ("leech-b", tb)):
        leecher = peers.libtorrent(name)
        leecher.add_torrent(torrent, tmp_path / name)
        leecher.connect_peer(LOCALHOST, port)
        leechers.append(leecher)
    for leecher in leechers:
        assert leecher.wait_finished(timeout=30), peers.describe() + seeder.describe()
    assert_same_tree(a, tmp_path / "leech-a" / "alpha.bin")
    assert_same_tree(b, tmp_path / "leech-b" / "beta")
    assert len(seeder.events("listening")) == 1, "one listen port for both torrents"
    connected = {e["torrent"] for e in seeder.events("peer connected")}
    assert connected == {"alpha.bin", "beta"}, seeder.describe()
    assert seeder.stop() == 0, seeder.describe()


def test_an_unknown_info_hash_is_closed(tmp_path, torrentcore):
    _a, _b, ta, _tb = _two_payloads(tmp_path)
    seeder = torrentcore.start(["seed", ta, "-d", tmp_path / "data", "--port", str(free_port()),
                                "--listen-host", LOCALHOST], name="seeder")
    port = seeder.wait_listening()
    with socket.create_connection((LOCALHOST, port), timeout=10) as sock:
        sock.sendall(struct.pack("B", 19) + b"BitTorrent protocol" + bytes(8) + b"\x01" * 20 + b"-XX0000-" + b"0" * 12)
        sock.settimeout(10)
        assert sock.recv(68) == b"", "a handshake for a torrent we do not serve gets no answer, only a close"
    assert seeder.returncode is None


def test_run_a_b_downloads_both_and_a_failing_one_sets_the_exit_code(tmp_path, peers, torrentcore):
    a, b, ta, tb = _two_payloads(tmp_path)
    seeder = peers.libtorrent("seeder")
    seeder.add_torrent(ta, tmp_path / "data", seed=True)
    seeder.add_torrent(tb, tmp_path / "data", seed=True)
    run = torrentcore.start(["run", ta, tb, "-o", tmp_path / "out", "--no-seed", "--port", str(free_port()),
                             "--listen-host", LOCALHOST, "--peer", f"{LOCALHOST}:{seeder.endpoint[1]}"])
    assert run.wait(60) == 0, run.describe()
    assert_same_tree(a, tmp_path / "out" / "alpha.bin")
    assert_same_tree(b, tmp_path / "out" / "beta")
    # The same two, but the second one's data folder cannot be written: its exit code (1) is the run's.
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a folder should be")
    seed_alpha = torrentcore.start(["run", ta, "-o", blocked / "sub", "--no-seed", "--port", str(free_port()),
                                    "--listen-host", LOCALHOST])
    assert seed_alpha.wait(60) == 1, seed_alpha.describe()
    assert "torrentcore: error:" in seed_alpha.stderr


def test_invalid_configuration_fields_are_value_errors_and_exit_2():
    import pytest

    from torrentcore.config import SessionConfig, TorrentConfig

    bad_session = {"listen_port": 99999, "dht_port": -1, "encryption": "maybe", "max_download_rate": -5,
                   "max_connections": 0, "hash_threads": 0, "dht_bootstrap": (("h", 0),), "listen_hosts": ("",),
                   "disabled_plugins": ("",), "plugin_settings": {"x": 1}}
    for field, value in bad_session.items():
        with pytest.raises(ValueError, match=field.split("_")[0]):
            SessionConfig(**{field: value})
    bad_torrent = {"seed_ratio": -1, "seed_time": float("nan"), "max_peers": 0, "upload_slots": -1,
                   "max_upload_rate": -1, "strategy": "", "storage": "", "peers": (("h", 70000),),
                   "selected_files": (-1,), "metadata_timeout": 0, "only": ("",), "extra": 3}
    for field, value in bad_torrent.items():
        with pytest.raises(ValueError, match=field.split("_")[0]):
            TorrentConfig(**{field: value})
    for args, word in ((["--port", "99999"], "listen_port"), (["--max-peers", "0"], "max_peers"),
                       (["--seed-ratio", "-1"], "seed_ratio"), (["--max-connections", "0"], "max_connections"),
                       (["--upload-slots", "-2"], "upload_slots")):
        proc = run_cli(["run", "/nonexistent.torrent", *args])
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and word in lines[0] and "Traceback" not in proc.stderr, (args, proc.stderr)


def test_an_explicit_port_in_use_is_bad_input(tmp_path):
    _a, _b, ta, _tb = _two_payloads(tmp_path)
    with socket.socket() as taken:
        taken.bind((LOCALHOST, 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = run_cli(["seed", str(ta), "-d", str(tmp_path / "data"), "--port", str(port), "--listen-host", LOCALHOST])
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {port}" in lines[0] and "--port" in lines[0], proc.stderr


def test_a_seed_does_not_dial_a_seed_again(tmp_path, peers, torrentcore):
    """Both sides complete: the first connection ends ("both sides are seeds") and is not dialled again."""
    import time

    a, _b, ta, _tb = _two_payloads(tmp_path)
    other = peers.libtorrent("other-seed")
    other.add_torrent(ta, tmp_path / "data", seed=True)
    seeder = torrentcore.seed(ta, tmp_path / "data", peers=[other.endpoint], name="seeder")
    seeder.wait_listening()
    assert seeder.wait_event("peer connected", 15), seeder.describe()
    end = time.monotonic() + 8  # several re-dial periods of the old behaviour (2 s, then 4 s)
    while time.monotonic() < end and seeder.returncode is None:
        time.sleep(0.5)
    dialled = [e for e in seeder.events("peer connected") if not e.get("incoming")]
    assert len(dialled) == 1, seeder.describe()
    assert seeder.stop() == 0, seeder.describe()


def test_a_peer_arriving_during_the_data_check_waits_for_it(tmp_path, torrentcore, monkeypatch):
    """The session listens from its start; an incoming peer for a torrent still checking is answered and
    served once the check is done, not closed. The check is slowed to about 3 s by a test plugin."""
    root = make_payload(tmp_path / "data", 4 * MiB, seed=53, name="big.bin")
    torrent = tmp_path / "big.torrent"
    make_torrent(root, [], piece_length=16 * KiB, out=torrent)  # 256 pieces
    monkeypatch.setenv("TC_CHECK_DELAY", "0.012")
    tests = os.path.dirname(os.path.abspath(__file__))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")])))
    seeder = torrentcore.start(["seed", torrent, "-d", tmp_path / "data", "--port", str(free_port()),
                                "--listen-host", LOCALHOST, "--plugin", "tc_slow_check"], name="seeder")
    port = seeder.wait_listening()
    info_hash = bytes.fromhex(_info_hash_hex(torrent))
    with socket.create_connection((LOCALHOST, port), timeout=30) as sock:
        sock.sendall(struct.pack("B", 19) + b"BitTorrent protocol" + bytes(8) + info_hash + b"-XX0000-" + b"0" * 12)
        sock.settimeout(30)
        answer = b""
        while len(answer) < 68 + 5:  # its handshake, then the first message (a bitfield), after the check
            chunk = sock.recv(4096)
            assert chunk, seeder.describe()
            answer += chunk
    assert answer[28:48] == info_hash
    assert answer[68 + 4] == 5, "the first message after the handshake is the bitfield of the checked data"
    assert seeder.events("checking existing data"), seeder.describe()
    assert not seeder.events("peer connected") or seeder.events("peer connected")[0]["incoming"], seeder.describe()


def _info_hash_hex(torrent) -> str:
    from realpeers import info_hash_of

    return info_hash_of(str(torrent)).hex()
