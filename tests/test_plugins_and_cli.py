"""The plugin manager (entry points, choosing by name, disabling) and the CLI shell."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import SHARED
from realpeers import wait_until

from torrentcore import bencode, plugins
from torrentcore.errors import PluginError

CORPUS = os.path.join(SHARED, "conformance", "libtorrent_test_torrents")


def tc(*args, env=None, cwd=None, timeout=60):
    """Run the torrentcore CLI as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "torrentcore", *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout,
    )


# --- plugin manager ------------------------------------------------------------------------------


def test_default_plugins_come_from_entry_points():
    pm = plugins.get_plugin_manager()
    names = dict(pm.list_name_plugin())
    assert {"rarest-first", "filesystem", "memory", "console"} <= set(names)
    assert names["rarest-first"].__name__ == "torrentcore_plugins.rarest_first"
    assert names["memory"].__name__ == "torrentcore_plugins.memory"
    assert set(plugins.strategies(pm)) == {"rarest-first", "sequential", "random"}
    assert set(plugins.storages(pm)) == {"filesystem", "memory"}


def test_plugins_package_is_not_installed_as_a_generic_name():
    import torrentcore_plugins

    assert "plugins" not in sys.modules or sys.modules["plugins"].__file__ != torrentcore_plugins.__file__
    assert os.path.basename(os.path.dirname(torrentcore_plugins.__file__)) in ("plugins", "torrentcore_plugins")


def test_unknown_strategy_names_the_choices():
    pm = plugins.get_plugin_manager()
    choices = r"\(available: random, rarest-first, sequential\)"
    with pytest.raises(PluginError, match=r"unknown piece strategy 'fastest' " + choices):
        plugins.choose_strategy(pm, "fastest")
    with pytest.raises(PluginError, match=r"unknown storage backend 's3' \(available: filesystem, memory\)"):
        plugins.choose_storage(pm, "s3")


def test_disable_by_name():
    pm = plugins.get_plugin_manager(disabled=["rarest-first"])
    assert set(plugins.strategies(pm)) == set()
    with pytest.raises(PluginError, match="available: none"):
        plugins.choose_strategy(pm, "rarest-first")


def test_disable_unknown_plugin_is_an_error():
    with pytest.raises(PluginError, match="cannot disable unknown plugin 'nope'.*console"):
        plugins.get_plugin_manager(disabled=["nope"])


THIRD_PARTY = textwrap.dedent(
    '''
    from torrentcore.hookspec import hookimpl

    class Reverse:
        def next_pieces(self, swarm, peer_has):
            return (i for i in reversed(range(swarm.num_pieces)) if swarm.wanted(i))

    @hookimpl
    def torrentcore_piece_strategies():
        return {"reverse": lambda torrent, options: Reverse()}

    @hookimpl
    def torrentcore_add_options(parser):
        parser.add_argument("--shout", action="store_true")
    '''
)


@pytest.fixture
def third_party(tmp_path):
    """A plugin 'installed' as a distribution with a torrentcore entry point (as pip would)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "tc_reverse.py").write_text(THIRD_PARTY)
    dist = site / "tc_reverse-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tc-reverse\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[torrentcore]\nreverse = tc_reverse\n")
    env = dict(os.environ, PYTHONPATH=str(site) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env


def test_third_party_plugin_found_through_entry_points(third_party):
    out = tc("plugins", env=third_party)
    assert out.returncode == 0, out.stderr
    assert "strategy  reverse" in out.stdout
    assert "plugin    reverse" in out.stdout
    # Its option is accepted by `run`, and it can be disabled by name.
    assert "--shout" in tc("run", "-h", env=third_party).stdout
    out = tc("plugins", "--disable", "reverse", env=third_party)
    assert "strategy  reverse" not in out.stdout and "disabled" in out.stdout


def test_plugin_module_by_import_name(tmp_path):
    (tmp_path / "my_tc_plugin.py").write_text(THIRD_PARTY)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    out = tc("plugins", "--plugin", "my_tc_plugin", env=env)
    assert out.returncode == 0, out.stderr
    assert "strategy  reverse" in out.stdout


def test_unknown_strategy_exit_code_2(tmp_path):
    torrent = os.path.join(CORPUS, "base.torrent")
    out = tc("run", torrent, "-o", str(tmp_path / "dl"), "--strategy", "fastest", "--no-seed")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "torrentcore: error: unknown piece strategy 'fastest' (available: random, rarest-first, sequential)"
    )
    assert not (tmp_path / "dl").exists()


# --- CLI shell -----------------------------------------------------------------------------------


def test_version_and_help():
    from torrentcore import __version__

    out = tc("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"torrentcore {__version__}"
    out = tc("--help")
    assert out.returncode == 0
    for cmd in ("info", "run", "seed", "create", "plugins"):
        assert cmd in out.stdout
        assert tc(cmd, "-h").returncode == 0


def test_info_text_and_json():
    path = os.path.join(SHARED, "conformance", "real_torrents", "sintel.torrent")
    out = tc("info", path)
    assert out.returncode == 0, out.stderr
    assert "info-hash:    08ada5a7a6183aae1e09d831df6748d566095a10" in out.stdout
    assert "Sintel/Sintel.en.srt" in out.stdout
    assert "tracker tier 0: udp://tracker.leechers-paradise.org:6969" in out.stdout
    data = json.loads(tc("info", path, "--json").stdout)
    assert data["info_hash"] == "08ada5a7a6183aae1e09d831df6748d566095a10"
    assert data["total_size"] == 129302391
    assert len(data["files"]) == 11
    assert data["pieces"] == 987 and data["piece_length"] == 131072
    assert data["private"] is False
    assert data["created_by"].startswith("WebTorrent")


@pytest.mark.parametrize(
    "name", ["string.torrent", "invalid_info.torrent", "v2_deep_recursion.torrent", "many_pieces.torrent"]
)
def test_info_on_malformed_torrent_is_one_line_exit_2(name):
    out = tc("info", os.path.join(CORPUS, name))
    assert out.returncode == 2
    assert out.stderr.startswith("torrentcore: error: ")
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert out.stdout == ""


def test_info_v2_only_shows_its_v2_hash():
    v2 = "95e04d0c4bad94ab206efa884666fd89777dbe4f7bd9945af1829037a85c6192"  # libtorrent 2.1.1's (MANIFEST)
    out = tc("info", os.path.join(CORPUS, "v2_only.torrent"))
    assert out.returncode == 0, out.stderr
    assert f"info-hash v2: {v2}  (v2-only torrent; {v2[:40]} on the wire)" in out.stdout
    data = json.loads(tc("info", "--json", os.path.join(CORPUS, "v2_only.torrent")).stdout)
    assert (data["info_hash_v1"], data["info_hash_v2"], data["meta_version"]) == (None, v2, 2)


def test_info_hybrid_shows_both_hashes():
    out = tc("info", "--json", os.path.join(CORPUS, "v2_hybrid.torrent"))
    data = json.loads(out.stdout)
    assert data["info_hash_v1"] == data["info_hash"] == "514c76c1f27ec61ca8b37851bcd1cbf0b26cf120"
    assert data["info_hash_v2"] == "518fbaf39b37020c896e8768a967da6d76bbd5ef7a02c761021b65a72c6cfa11"
    text = tc("info", os.path.join(CORPUS, "v2_hybrid.torrent")).stdout
    assert "info-hash v2: 518fbaf39b37020c896e8768a967da6d76bbd5ef7a02c761021b65a72c6cfa11" in text


def test_info_missing_file_and_debug_traceback(tmp_path):
    out = tc("info", str(tmp_path / "nope.torrent"))
    assert out.returncode == 2 and "cannot read" in out.stderr and "Traceback" not in out.stderr
    out = tc("--debug", "info", str(tmp_path / "nope.torrent"))
    assert out.returncode == 2 and "Traceback" in out.stderr


def _crafted(files, name=b"evil"):
    info = {
        b"name": name,
        b"piece length": 16384,
        b"pieces": b"\x00" * 20,
        b"files": [{b"length": 10, b"path": p} for p in files],
    }
    return bencode.encode({b"announce": b"http://127.0.0.1:1/announce", b"info": info})


def test_info_on_crafted_path_traversal(tmp_path):
    torrent = tmp_path / "evil.torrent"
    torrent.write_bytes(
        _crafted(
            [
                [b"..", b"..", b"etc", b"passwd"],
                [b"/abs", b"x"],
                [b"a\\..\\..\\b"],
                [b"", b"."],
                [b"dup"],
                [b"dup"],
                [b"dup", b"inner"],
            ]
        )
    )
    data = json.loads(tc("info", str(torrent), "--json").stdout)
    paths = [f["path"] for f in data["files"]]
    assert len(paths) == len(set(paths)) == 7
    for p in paths:
        assert p.startswith("evil/")
        assert ".." not in p.split("/") and "" not in p.split("/") and "\\" not in p
    assert "evil/_/_/etc/passwd" in paths
    assert "evil/dup" in paths and "evil/dup.1" in paths


def test_info_name_that_is_dot_dot_becomes_info_hash(tmp_path):
    torrent = tmp_path / "evil.torrent"
    torrent.write_bytes(_crafted([[b"x"]], name=b".."))
    data = json.loads(tc("info", str(torrent), "--json").stdout)
    assert data["name"] == data["info_hash"]


def test_magnet_info():
    link = "magnet:?xt=urn:btih:08ada5a7a6183aae1e09d831df6748d566095a10&dn=Sintel&tr=udp%3A%2F%2Fexplodie.org%3A6969"
    data = json.loads(tc("info", link, "--json").stdout)
    assert data == {
        "magnet": True,
        "info_hash": "08ada5a7a6183aae1e09d831df6748d566095a10",
        "info_hash_v2": None,
        "name": "Sintel",
        "trackers": [["udp://explodie.org:6969"]],
        "web_seeds": [],
        "peers": [],
        "peer_sources": {"trackers": ["udp://explodie.org:6969"], "dht": "allowed unless the metadata says private",
                         "pex": "allowed unless the metadata says private", "magnet_peers": []},
    }


def test_json_logs_are_json(tmp_path):
    torrent = os.path.join(CORPUS, "base.torrent")
    # No peers, no reachable tracker: stop it with SIGINT once it listens, and read its JSON logs.
    err_path = tmp_path / "stderr.log"
    with open(err_path, "w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "torrentcore", "--log-format", "json", "--log-level", "info", "run", torrent,
             "-o", str(tmp_path / "out"), "--no-seed", "--port", "0", "--quiet"],
            stdout=subprocess.PIPE, stderr=err_file, text=True,
        )
        try:
            assert wait_until(lambda: '"listening"' in err_path.read_text(), 30), err_path.read_text()
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 130
    lines = [ln for ln in err_path.read_text().splitlines() if ln.strip()]
    assert lines, "no logs"
    events = [json.loads(ln) for ln in lines]
    assert any(e.get("event") == "listening" for e in events)
    assert all("level" in e and "timestamp" in e for e in events)


def test_run_with_a_magnet_link_says_what_is_missing(tmp_path):
    # No tracker, no x.pe= peer, no --peer and no DHT: nowhere to fetch the metadata from (exit 2, one line).
    link = "magnet:?xt=urn:btih:08ada5a7a6183aae1e09d831df6748d566095a10"
    out = tc("run", link, "-o", str(tmp_path / "dl"), "--no-seed", "--no-dht")
    assert out.returncode == 2
    assert out.stderr.startswith("torrentcore: error: the magnet link names no tracker (tr=) and no peer (x.pe=)")
    assert out.stderr.count("\n") == 1 and not (tmp_path / "dl").exists()
    # `seed` cannot check data against a magnet link.
    out = tc("seed", link, "-d", str(tmp_path))
    assert out.returncode == 2
    assert out.stderr.startswith("torrentcore: error: 'seed' needs a .torrent file")
