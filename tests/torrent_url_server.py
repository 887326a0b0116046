"""A small HTTP server (Python's http.server) for tests of torrent-add by URL: ``python torrent_url_server.py DIR``.

Prints its port on the first line of stdout. Paths:

* ``/files/NAME``: the file ``DIR/NAME`` (http.server's static handler, with a Content-Length);
* ``/stream/N``: N bytes of zeros without a Content-Length (the end is the connection's close);
* ``/stall``: the status line and headers, then nothing for a minute;
* ``/loop``: a redirect to itself; ``/redirect/NAME``: a redirect to ``/files/NAME``;
* ``/cookie/NAME``: ``DIR/NAME`` when the request's Cookie header holds ``session=open``, else 403;
* anything else: 404.
"""

from __future__ import annotations

import functools
import http.server
import sys
import time


class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.startswith("/files/"):
            self.path = self.path[len("/files"):]
            return super().do_GET()
        if self.path.startswith("/cookie/"):
            if "session=open" not in (self.headers.get("Cookie") or "").split("; "):
                self.send_error(403, "Forbidden")
                return None
            self.path = self.path[len("/cookie"):]
            return super().do_GET()
        if self.path.startswith("/stream/"):
            self.send_response(200)
            self.send_header("Content-Type", "application/x-bittorrent")
            self.send_header("Connection", "close")
            self.end_headers()
            left = int(self.path.rsplit("/", 1)[1])
            try:
                while left > 0:
                    n = min(left, 65536)
                    self.wfile.write(bytes(n))
                    left -= n
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading: what a size cap does
            return None
        if self.path == "/stall":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.flush()
            time.sleep(60)
            return None
        if self.path == "/loop" or self.path.startswith("/redirect/"):
            self.send_response(302)
            target = "/loop" if self.path == "/loop" else "/files/" + self.path.rsplit("/", 1)[1]
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        self.send_error(404, "File not found")
        return None

    def log_message(self, *args) -> None:
        pass


def main() -> None:
    handler = functools.partial(Handler, directory=sys.argv[1])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
