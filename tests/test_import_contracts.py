"""The import-linter contracts of setup.cfg hold on the tree, and do catch a back-import."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _lint(tree: Path) -> subprocess.CompletedProcess:
    # lint-imports reads setup.cfg in the working folder and imports the packages from there.
    code = ("import sys; sys.path.insert(0, '.'); "
            "from importlinter.cli import lint_imports_command; lint_imports_command()")
    return subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True, timeout=120)


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "tree"
    copy.mkdir()
    shutil.copy(ROOT / "setup.cfg", copy / "setup.cfg")
    shutil.copytree(ROOT / "torrentcore", copy / "torrentcore", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "plugins", copy / "torrentcore_plugins", ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_the_tree_keeps_its_contracts(tree_copy):
    result = _lint(tree_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Contracts: \d+ kept, 0 broken\.", result.stdout), result.stdout


def test_a_back_import_from_the_peer_layer_breaks_the_layers(tree_copy):
    peer = tree_copy / "torrentcore" / "peer" / "peer.py"
    text = peer.read_text()
    back = "if TYPE_CHECKING:  # pragma: no cover\n    from ..torrent import Torrent  # noqa: F401\n"
    peer.write_text(text.replace("if TYPE_CHECKING:  # pragma: no cover\n", back, 1))
    result = _lint(tree_copy)
    assert result.returncode != 0, result.stdout
    assert "torrentcore.peer.peer -> torrentcore.torrent" in result.stdout, result.stdout


def test_a_default_plugin_reaching_into_the_engine_breaks_its_contract(tree_copy):
    console = tree_copy / "torrentcore_plugins" / "console.py"
    console.write_text(console.read_text() + "\nfrom torrentcore import session  # noqa: E402,F401\n")
    result = _lint(tree_copy)
    assert result.returncode != 0, result.stdout
    assert "torrentcore_plugins.console -> torrentcore.session" in result.stdout, result.stdout
