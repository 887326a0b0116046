"""What each command imports: ``torrentcore run`` must not pull in the modules of features it does not use.

Issue 17: a fixed start-up cost was imports (the daemon's options module built for every command, RC4's
``cryptography`` imported with the peer module, ``configparser`` without a config file). Each case runs the
real entry point (``torrentcore.__main__.entry``, as ``python -m torrentcore`` does) in a subprocess to the
end, then prints the modules it imported, so a module that creeps back into the import graph fails here.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

from torrentcore_cli import cli_env

from torrentcore import bencode

#: Runs the command line given as arguments with the real entry point; prints exit code, gc state, modules.
PROBE = """
import gc, json, sys
sys.argv = ["torrentcore", *sys.argv[1:]]
from torrentcore.__main__ import entry
code = entry()
print(json.dumps({"code": code, "gc_enabled": gc.isenabled(),
                  "modules": sorted(m for m, v in sys.modules.items() if v is not None)}))
"""

#: Modules of features that a plain ``run`` (no DHT, no encryption) never uses.
NOT_FOR_RUN = ("torrentcore.daemon", "torrentcore.webui", "torrentcore.create", "torrentcore.commands.info",
               "torrentcore.commands.create", "torrentcore.commands.plugins", "torrentcore.commands.seed",
               "torrentcore.dht", "cryptography", "configparser",
               "torrentcore.magnet_fetch", "torrentcore.data_move",  # magnet links; moving/renaming data
               "torrentcore.piece_layers", "torrentcore.layer_recheck", "torrentcore.peer.hash_exchange",  # v2
               "asyncio",  # structlog's async log methods import it on first use (cli._import_structlog_without_rich)
               "importlib.metadata")  # entry points are read by torrentcore.entry_points (15-20 ms per start)


def _complete_torrent(tmp_path) -> str:
    """A one-piece torrent whose data is already in ``tmp_path/data`` (``run --no-seed`` checks it and exits)."""
    data = os.urandom(40_000)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f.bin").write_bytes(data)
    info = {b"name": b"f.bin", b"length": len(data), b"piece length": 1 << 16, b"pieces": hashlib.sha1(data).digest()}
    path = tmp_path / "f.torrent"
    path.write_bytes(bencode.encode({b"info": info}))
    return str(path)


def _probe(tmp_path, *args: str) -> dict:
    env = cli_env(tmp_path / "state")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")  # no config file of the user's
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == n or m.startswith(n + ".") for n in names)]


def test_run_imports_only_what_it_uses(tmp_path):
    torrent = _complete_torrent(tmp_path)
    result = _probe(tmp_path, "run", torrent, "-o", str(tmp_path / "data"), "--no-seed", "--quiet", "--no-dht",
                    "--encryption", "disable", "--port", "0", "--listen-host", "127.0.0.1")
    assert result["code"] == 0
    modules = result["modules"]
    # The probe saw a real run: the session, the command's module, the plugins and gevent's patches.
    assert {"torrentcore.session", "torrentcore.commands.run", "torrentcore_plugins.filesystem"} <= set(modules)
    assert _loaded(modules, NOT_FOR_RUN) == []
    assert result["gc_enabled"], "the collector stays off after start-up"


#: The run probe, counting the scans of every installed distribution's entry points (ours, and any made through
#: importlib.metadata: gevent's look-ups while it patches, pluggy's own loader).
COUNTING_PROBE = """
import json, sys
from torrentcore import entry_points
sys.argv = ["torrentcore", *sys.argv[1:]]
from torrentcore.__main__ import entry
code = entry()
print(json.dumps({"code": code, "scans": entry_points.scans,
                  "importlib.metadata": "importlib.metadata" in sys.modules}))
"""


def test_run_scans_the_entry_points_once(tmp_path):
    """gevent's 25 look-ups while it patches and the plugin manager's share one scan (torrentcore.entry_points),
    and none goes through importlib.metadata (not even imported)."""
    torrent = _complete_torrent(tmp_path)
    env = cli_env(tmp_path / "state")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    out = subprocess.run([sys.executable, "-c", COUNTING_PROBE, "run", torrent, "-o", str(tmp_path / "data"),
                          "--no-seed", "--quiet", "--no-dht", "--port", "0", "--listen-host", "127.0.0.1"],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"code": 0, "scans": 1, "importlib.metadata": False}


def test_info_imports_no_engine(tmp_path):
    torrent = _complete_torrent(tmp_path)
    result = _probe(tmp_path, "info", torrent)
    assert result["code"] == 0
    modules = result["modules"]
    assert "torrentcore.commands.info" in modules
    assert _loaded(modules, ("torrentcore.session", "torrentcore.torrent", "torrentcore.daemon",
                             "torrentcore.commands.run", "torrentcore.plugins", "requests")) == []
    assert result["gc_enabled"]


#: structlog's async log methods work although the CLI deferred structlog's import of asyncio.
ASYNC_LOG = """
import asyncio
import structlog
import torrentcore.cli as cli
cli.configure_logging("info", "json")
async def main():
    await structlog.get_logger().ainfo("from a coroutine", n=1)
asyncio.run(main())
"""


def test_structlog_async_methods_work_with_asyncio_deferred(tmp_path):
    # structlog first, as the CLI imports it: its asyncio is the stand-in, and the real one works through it.
    code = "import torrentcore.cli, sys; assert 'asyncio' not in sys.modules, 'asyncio imported'\n" + ASYNC_LOG
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert '"event": "from a coroutine"' in out.stderr and '"n": 1' in out.stderr
