"""The daemon's HTTP side: a WSGI application served by ``gevent.pywsgi`` (no HTTP parsing of our own).

Every request passes, in this order (Transmission's own order):

1. the client whitelist (``--rpc-whitelist``: addresses or ``*`` patterns such as ``192.168.*.*``): 403;
2. HTTP Basic auth when a username is set (the password from a file or an environment variable, never
   the command line; compared in constant time): 401 with ``WWW-Authenticate``;
3. the Host header against DNS rebinding (CVE-2018-5702): ``localhost``, any IP address, or a name of
   ``--rpc-host-whitelist``; anything else gets 421;
4. for ``/transmission/rpc``, the ``X-Transmission-Session-Id`` CSRF handshake: a request without the
   current id gets 409 and the id in that header.

Static files of the web UI are served from the package folder ``torrentcore/webui/`` only: the path is
resolved and must stay inside it; ``..``, symlinks, and anything not a regular file are 404.
"""

from __future__ import annotations

import base64
import fnmatch
import hmac
import ipaddress
import json
import mimetypes
import os
import secrets
import stat
from collections.abc import Callable, Iterable
from typing import Any

import structlog

log = structlog.get_logger(__name__)

RPC_PATH = "/transmission/rpc"
#: Largest RPC request body read (a metainfo of a few MiB, base64-encoded).
MAX_BODY = 64 << 20
#: The web UI's package folder.
WEBUI_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "webui")

Respond = Callable[[str, list[tuple[str, str]]], Any]


def host_allowed(host_header: str, whitelist: Iterable[str]) -> bool:
    """Whether a Host header (port stripped) is ``localhost``, an IP address, or a whitelisted name."""
    host = host_header.strip()
    if host.startswith("["):
        host = host[1:host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    host = host.lower()
    if host in ("localhost", "localhost."):
        return True
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    return any(fnmatch.fnmatchcase(host, pattern.lower()) for pattern in whitelist)


def client_allowed(address: str, whitelist: Iterable[str]) -> bool:
    """Whether a client address matches the whitelist (exact addresses or ``*`` patterns)."""
    if address.startswith("::ffff:"):
        address = address[7:]
    return any(fnmatch.fnmatchcase(address, pattern.strip()) for pattern in whitelist if pattern.strip())


class RpcApp:
    """The WSGI application: security checks, the RPC at :data:`RPC_PATH`, the web UI's files at ``/``."""

    def __init__(self, handle_rpc: Callable[[Any], dict | None], whitelist: Iterable[str],
                 host_whitelist: Iterable[str] = (), username: str | None = None, password: str | None = None,
                 webui_dir: str = WEBUI_DIR, session_id: str | None = None) -> None:
        self.handle_rpc = handle_rpc
        self.whitelist = tuple(whitelist)
        self.host_whitelist = tuple(host_whitelist)
        self.username = username
        self.password = password
        self.webui_dir = os.path.realpath(webui_dir)
        self.session_id = session_id or secrets.token_urlsafe(36)

    def __call__(self, environ: dict, start_response: Respond) -> Iterable[bytes]:
        try:
            return self._serve(environ, start_response)
        except Exception:  # noqa: BLE001 - never a traceback to the client
            log.exception("rpc request failed")
            return _plain(start_response, "500 Internal Server Error", "internal error")

    def _serve(self, environ: dict, start_response: Respond) -> Iterable[bytes]:
        if not client_allowed(environ.get("REMOTE_ADDR", ""), self.whitelist):
            return _plain(start_response, "403 Forbidden",
                          "403: Forbidden. Unauthorized IP Address. Add it to --rpc-whitelist.")
        if self.username is not None and not self._authorized(environ.get("HTTP_AUTHORIZATION", "")):
            return _plain(start_response, "401 Unauthorized", "401: Unauthorized",
                          [("WWW-Authenticate", 'Basic realm="torrentcore"')])
        if not host_allowed(environ.get("HTTP_HOST", ""), self.host_whitelist):
            return _plain(start_response, "421 Misdirected Request",
                          "421: Misdirected Request. Unknown Host header; add the name to --rpc-host-whitelist.")
        path = environ.get("PATH_INFO", "/")
        if path == RPC_PATH or path == RPC_PATH + "/":
            return self._rpc(environ, start_response)
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _plain(start_response, "405 Method Not Allowed", "405: Method Not Allowed")
        if path in ("/transmission", "/transmission/", "/transmission/web", "/transmission/web/"):
            start_response("301 Moved Permanently", [("Location", "/"), ("Content-Length", "0")])
            return [b""]
        return self._static(path, environ, start_response)

    def _authorized(self, header: str) -> bool:
        kind, _, value = header.partition(" ")
        if kind.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        ok_user = hmac.compare_digest(user.encode(), (self.username or "").encode())
        ok_password = hmac.compare_digest(password.encode(), (self.password or "").encode())
        return ok_user and ok_password

    def _rpc(self, environ: dict, start_response: Respond) -> Iterable[bytes]:
        if environ.get("HTTP_X_TRANSMISSION_SESSION_ID") != self.session_id:
            return _plain(start_response, "409 Conflict",
                          f"<h1>409: Conflict</h1><p>Your request had an invalid session-id header.</p>"
                          f"<p><code>X-Transmission-Session-Id: {self.session_id}</code></p>",
                          [("X-Transmission-Session-Id", self.session_id)], content_type="text/html")
        if environ.get("REQUEST_METHOD") != "POST":
            return _plain(start_response, "405 Method Not Allowed", "405: use POST")
        try:
            length = int(environ["CONTENT_LENGTH"]) if environ.get("CONTENT_LENGTH") else None
        except ValueError:
            length = -1
        if length is not None and (length < 0 or length > MAX_BODY):
            return _plain(start_response, "413 Payload Too Large", "413: request too large")
        # Without a Content-Length (a chunked body) read at most MAX_BODY + 1 bytes.
        body = environ["wsgi.input"].read(MAX_BODY + 1 if length is None else length) if length != 0 else b""
        if len(body) > MAX_BODY:
            return _plain(start_response, "413 Payload Too Large", "413: request too large")
        try:
            request = json.loads(body)
        except (ValueError, RecursionError):
            request = None
        if request is None:
            answer: dict | None = {"result": "the request is not valid JSON", "arguments": {}}
        elif isinstance(request, list):  # a JSON-RPC 2.0 batch
            answers = [a for a in (self.handle_rpc(r) for r in request) if a is not None]
            return self._json(start_response, answers)
        else:
            answer = self.handle_rpc(request)
        if answer is None:
            start_response("204 No Content", [("X-Transmission-Session-Id", self.session_id)])
            return [b""]
        return self._json(start_response, answer)

    def _json(self, start_response: Respond, answer: Any) -> Iterable[bytes]:
        data = json.dumps(answer, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        start_response("200 OK", [("Content-Type", "application/json; charset=UTF-8"),
                                  ("Content-Length", str(len(data))), ("X-Transmission-Session-Id", self.session_id)])
        return [data]

    def _static(self, path: str, environ: dict, start_response: Respond) -> Iterable[bytes]:
        data, kind = self.read_static(path)
        if data is None:
            return _plain(start_response, "404 Not Found", "404: Not Found")
        headers = [("Content-Type", kind), ("Content-Length", str(len(data))), ("X-Content-Type-Options", "nosniff"),
                   ("X-Frame-Options", "DENY"), ("Cache-Control", "no-cache")]
        start_response("200 OK", headers)
        return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [data]

    def read_static(self, path: str) -> tuple[bytes | None, str]:
        """The bytes and content type of a web UI file, or (None, "") when ``path`` is not one: nothing
        outside :data:`WEBUI_DIR`, no ``..``, no symlink at any component, regular files only."""
        if path in ("", "/"):
            path = "/index.html"
        parts = path.split("/")[1:]
        if not parts or any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
            return None, ""
        root = self.webui_dir
        here = root
        for part in parts:
            here = os.path.join(here, part)
            try:
                st = os.lstat(here)
            except OSError:
                return None, ""
            if stat.S_ISLNK(st.st_mode):
                return None, ""
        real = os.path.realpath(here)
        if os.path.commonpath([real, root]) != root or real == root:
            return None, ""
        try:
            fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            return None, ""
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None, ""
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read(MAX_BODY)
        finally:
            os.close(fd)
        kind = mimetypes.guess_type(real)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind in ("application/javascript", "application/json"):
            kind += "; charset=utf-8"
        return data, kind


def _plain(start_response: Respond, status: str, text: str, headers: list[tuple[str, str]] | None = None,
           content_type: str = "text/plain") -> Iterable[bytes]:
    data = text.encode("utf-8")
    start_response(status, [("Content-Type", f"{content_type}; charset=utf-8"), ("Content-Length", str(len(data))),
                            *(headers or [])])
    return [data]


def serve(app: RpcApp, host: str, port: int):
    """A started ``gevent.pywsgi.WSGIServer`` for ``app`` on ``host:port`` (port 0: any free port)."""
    import socket

    from gevent.pywsgi import WSGIHandler, WSGIServer

    class Handler(WSGIHandler):
        def handle(self) -> None:
            # pywsgi sends the headers and the body apart: without TCP_NODELAY the body of a small answer
            # waits for the client's delayed ACK (40 ms per request measured on loopback, torrent-add).
            try:
                self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            super().handle()

    server = WSGIServer((host, port), app, log=None, error_log=None, handler_class=Handler)
    server.start()
    return server


__all__ = ["RpcApp", "RPC_PATH", "WEBUI_DIR", "host_allowed", "client_allowed", "serve"]
