"""Each atheris target in fuzz/ runs briefly (fixed seed, fixed run count) and finds no crash.

This keeps the targets working; real fuzzing runs longer by hand (fuzz/README.md).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys

import pytest

FUZZ = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "fuzz")
sys.path.insert(0, FUZZ)
import runner  # noqa: E402  (fuzz/runner.py imports atheris only to run a target)

#: libFuzzer runs per target in CI: a few seconds each.
RUNS = {"bencode": 1500, "metainfo": 3000, "messages": 3000, "mse": 1500, "tracker": 3000, "peer": 600,
        "utp": 2000}

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None,
    reason="atheris is not installed (pip install atheris; it ships wheels for CPython 3.8-3.11 on Linux)",
)


@pytest.mark.parametrize("target", sorted(RUNS))
def test_fuzz_target_runs_clean(target, tmp_path):
    corpus = tmp_path / "corpus"
    out = subprocess.run(
        [
            sys.executable, os.path.join(FUZZ, f"fuzz_{target}.py"),
            f"-runs={RUNS[target]}", "-seed=1", "-rss_limit_mb=2048", "-timeout=20",
            f"-artifact_prefix={tmp_path}/", f"--corpus={corpus}",
        ],
        capture_output=True, text=True, timeout=180,
    )
    crashes = [p.name for p in tmp_path.iterdir() if p.name != "corpus"]
    assert out.returncode == 0 and not crashes, f"{crashes}\n{out.stderr[-4000:]}"
    assert f"Done {RUNS[target]} runs" in out.stderr
    # The working corpus was seeded (the conformance torrents for bencode and metainfo).
    conformance = target in ("bencode", "metainfo")
    seeds = {hashlib.sha1(s).hexdigest() for s in runner.conformance_seeds()} if conformance else set()
    assert {f"seed-{h}" for h in seeds} <= {p.name for p in corpus.iterdir()}
    assert len(list(corpus.iterdir())) >= max(4, len(seeds))
