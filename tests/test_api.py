"""The public Python API, used as a script would: in a process of its own that never mentions gevent.

Each script runs with ``python -c`` against real libtorrent seeders on 127.0.0.1, prints one JSON line of
what it saw, and the test checks that line and the files on disk. Every wait in a script is bounded.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from realpeers import assert_same_tree, make_payload, make_torrent, peers_fixture  # noqa: F401  (fixture "peers")

ROOT = Path(__file__).resolve().parent.parent
KiB = 1024
MiB = 1024 * KiB


def run_script(code: str, timeout: float = 180) -> dict:
    """Run ``code`` with a fresh interpreter (no gevent in sight of the script); return its last JSON line."""
    assert "gevent" not in code, "an API script must not need gevent"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, proc.stdout + proc.stderr
    return json.loads(lines[-1])


@pytest.fixture
def two_seeded(tmp_path, peers):
    """Two torrents (single-file and multi-file) and a libtorrent seeder for each."""
    one = make_payload(tmp_path / "seed1", 6 * MiB + 1234, seed=41, name="single.bin")
    many = make_payload(tmp_path / "seed2", {"a.bin": 3 * MiB, "sub/b.bin": 2 * MiB + 77, "c.txt": 5000}, seed=42,
                        name="album")
    t1, t2 = tmp_path / "one.torrent", tmp_path / "many.torrent"
    make_torrent(one, [], piece_length=64 * KiB, out=t1)
    make_torrent(many, [], piece_length=32 * KiB, out=t2)
    s1 = peers.libtorrent("seeder1")
    s1.add_torrent(t1, tmp_path / "seed1", seed=True)
    s2 = peers.libtorrent("seeder2")
    s2.add_torrent(t2, tmp_path / "seed2", seed=True)
    return {"roots": (one, many), "torrents": (t1, t2), "seeders": (s1, s2)}


def test_a_script_downloads_two_torrents_pauses_one_and_removes_it_with_its_data(tmp_path, two_seeded):
    (one, many), (t1, t2), (s1, s2) = (tuple(map(Path, two_seeded["roots"])), two_seeded["torrents"],
                                       two_seeded["seeders"])
    out = tmp_path / "dl"
    out.mkdir()
    (out / "mine.txt").write_text("the user's own file stays")
    code = textwrap.dedent(f"""
        import json, time
        import torrentcore
        torrentcore.patch()
        from torrentcore import Session, SessionConfig, TorrentConfig, events

        seen, states = {{}}, []
        with Session(SessionConfig(listen_port=0, listen_hosts=("127.0.0.1",), dht=False)) as session:
            a = session.add_torrent({str(t1)!r}, {str(out)!r}, TorrentConfig(peers=({s1.endpoint!r},), seed=True))
            b = session.add_torrent({str(t2)!r}, {str(out)!r}, TorrentConfig(peers=({s2.endpoint!r},), seed=True))
            again = session.add_torrent({str(t1)!r}, {str(out)!r})
            b.pause()
            deadline = time.monotonic() + 120
            paused_state = None
            while time.monotonic() < deadline and not (a.status().complete and b.status().complete):
                for event in session.events(timeout=0.5):
                    seen[event.kind] = seen.get(event.kind, 0) + 1
                if a.status().complete and paused_state is None:
                    paused_state = b.status()
                    b.resume()
            statuses = [a.status(), b.status()]
            found = session.find(a.info_hash.hex()) is a
            names = [h.name for h in session.torrents()]
            b.remove(delete_data=True)
            after_remove = [h.name for h in session.torrents()]
            total = session.status()
        print(json.dumps({{
            "same_handle": again is a, "found": found, "names": names, "after_remove": after_remove,
            "complete": [s.complete for s in statuses], "states": [s.state for s in statuses],
            "paused_state": paused_state.state, "paused_downloaded": paused_state.downloaded,
            "paused_peers": paused_state.peers, "seen": seen, "torrents": total.torrents,
        }}))
    """)
    result = run_script(code)
    print(result)
    assert result["same_handle"] and result["found"], result
    assert result["names"] == [one.name, many.name], result
    assert result["complete"] == [True, True], result
    assert result["paused_state"] == "paused" and result["paused_downloaded"] == 0 and result["paused_peers"] == 0
    for kind in ("added", "start", "progress", "piece_verified", "peer_connected", "completed", "paused", "resumed"):
        assert result["seen"].get(kind), (kind, result["seen"])
    assert result["seen"]["added"] == 2, "adding an info-hash again returns the handle, not a second torrent"
    assert result["after_remove"] == [one.name] and result["torrents"] == 1, result
    assert_same_tree(one, out / one.name)
    assert not (out / many.name).exists(), "remove(delete_data=True) deletes that torrent's files"
    assert (out / "mine.txt").read_text() == "the user's own file stays"


def test_the_streaming_reader_through_the_handle(tmp_path, peers):
    film = make_payload(tmp_path / "seed", 8 * MiB + 5, seed=43)
    torrent = tmp_path / "film.torrent"
    make_torrent(film, [], piece_length=64 * KiB, out=torrent)
    seeder = peers.libtorrent("seeder", ignore_limits_on_local_network=False, upload_rate_limit=1_000_000)
    seeder.add_torrent(torrent, tmp_path / "seed", seed=True)
    code = textwrap.dedent(f"""
        import json
        import torrentcore
        torrentcore.patch()
        from torrentcore import Session, SessionConfig, TorrentConfig

        with Session(SessionConfig(listen_port=0, listen_hosts=("127.0.0.1",), dht=False)) as session:
            config = TorrentConfig(peers=({seeder.endpoint!r},))
            h = session.add_torrent({str(torrent)!r}, {str(tmp_path / "dl")!r}, config)
            with h.open(0, readahead=256 * 1024, timeout=60) as f:
                at = f.seek(f.length * 6 // 10)
                data = f.read(1024 * 1024)
            s = h.status()
        print(json.dumps({{"at": at, "size": len(data), "pieces_done": s.pieces_done, "num_pieces": s.num_pieces,
                           "head": data[:64].hex()}}))
    """)
    result = run_script(code)
    expected = Path(film).read_bytes()
    at = result["at"]
    assert at == len(expected) * 6 // 10 and result["size"] == MiB
    assert bytes.fromhex(result["head"]) == expected[at : at + 64]
    assert result["pieces_done"] < result["num_pieces"], "the read returned before the whole file arrived"


def test_a_session_refuses_to_start_unpatched():
    code = ("import json\nfrom torrentcore import Session\ntry:\n    Session()\n"
            "except RuntimeError as e:\n    print(json.dumps({'error': str(e)}))")
    assert "torrentcore.patch()" in run_script(code)["error"]


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, re.S)


def test_the_api_documents_every_public_name():
    import torrentcore

    text = (ROOT / "docs" / "api.md").read_text()
    for name in torrentcore.__all__:
        if name.startswith("__"):
            continue
        assert f"`{name}" in text, f"docs/api.md does not mention {name}"
        assert getattr(torrentcore, name).__doc__, f"{name} has no docstring"


def test_docs_api_examples_run_against_a_real_seeder(tmp_path, two_seeded):
    one, (t1, t2), (s1, s2) = Path(two_seeded["roots"][0]), two_seeded["torrents"], two_seeded["seeders"]
    blocks = _python_blocks((ROOT / "docs" / "api.md").read_text())
    assert len(blocks) >= 5, "docs/api.md lost its examples"
    for n, block in enumerate(blocks):
        folder = tmp_path / f"example{n}"
        folder.mkdir()
        # SEEDER serves the first torrent; where the second one is used too, its seeder is added to the peers.
        prelude = (f"TORRENT_FILE = {str(t1)!r}\nSECOND_TORRENT = {str(t2)!r}\nDOWNLOAD_DIR = {str(folder)!r}\n"
                   f"SEEDER = {s1.endpoint!r}\n")
        if "SECOND_TORRENT" in block:
            block = block.replace("peers=(SEEDER,)", f"peers=(SEEDER, {s2.endpoint!r})")
        code = prelude + block + "\nprint('{}')\n"
        run_script(code)
    assert_same_tree(one, tmp_path / "example1" / one.name)
