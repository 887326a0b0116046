"""Each atheris target in fuzz/ runs briefly (fixed seed, fixed run count) and finds no crash.

This keeps the targets working; real fuzzing runs longer by hand (fuzz/README.md).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
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
    # libFuzzer ran the inputs asked for and ended normally ("Done N runs"). N can pass -runs by a few (seen: 602 of
    # 600 for peer, in 1 CI run of about 20).
    done = re.search(r"^Done (\d+) runs", out.stderr, re.M)
    assert done and int(done.group(1)) >= RUNS[target], out.stderr[-2000:]
    # The working corpus was seeded (the conformance torrents for bencode and metainfo).
    conformance = target in ("bencode", "metainfo")
    seeds = {hashlib.sha1(s).hexdigest() for s in runner.conformance_seeds()} if conformance else set()
    assert {f"seed-{h}" for h in seeds} <= {p.name for p in corpus.iterdir()}
    assert len(list(corpus.iterdir())) >= max(4, len(seeds))


_CRASHES_ON_BOOM = '''
import os, sys
sys.path.insert(0, {fuzz!r})
import runner

def test_one_input(data: bytes) -> None:
    if data == b"boom":
        raise RuntimeError("the input that crashes")

runner.main("probe", test_one_input, [b"seed"])
'''


def test_a_crash_file_is_replayed_as_the_readme_says(tmp_path):
    """fuzz/README.md: ``python fuzz/fuzz_X.py crash-<sha1>`` runs that one input (it used to stop on "Not a
    directory": the corpus folder was passed beside the file). A crashing input fails the replay."""
    good = tmp_path / ("crash-" + hashlib.sha1(b"i0e").hexdigest())
    good.write_bytes(b"i0e")
    out = subprocess.run([sys.executable, os.path.join(FUZZ, "fuzz_bencode.py"), str(good)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-4000:]
    assert f"Executed {good}" in out.stderr and "Not a directory" not in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [good.name]  # no corpus folder, no artifact
    probe = tmp_path / "probe.py"
    probe.write_text(_CRASHES_ON_BOOM.format(fuzz=os.path.abspath(FUZZ)))
    boom, fine = tmp_path / "boom", tmp_path / "fine"
    boom.write_bytes(b"boom")
    fine.write_bytes(b"fine")
    out = subprocess.run([sys.executable, str(probe), str(fine), str(boom)], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode != 0 and "the input that crashes" in out.stdout + out.stderr, out.stderr[-4000:]
    assert f"Executed {fine}" in out.stderr


def test_replay_names_that_do_not_fit_get_one_line(tmp_path):
    (tmp_path / "in").write_bytes(b"x")
    (tmp_path / "dir").mkdir()
    assert runner.replay_inputs(["t", "-runs=1", str(tmp_path / "in")]) == [str(tmp_path / "in")]
    assert runner.replay_inputs(["t", "-runs=1", str(tmp_path / "dir")]) == []
    with pytest.raises(SystemExit, match="no such input file or corpus folder: .*nope"):
        runner.replay_inputs(["t", str(tmp_path / "nope")])
    with pytest.raises(SystemExit, match="not both"):
        runner.replay_inputs(["t", str(tmp_path / "in"), str(tmp_path / "dir")])
