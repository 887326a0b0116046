"""Ctrl-C: trackers are told ``stopped``, the resume record is written, exit code 130."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
from urllib.parse import parse_qs, urlsplit

import realpeers as rp
from torrentcore_cli import resume_record

from torrentcore import bencode, metainfo


class _Tracker(http.server.BaseHTTPRequestHandler):
    events: list[str] = []
    peer_port = 0

    def do_GET(self):  # noqa: N802 - http.server's naming
        query = parse_qs(urlsplit(self.path).query)
        type(self).events.append(query.get("event", [""])[0])
        peers = socket.inet_aton("127.0.0.1") + self.peer_port.to_bytes(2, "big")
        body = bencode.encode({"interval": 1800, "peers": peers})
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_sigint_sends_stopped_saves_resume_and_exits_130(tmp_path):
    root = rp.make_payload(str(tmp_path / "seed"), 24 * 1024 * 1024, seed="int")
    server = http.server.HTTPServer(("127.0.0.1", 0), _Tracker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/announce"
    torrent_path = str(tmp_path / "t.torrent")
    rp.make_torrent(root, [url], piece_length=256 * 1024, out=torrent_path)
    out_dir = tmp_path / "dl"
    try:
        with rp.LibtorrentPeer(name="seed", ignore_limits_on_local_network=False,
                               upload_rate_limit=2_000_000) as seeder:
            _Tracker.peer_port = seeder.port
            seeder.add_torrent(torrent_path, os.path.dirname(root), seed=True)
            proc = subprocess.Popen(
                [sys.executable, "-m", "torrentcore", "run", torrent_path, "-o", str(out_dir), "--no-seed",
                 "--port", str(rp.free_port())],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            target = out_dir / "payload"
            assert rp.wait_until(lambda: target.exists() and target.stat().st_size > 1024 * 1024, 30), (
                "download never started"
            )
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=30)
    finally:
        server.shutdown()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted" in stdout
    assert _Tracker.events[0] == "started" and _Tracker.events[-1] == "stopped"
    record = resume_record(os.environ["TORRENTCORE_STATE_DIR"], out_dir, metainfo.load(torrent_path))
    assert record.is_file(), "no resume record in the state folder"
    assert os.listdir(out_dir) == ["payload"], "nothing of ours beside the user's data"
