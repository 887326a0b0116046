"""torrentcore.entry_points reads the installed entry points as importlib.metadata does, without importing it.

Each case builds folders of distributions on a ``sys.path`` of its own (duplicates across folders, egg-info
folders, an egg's EGG-INFO, comments and blank lines, a distribution without entry points) and compares the
scan with ``importlib.metadata.entry_points()`` on the same path: same groups, names, values, in the same order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from importlib import metadata

import pytest

from torrentcore import entry_points


def _dist(folder, name: str, entry_points_txt: str | None, metadata_name: str | None = None) -> None:
    d = folder / name
    d.mkdir(parents=True)
    meta = "PKG-INFO" if name.endswith(("egg-info", "EGG-INFO")) else "METADATA"
    default = name.rpartition(".")[0].partition("-")[0]
    (d / meta).write_text(f"Metadata-Version: 2.1\nName: {metadata_name or default}\nVersion: 1.0\n\nBody: x\n")
    if entry_points_txt is not None:
        (d / "entry_points.txt").write_text(textwrap.dedent(entry_points_txt))


def _theirs() -> list[tuple[str, str, str]]:
    eps = metadata.entry_points()
    return [(ep.group, ep.name, ep.value) for g in sorted(eps.groups) for ep in eps.select(group=g)]


def _ours() -> list[tuple[str, str, str]]:
    eps = entry_points.installed()
    return [(ep.group, ep.name, ep.value) for g in sorted(eps.groups) for ep in eps.select(group=g)]


@pytest.fixture
def site(tmp_path, monkeypatch):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c.egg"
    _dist(a, "alpha-1.0.dist-info", """
        # a comment
        [torrentcore]
        alpha = alpha_mod:plugin

        [console_scripts]
        alpha-cli = alpha_mod.cli:main
        """)
    _dist(a, "Beta_Pkg-2.0.dist-info", None)  # no entry points at all
    _dist(a, "gamma.egg-info",
          "[torrentcore]\ngamma=gamma_mod\n[torrentcore.opt_in]\nextra = gamma_mod.extra : thing\n")
    _dist(a, "Delta.Thing-0.3.dist-info", "[gevent.plugins.monkey.will_patch_all]\nd = delta:hook\n")
    _dist(b, "alpha-2.0.dist-info", "[torrentcore]\nalpha = shadowed:plugin\n")  # the first alpha wins
    # The same entry point name in another distribution: both listed, as importlib.metadata lists them.
    _dist(b, "epsilon-1.dist-info", "[torrentcore]\nalpha = epsilon_mod\neps = epsilon_mod\n")
    _dist(c, "EGG-INFO", "[torrentcore]\nfrom_egg = egg_mod\n", metadata_name="zeta")
    monkeypatch.setattr(sys, "path", [str(a), str(b), str(c), str(tmp_path / "missing")])
    monkeypatch.setattr(entry_points, "_scan", None)
    return tmp_path


def test_same_entry_points_in_the_same_order_as_importlib_metadata(site):
    ours = _ours()
    assert ours == _theirs()
    assert ("torrentcore", "alpha", "alpha_mod:plugin") in ours
    assert ("torrentcore", "alpha", "shadowed:plugin") not in ours  # alpha 2.0 is behind alpha 1.0 on sys.path
    assert ("torrentcore", "from_egg", "egg_mod") in ours


def test_the_installed_environment_reads_the_same(monkeypatch):
    monkeypatch.setattr(entry_points, "_scan", None)
    assert _ours() == _theirs()


def test_entry_point_fields_load_and_distribution(site, monkeypatch):
    eps = entry_points.installed()
    extra = next(iter(eps.select(group="torrentcore.opt_in", name="extra")))
    assert (extra.module, extra.attr) == ("gamma_mod.extra", "thing")
    assert extra.dist.name == "gamma" and extra.dist.version == "1.0"
    (site / "a" / "gamma_mod").mkdir()
    (site / "a" / "gamma_mod" / "__init__.py").write_text("")
    (site / "a" / "gamma_mod" / "extra.py").write_text("class thing:\n    class inner:\n        pass\n")
    assert extra.load().__name__ == "thing"
    nested = entry_points.EntryPoint("n", "gamma_mod.extra:thing.inner", "g")
    assert nested.load().__name__ == "inner"
    assert entry_points.EntryPoint("m", "gamma_mod", "g").load().__name__ == "gamma_mod"
    with pytest.raises(ValueError, match="malformed value"):
        entry_points.EntryPoint("bad", "not a module!", "g").load()
    sys.modules.pop("gamma_mod.extra", None)
    sys.modules.pop("gamma_mod", None)


def test_scanned_again_only_when_a_folder_changes(site):
    before = entry_points.scans
    entry_points.installed()
    entry_points.installed()
    assert entry_points.scans == before + 1
    _dist(site / "b", "new_one-1.0.dist-info", "[torrentcore]\nnew = new_mod\n")  # changes b's mtime
    os.utime(site / "b", ns=(1, 1))  # (a coarse clock could leave it unchanged)
    assert ("torrentcore", "new", "new_mod") in _ours()
    assert entry_points.scans == before + 2


def test_a_zip_on_the_path_is_left_to_importlib_metadata(site, monkeypatch):
    archive = site / "dists.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("zipped-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: zipped\nVersion: 1.0\n")
        z.writestr("zipped-1.0.dist-info/entry_points.txt", "[torrentcore]\nzipped = zipped_mod\n")
    monkeypatch.setattr(sys, "path", [str(archive), *sys.path])
    ours = _ours()
    assert ours == _theirs()
    assert ("torrentcore", "zipped", "zipped_mod") in ours


#: Imports the CLI module (which monkey-patches) with a gevent plugin installed on the path; prints what it saw.
GEVENT_PROBE = """
import json, sys
import torrentcore.cli
import delta
print(json.dumps({"events": delta.EVENTS, "importlib.metadata": "importlib.metadata" in sys.modules}))
"""


def test_gevent_plugins_are_still_called_while_it_patches(tmp_path):
    """gevent's look-ups go to the stand-in module during patch_all: its plugins still run, importlib.metadata
    is never imported."""
    _dist(tmp_path, "Delta.Thing-0.3.dist-info", "[gevent.plugins.monkey.will_patch_all]\nd = delta:hook\n")
    (tmp_path / "delta.py").write_text("EVENTS = []\n\ndef hook(event):\n    EVENTS.append(type(event).__name__)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])])}
    out = subprocess.run([sys.executable, "-c", GEVENT_PROBE], capture_output=True, text=True, timeout=60,
                         env=env, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"events": ["GeventWillPatchAllEvent"], "importlib.metadata": False}
