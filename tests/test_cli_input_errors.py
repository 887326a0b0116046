"""Input mistakes of issue 11 through the real command: one line naming the cause and the fix, exit code 2,
no traceback.

* near-magnets (``magnet:xt=...`` without the ``?``, a bare ``magnet:``) are malformed magnet links, not
  missing files, in ``info``, ``run`` and ``seed``.
"""

from __future__ import annotations

import pytest
from realpeers import LOCALHOST, free_port
from torrentcore_cli import run_cli

HEX = "08ada5a7a6183aae1e09d831df6748d566095a10"
EXPECTED = "(expected magnet:?xt=urn:btih:<40 hex or 32 base32 characters>)"


def _one_error(proc) -> str:
    """The single stderr line of a command that failed with bad input (exit code 2)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("torrentcore: error: "), lines
    return lines[0].removeprefix("torrentcore: error: ")


def _net() -> list[str]:
    return ["--port", str(free_port()), "--listen-host", LOCALHOST, "--no-dht"]


@pytest.mark.parametrize("command", ["info", "run", "seed"])
@pytest.mark.parametrize(
    "link, why",
    [
        (f"magnet:xt=urn:btih:{HEX}", "the '?' after 'magnet:' is missing"),
        (f"MAGNET:xt=urn:btih:{HEX}&dn=x", "the '?' after 'magnet:' is missing"),
        ("magnet:", "nothing follows 'magnet:'"),
        ("magnet:?", "no 'xt=urn:btih:' info-hash"),
        ("magnet:?xt=urn:btih:1234", "invalid info-hash '1234'"),
    ],
    ids=["no-question-mark", "upper-case", "bare", "empty-query", "short-hash"],
)
def test_near_magnet_is_a_malformed_magnet_link(tmp_path, command, link, why):
    args = {"info": ["info", link], "run": ["run", link, "-o", str(tmp_path / "dl"), "--no-seed", *_net()],
            "seed": ["seed", link, "-d", str(tmp_path), *_net()]}[command]
    message = _one_error(run_cli(args, timeout=30))
    assert message == f"malformed magnet link {link!r}: {why} {EXPECTED}"
    assert not (tmp_path / "dl").exists()


def test_long_malformed_link_is_shown_shortened():
    link = "magnet:xt=urn:btih:" + HEX + "&tr=" + "x" * 5000
    message = _one_error(run_cli(["info", link]))
    assert message.startswith("malformed magnet link 'magnet:xt=urn:btih:") and len(message) < 250


def test_seed_wellformed_magnet_still_asks_for_a_torrent(tmp_path):
    message = _one_error(run_cli(["seed", f"magnet:?xt=urn:btih:{HEX}", "-d", str(tmp_path), *_net()]))
    assert message.startswith("'seed' needs a .torrent file")
