"""Web seeds after the start: a file selected later is fetched from them, and ``ws=`` survives the metadata.

* A torrent whose only source is an nginx web seed downloads one selected file; once that selection is
  complete the web-seed workers have nothing to do and end. Selecting the other file (the API's
  ``set_file_priorities``, which the daemon's file selection calls) starts them again: it downloads too,
  byte for byte.
* A magnet link's ``ws=`` web seeds are kept as ``url-list`` in the .torrent saved once its metadata arrived.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from realpeers import assert_same_tree, make_payload, peers_fixture  # noqa: F401  (fixture "peers")
from torrentcore_cli import torrentcore_factory  # noqa: F401  (fixture "torrentcore")
from webseed_servers import NGINX, Nginx

from torrentcore.create import create_torrent

needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (scripts/test.sh installs it)")
ROOT = Path(__file__).resolve().parent.parent


def _run_script(code: str, timeout: float = 120) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, proc.stdout + proc.stderr
    return json.loads(lines[-1])


@needs_nginx
def test_a_file_selected_later_is_fetched_from_the_web_seed(tmp_path):
    www = tmp_path / "www"
    root = Path(make_payload(www, {"a.bin": 600_000, "b.bin": 700_000}, seed=51, name="pair"))
    with Nginx(www, tmp_path / "nginx") as nginx:
        data, meta = create_torrent(root, web_seeds=[nginx.url], piece_length=32 * 1024)
        torrent = tmp_path / "pair.torrent"
        torrent.write_bytes(data)
        out = tmp_path / "dl"
        code = textwrap.dedent(f"""
            import json, time
            import torrentcore
            torrentcore.patch()
            from torrentcore import Session, SessionConfig, TorrentConfig

            def wait_complete(handle, seconds):
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline and not handle.status().complete:
                    for _ in session.events(timeout=0.2):
                        pass
                return handle.status()

            with Session(SessionConfig(listen_port=0, listen_hosts=("127.0.0.1",), dht=False)) as session:
                h = session.add_torrent({str(torrent)!r}, {str(out)!r}, TorrentConfig(selected_files=(0,), seed=True))
                first = wait_complete(h, 60)
                # The event loop runs on for a while: the web-seed workers see the selection complete and end
                # (an idle worker looks again every 0.5 s, webseed.IDLE_WAIT).
                settle = time.monotonic() + 3
                while time.monotonic() < settle:
                    for _ in session.events(timeout=0.2):
                        pass
                h.set_file_priorities([1, 1])
                second = wait_complete(h, 30)
            print(json.dumps({{"first": [first.complete, first.wanted_bytes, first.have_bytes],
                              "second": [second.complete, second.wanted_bytes, second.have_bytes]}}))
        """)
        result = _run_script(code)
        access = nginx.access()
    assert result["first"][0] and result["first"][1] < meta.total_length, result
    assert result["second"][0] and result["second"][2] == meta.total_length, (result, access)
    assert_same_tree(root, out / "pair")
    assert any(uri.endswith("/b.bin") for uri, _status, _n in access), access


def test_magnet_ws_web_seeds_are_kept_in_the_saved_torrent(tmp_path, peers, torrentcore):
    """A magnet link's ``ws=`` web seeds are written to the .torrent saved when its metadata arrives (as
    ``url-list``; libtorrent too keeps them as the torrent's url seeds), so a later run from that file
    still has them. The metadata and data come from a libtorrent seeder; the web seed is not reachable."""
    from urllib.parse import quote

    import libtorrent as lt

    from torrentcore import bencode, metainfo
    from torrentcore.metadata import torrent_file

    root = Path(make_payload(tmp_path / "seed", 300_000, seed=52, name="ws.bin"))
    data, meta = create_torrent(root, piece_length=32 * 1024)
    torrent = tmp_path / "ws.torrent"
    torrent.write_bytes(data)
    seeder = peers.libtorrent("seeder")
    seeder.add_torrent(torrent, tmp_path / "seed", seed=True)
    ws = ["http://127.0.0.1:9/mirror/ws.bin", "https://127.0.0.1:9/other/"]
    link = f"magnet:?xt=urn:btih:{meta.info_hash_hex}" + "".join(f"&ws={quote(u, safe='')}" for u in ws)
    assert list(lt.parse_magnet_uri(link).url_seeds) == ws  # libtorrent's reading of the same link
    run = torrentcore.run(link, tmp_path / "out", peers=[seeder.endpoint])
    assert run.wait(60) == 0, run.describe()
    assert (tmp_path / "out" / "ws.bin").read_bytes() == root.read_bytes()
    saved = tmp_path / "out" / "ws.bin.torrent"
    again = metainfo.load(str(saved))
    assert again.url_list == ws and again.info_hash == meta.info_hash, bencode.decode(saved.read_bytes()).keys()
    # The daemon keeps the same bytes in its database (torrent_file with the torrent's url_list).
    assert metainfo.parse(torrent_file(meta.raw_info, [], url_list=ws)).url_list == ws
