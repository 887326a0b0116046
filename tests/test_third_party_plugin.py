"""A third-party plugin installed the way a user installs one: ``examples/torrentcore-jsonl`` in a fresh venv.

The venv gets torrentcore (built from this work tree) and the example package, each with
``pip install --no-deps --no-build-isolation``; third-party dependencies (gevent, pluggy, ...) come from
the test's own environment through a ``.pth`` file (like ``--system-site-packages``, but it also works
when the tests themselves run in a venv), so nothing is downloaded. That venv's ``torrentcore`` must
list ``jsonl`` with its distribution and version, and a real download from a libtorrent seeder must
write the JSON-lines events the example documents.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest
import realpeers as rp

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "torrentcore-jsonl"
#: What a source distribution of torrentcore holds (copied, so building never writes into the work tree).
SOURCES = ("torrentcore", "plugins", "setup.cfg", "setup.py", "README.md", "LICENSE")


def _pip_install(python: Path, source: Path) -> None:
    out = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", str(source)],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, f"pip install {source} failed:\n{out.stdout}\n{out.stderr}"


#: The module-scoped venv below is built once: keep the module in one shard (tests/conftest.py).
SHARD_WHOLE_MODULE = True


@pytest.fixture(scope="module")
def plugin_venv(tmp_path_factory) -> Path:
    """A venv holding torrentcore and torrentcore-jsonl (and nothing else of its own); its bin folder."""
    base = tmp_path_factory.mktemp("venv")
    started = time.monotonic()
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    deps = [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)]
    Path(purelib, "_test_dependencies.pth").write_text("\n".join(deps) + "\n")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for part in ("torrentcore", "jsonl"):
        (base / part).mkdir()
    for name in SOURCES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, base / "torrentcore" / name, ignore=ignore)
        else:
            shutil.copy2(src, base / "torrentcore" / name)
    shutil.copytree(EXAMPLE, base / "jsonl", dirs_exist_ok=True, ignore=ignore)
    _pip_install(python, base / "torrentcore")
    _pip_install(python, base / "jsonl")
    print(f"venv with torrentcore and torrentcore-jsonl set up in {time.monotonic() - started:.1f} s")
    return env_dir / "bin"


def test_venv_uses_its_own_installs(plugin_venv):
    code = "import torrentcore, torrentcore_jsonl; print(torrentcore.__file__); print(torrentcore_jsonl.__file__)"
    out = subprocess.run([str(plugin_venv / "python"), "-c", code], capture_output=True, text=True, timeout=30,
                         cwd=plugin_venv)
    assert out.returncode == 0, out.stderr
    venv_root = str(plugin_venv.parent)
    assert all(line.startswith(venv_root) for line in out.stdout.split()), out.stdout


def test_plugins_lists_jsonl_with_dist_and_version(plugin_venv):
    tc = str(plugin_venv / "torrentcore")
    out = subprocess.run([tc, "plugins", "--json"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    listing = {p["name"]: p for p in json.loads(out.stdout)["plugins"]}
    jsonl = listing["jsonl"]
    assert (jsonl["dist"], jsonl["version"], jsonl["state"]) == ("torrentcore-jsonl", "0.1.0", "loaded")
    assert jsonl["kinds"] == ["reporter", "options"]
    assert jsonl["module"] == "torrentcore_jsonl"
    assert set(jsonl["settings"]["jsonl"]) == {"path", "progress_interval"}
    assert listing["console"]["dist"] == "torrentcore"
    text = subprocess.run([tc, "plugins"], capture_output=True, text=True, timeout=30).stdout
    line = next(line for line in text.splitlines() if line.startswith("plugin    jsonl "))
    assert line.split()[2:] == ["loaded", "reporter,", "options", "torrentcore-jsonl", "0.1.0"], line
    # Disabled by name, it is still listed (and its settings are gone).
    out = subprocess.run([tc, "plugins", "--no-plugin", "jsonl", "--json"], capture_output=True, text=True, timeout=30)
    data = json.loads(out.stdout)
    assert {p["name"]: p["state"] for p in data["plugins"]}["jsonl"] == "disabled"
    assert "jsonl" not in data["settings"]


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_real_download_writes_jsonl_events(plugin_venv, tmp_path):
    root = rp.make_payload(str(tmp_path / "seed"), 3 * 1024 * 1024, seed="jsonl")
    torrent = str(tmp_path / "t.torrent")
    rp.make_torrent(root, [], piece_length=64 * 1024, out=torrent)  # 48 pieces
    events_file = tmp_path / "events.jsonl"
    tc = str(plugin_venv / "torrentcore")
    with rp.LibtorrentPeer(name="seed") as seeder:
        seeder.add_torrent(torrent, os.path.dirname(root), seed=True)
        out = subprocess.run(
            [tc, "run", torrent, "-o", str(tmp_path / "dl"), "--no-seed", "--port", str(rp.free_port()),
             "--listen-host", rp.LOCALHOST, "--peer", f"{rp.LOCALHOST}:{seeder.port}",
             "--plugin-opt", f"jsonl.path={events_file}", "--plugin-opt", "jsonl.progress_interval=0"],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )
    assert out.returncode == 0, out.stderr
    rp.assert_same_tree(root, tmp_path / "dl" / "payload")
    events = _events(events_file)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "finish", kinds
    assert events[0]["num_pieces"] == 48 and events[0]["total_bytes"] == 3 * 1024 * 1024
    assert sorted(e["index"] for e in events if e["event"] == "piece_verified") == list(range(48))
    connected = [e for e in events if e["event"] == "peer_connected"]
    assert connected and connected[0]["peer"] == f"{rp.LOCALHOST}:{seeder.port}"
    assert kinds.count("completed") == 1
    assert kinds.index("completed") > max(i for i, k in enumerate(kinds) if k == "piece_verified")
    assert "progress" in kinds
    assert events[-1]["exit_code"] == 0 and events[-1]["pieces_done"] == 48
    info_hash = rp.info_hash_of(torrent).hex()
    assert all(e["info_hash"] == info_hash and e["torrent"] == "payload" for e in events)
    assert not [e for e in events if e["event"] == "error" and e["fatal"]]
    # The console reporter still printed its summary on stdout: both reporters ran.
    assert "payload: done." in out.stdout

    # Again with the default path (stdout) and --quiet: stdout is nothing but JSON lines. The data is
    # complete, so the run ends at once (no network): start, finish.
    out = subprocess.run([tc, "run", torrent, "-o", str(tmp_path / "dl"), "--no-seed", "--quiet"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [e["event"] for e in lines] == ["start", "finish"], out.stdout


def test_progress_lines_are_throttled_but_state_changes_always_show():
    import importlib.util
    import io

    from torrentcore.hookspec import ProgressSnapshot

    spec = importlib.util.spec_from_file_location("torrentcore_jsonl_src", EXAMPLE / "torrentcore_jsonl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.JsonLines(io.StringIO(), close=False, progress_interval=3600.0)

    def snap(state: str) -> ProgressSnapshot:
        return ProgressSnapshot(name="x", state=state, total_bytes=10, have_bytes=0, pieces_done=0, num_pieces=1)

    due = [out.progress_due(snap(s)) for s in ("checking", "downloading", "downloading", "downloading", "seeding")]
    assert due == [True, True, False, False, True]
    assert module.JsonLines(io.StringIO(), close=False, progress_interval=0.0).progress_due(snap("downloading"))
