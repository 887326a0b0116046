"""HTTP servers for the web-seed tests: Debian's nginx (a real mirror) and a misbehaving Python server.

:class:`Nginx` runs ``/usr/sbin/nginx`` in the foreground with its own minimal configuration in a
temporary folder, on 127.0.0.1 and a free port, serving one folder (Range requests and keep-alive exactly
as on real mirrors). Its access log records ``URI status bytes`` for every request, so a test can count
the bytes it served.

Run as a script, this module is the misbehaving server (:class:`HostileServer` starts it in its own
process): the first path component picks the behaviour, the rest is a file under ``--root``:

* ``/wrong/PATH``: Range requests answered 206 with the right headers but corrupt bytes;
* ``/404/PATH``: always 404; ``/503/PATH``: always 503 with ``Retry-After: 3600``;
* ``/loop/PATH``: a 302 to itself; ``/ftp/PATH``: a 302 to an ``ftp://`` URL;
* ``/endless/PATH``: 206 with the right Content-Range, no Content-Length, the right bytes, and then more
  that never end (until the client hangs up, at most 256 MiB);
* ``/bep17?info_hash=..&piece=N&ranges=A-B``: a correct BEP 17 seed of the single file ``--bep17-file``
  (``--piece-length``); ``/bep17busy?...``: the same, but the first answer is a 503 with body ``1``;
* ``/hits``: JSON of requests counted per behaviour.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)

_CONF = """\
master_process off;
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    default_type application/octet-stream;
    log_format bytes '$request_uri $status $body_bytes_sent';
    access_log {dir}/access.log bytes;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    sendfile on;
    keepalive_requests 10000;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        {extra}
    }}
}}
"""


class Nginx:
    """nginx serving ``root`` on 127.0.0.1 (use as a context manager). ``limit_rate``: bytes/s per connection."""

    def __init__(self, root: str | os.PathLike, workdir: str | os.PathLike, limit_rate: int | None = None) -> None:
        from realpeers import free_port, wait_port_open

        if NGINX is None:
            raise RuntimeError("nginx is not installed")
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        extra = f"limit_rate {limit_rate};" if limit_rate else ""
        conf = self.dir / "nginx.conf"
        conf.write_text(_CONF.format(dir=self.dir, port=self.port, root=os.path.abspath(root), extra=extra))
        self.proc = subprocess.Popen([NGINX, "-p", str(self.dir), "-c", str(conf), "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=open(self.dir / "stderr.log", "wb"))
        if not wait_port_open(self.port, timeout=10):
            self.stop()
            raise RuntimeError(f"nginx did not start: {(self.dir / 'stderr.log').read_text(errors='replace')}"
                               f"{self.error_log()}")

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/``."""
        return f"http://127.0.0.1:{self.port}/"

    def access(self) -> list[tuple[str, int, int]]:
        """``(uri, status, body bytes)`` of every request so far."""
        path = self.dir / "access.log"
        out = []
        for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
            parts = line.rsplit(" ", 2)
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                out.append((parts[0], int(parts[1]), int(parts[2])))
        return out

    def bytes_sent(self) -> int:
        """Body bytes of every request served so far."""
        return sum(b for _uri, _status, b in self.access())

    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __enter__(self) -> Nginx:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class HostileServer:
    """This module's misbehaving server in its own process, on 127.0.0.1 and a free port."""

    def __init__(self, root: str | os.PathLike, workdir: str | os.PathLike, bep17_file: str | None = None,
                 piece_length: int = 0) -> None:
        from realpeers import wait_until

        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port_file = self.dir / "port"
        args = [sys.executable, __file__, "--root", os.fspath(root), "--port-file", str(self.port_file)]
        if bep17_file:
            args += ["--bep17-file", bep17_file, "--piece-length", str(piece_length)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(self.dir / "stderr.log", "wb"))
        if not wait_until(lambda: self.port_file.exists() and self.port_file.read_text().strip(), timeout=10):
            self.stop()
            raise RuntimeError("the hostile server did not start")
        self.port = int(self.port_file.read_text())

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def hits(self) -> dict[str, int]:
        import requests

        return requests.get(self.url("/hits"), timeout=5).json()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- the misbehaving server (runs in its own process, no gevent) ------------------------------------

_RANGE = re.compile(r"bytes=(\d+)-(\d+)")
ENDLESS_LIMIT = 256 << 20


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root = "."
    bep17_file: str | None = None
    piece_length = 0
    hits: Counter = Counter()
    lock = threading.Lock()

    def log_message(self, *args) -> None:
        pass

    def _count(self, mode: str) -> None:
        with self.lock:
            self.hits[mode] += 1

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _file_range(self, rel: str) -> tuple[int, int, int, str] | None:
        path = os.path.join(self.root, unquote(rel))
        m = _RANGE.match(self.headers.get("Range", ""))
        if not os.path.isfile(path) or not m:
            self._send(404)
            return None
        return int(m.group(1)), int(m.group(2)), os.path.getsize(path), path

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        parts = urlsplit(self.path)
        mode, _, rel = parts.path.lstrip("/").partition("/")
        if mode == "hits":
            with self.lock:
                self._send(200, json.dumps(dict(self.hits)).encode(), {"Content-Type": "application/json"})
            return
        self._count(mode)
        if mode == "404":
            self._send(404, b"not here")
        elif mode == "503":
            self._send(503, b"busy", {"Retry-After": "3600"})
        elif mode == "loop":
            self._send(302, headers={"Location": self.path})
        elif mode == "ftp":
            self._send(302, headers={"Location": f"ftp://127.0.0.1/{rel}"})
        elif mode == "wrong":
            got = self._file_range(rel)
            if got:
                start, end, size, _path = got
                body = bytes((i * 7 + 3) & 0xFF for i in range(end - start + 1))
                self._send(206, body, {"Content-Range": f"bytes {start}-{end}/{size}"})
        elif mode == "endless":
            got = self._file_range(rel)
            if got:
                start, end, size, path = got
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.send_header("Connection", "close")
                self.end_headers()
                with open(path, "rb") as f:  # the right bytes first, then more and more
                    f.seek(start)
                    data = f.read(end - start + 1)
                chunk = b"\0" * 65536
                try:
                    self.wfile.write(data)
                    for _ in range(ENDLESS_LIMIT // len(chunk)):
                        self.wfile.write(chunk)
                except OSError:
                    pass
                self.close_connection = True
        elif mode in ("bep17", "bep17busy"):
            self._bep17(mode, parse_qs(parts.query))
        else:
            self._send(404)

    def _bep17(self, mode: str, query: dict) -> None:
        if mode == "bep17busy" and self.hits[mode] == 1:
            self._send(503, b"1")
            return
        try:
            piece = int(query["piece"][0])
            query["info_hash"]  # noqa: B018 - required (its value is the torrent's; one torrent is served)
            start, end = (int(x) for x in query.get("ranges", ["0-%d" % (self.piece_length - 1)])[0].split("-"))
        except (KeyError, ValueError):
            self._send(400)
            return
        with open(self.bep17_file, "rb") as f:
            f.seek(piece * self.piece_length)
            data = f.read(self.piece_length)
        self._send(200, data[start : end + 1])


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--bep17-file")
    parser.add_argument("--piece-length", type=int, default=0)
    args = parser.parse_args()
    _Handler.root, _Handler.bep17_file, _Handler.piece_length = args.root, args.bep17_file, args.piece_length
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(tmp, args.port_file)
    deadline = time.monotonic() + 600  # never outlives a test run by much, even if orphaned
    threading.Thread(target=lambda: (time.sleep(max(0.0, deadline - time.monotonic())), os._exit(0)),
                     daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
