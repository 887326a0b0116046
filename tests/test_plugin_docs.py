"""docs/plugins.md stays in step with the hookspec, and its example plugin works against a real download."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import realpeers as rp

from torrentcore import hookspec

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "plugins.md"
EXAMPLE_MARKER = "<!-- example: reporter"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_plugin_docs", ROOT / "scripts" / "gen_plugin_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_section_is_up_to_date():
    gen = _generator()
    current = DOC.read_text(encoding="utf-8")
    wanted = gen.render(current, (ROOT / "torrentcore" / "hookspec.py").read_text(encoding="utf-8"))
    assert current == wanted, "docs/plugins.md is out of date with torrentcore/hookspec.py: " \
                              "run python scripts/gen_plugin_docs.py"
    assert subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_plugin_docs.py"), "--check"],
                          timeout=60).returncode == 0


def test_every_hook_and_type_is_documented():
    text = DOC.read_text(encoding="utf-8")
    hooks = [name for name in dir(hookspec) if hasattr(getattr(hookspec, name), "torrentcore_spec")]
    assert len(hooks) >= 13
    for name in hooks:
        assert f"#### `{name}(" in text, name
        first_line = (getattr(hookspec, name).__doc__ or "").strip().splitlines()[0]
        assert first_line in text, name
    for name in ("Setting", "PieceStrategy", "Storage", "SwarmView", "PeerInfo", "ProgressSnapshot"):
        assert f"#### `{name}`" in text, name
    for name in ("console_line", "serve_console_lines"):  # functions plugins call
        assert f"#### `{name}(" in text, name
        assert name in hookspec.__all__, name


def test_documented_options_exist():
    help_text = subprocess.run([sys.executable, "-m", "torrentcore", "run", "-h"], capture_output=True, text=True,
                               timeout=60).stdout
    for option in ("-p NAME", "--plugin", "--no-plugin", "--disable", "--plugin-opt", "--config"):
        assert option in help_text, option
        assert option.split()[0] in DOC.read_text(encoding="utf-8"), option


def test_readme_links_the_guide():
    assert "docs/plugins.md" in (ROOT / "README.md").read_text(encoding="utf-8")


def _example_code() -> str:
    text = DOC.read_text(encoding="utf-8")
    after = text[text.index(EXAMPLE_MARKER):]
    match = re.search(r"```python\n(.*?)```", after, re.S)
    assert match, "no python block after the example marker"
    return match.group(1)


def test_example_reporter_runs_against_a_real_download(tmp_path):
    code = _example_code()
    assert len(code.splitlines()) <= 35
    (tmp_path / "piecelog.py").write_text(code)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "torrentcore", "plugins", "-p", "piecelog", "--json"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    info = {p["name"]: p for p in json.loads(out.stdout)["plugins"]}["piecelog"]
    assert info["kinds"] == ["reporter", "options"] and info["state"] == "loaded"

    root = rp.make_payload(str(tmp_path / "seed"), 2 * 1024 * 1024, seed="docs")
    torrent = str(tmp_path / "t.torrent")
    rp.make_torrent(root, [], piece_length=64 * 1024, out=torrent)  # 32 pieces
    with rp.LibtorrentPeer(name="seed") as seeder:
        seeder.add_torrent(torrent, os.path.dirname(root), seed=True)
        out = subprocess.run(
            [sys.executable, "-m", "torrentcore", "run", torrent, "-o", str(tmp_path / "dl"), "--no-seed",
             "--quiet", "--port", str(rp.free_port()), "--listen-host", rp.LOCALHOST,
             "--peer", f"{rp.LOCALHOST}:{seeder.port}", "-p", "piecelog", "--plugin-opt", "piecelog.every=4"],
            capture_output=True, text=True, timeout=120, env=env,
        )
    assert out.returncode == 0, out.stderr
    rp.assert_same_tree(root, tmp_path / "dl" / "payload")
    lines = [line for line in out.stderr.splitlines() if line.startswith("piecelog: ")]
    verified = [line for line in lines if line.endswith(" verified")]
    assert len(verified) == 32 // 4, lines
    assert all(line.startswith("piecelog: payload: piece ") for line in verified)
    assert re.fullmatch(r"piecelog: 32 pieces in [0-9.]+ s, exit 0", lines[-1]), lines
