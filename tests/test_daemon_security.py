"""The daemon's HTTP security: session-id handshake, Basic auth, Host header (DNS rebinding), client
whitelist, and static files that never leave the web UI's folder (``..``, encoded ``..``, symlinks, FIFOs).

The WSGI application runs on a real ``gevent.pywsgi`` server on 127.0.0.1 in this process; requests are
sent with ``http.client`` so that paths reach the server exactly as written.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import sys

import pytest

from torrentcore.daemon.server import RpcApp, client_allowed, host_allowed, serve


@pytest.fixture
def webui(tmp_path):
    root = tmp_path / "webui"
    root.mkdir()
    (root / "index.html").write_text("<h1>index</h1>")
    (root / "app.js").write_text("console.log(1)")
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    os.symlink(tmp_path, root / "up")
    os.mkfifo(root / "fifo.js")
    return root


def _server(webui, **kw):
    calls = []

    def handle(request):
        calls.append(request)
        return {"result": "success", "arguments": {"echo": request.get("method")}}

    app = RpcApp(handle, whitelist=kw.pop("whitelist", ("127.0.0.1", "::1")), webui_dir=str(webui), **kw)
    server = serve(app, "127.0.0.1", 0)
    return app, server, calls


def _request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def test_session_id_handshake_and_host_check(webui):
    app, server, calls = _server(webui, host_whitelist=("nas.lan",))
    port = server.server_port
    try:
        body = json.dumps({"method": "session-get"})
        status, headers, _ = _request(port, "POST", "/transmission/rpc", body)
        assert status == 409 and headers["X-Transmission-Session-Id"] == app.session_id
        assert calls == []
        sid = {"X-Transmission-Session-Id": app.session_id}
        status, _, data = _request(port, "POST", "/transmission/rpc", body, sid)
        assert status == 200 and json.loads(data)["arguments"]["echo"] == "session-get"
        # DNS rebinding: a name that resolves to us but is not ours is refused, before any RPC runs.
        for host in ("evil.example.com", "evil.example.com:9091", "localhost.evil.com"):
            status, _, _ = _request(port, "POST", "/transmission/rpc", body, {**sid, "Host": host})
            assert status == 421, host
        for host in ("localhost:9091", "127.0.0.1", "[::1]:9091", "nas.lan:9091", "192.168.1.5"):
            status, _, _ = _request(port, "POST", "/transmission/rpc", body, {**sid, "Host": host})
            assert status == 200, host
        assert len(calls) == 6
        # A chunked body (no Content-Length) is read too, bounded.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/transmission/rpc", body=iter([body.encode()]), headers=sid, encode_chunked=True)
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["arguments"]["echo"] == "session-get"
        conn.close()
        assert len(calls) == 7
        # Not valid JSON: an RPC answer, not an HTTP error.
        status, _, data = _request(port, "POST", "/transmission/rpc", "{nope", sid)
        assert status == 200 and "not valid JSON" in json.loads(data)["result"]
    finally:
        server.stop()


def test_basic_auth(webui):
    app, server, calls = _server(webui, username="alice", password="s3cret")
    port = server.server_port
    sid = {"X-Transmission-Session-Id": app.session_id}
    body = json.dumps({"method": "session-get"})
    good = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    bad = "Basic " + base64.b64encode(b"alice:wrong").decode()
    try:
        status, headers, _ = _request(port, "POST", "/transmission/rpc", body, sid)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
        assert _request(port, "POST", "/transmission/rpc", body, {**sid, "Authorization": bad})[0] == 401
        assert _request(port, "POST", "/transmission/rpc", body, {**sid, "Authorization": "Basic !!!"})[0] == 401
        assert _request(port, "GET", "/", None, {})[0] == 401  # the web UI is behind the same auth
        assert _request(port, "POST", "/transmission/rpc", body, {**sid, "Authorization": good})[0] == 200
        assert _request(port, "GET", "/", None, {"Authorization": good})[0] == 200
        assert len(calls) == 1
    finally:
        server.stop()


def test_client_whitelist(webui):
    app, server, calls = _server(webui, whitelist=("192.168.*.*",))
    try:
        status, _, data = _request(server.server_port, "GET", "/")
        assert status == 403 and b"whitelist" in data
    finally:
        server.stop()
    assert client_allowed("192.168.1.7", ["192.168.*.*"]) and not client_allowed("10.0.0.1", ["192.168.*.*"])
    assert client_allowed("::ffff:127.0.0.1", ["127.0.0.1"])
    assert host_allowed("[::1]:9091", []) and not host_allowed("example.org", [])


def test_static_files_stay_inside_the_webui_folder(webui):
    app, server, _ = _server(webui)
    port = server.server_port
    try:
        status, headers, data = _request(port, "GET", "/")
        assert status == 200 and data == b"<h1>index</h1>" and headers["Content-Type"].startswith("text/html")
        assert _request(port, "GET", "/app.js")[2] == b"console.log(1)"
        for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/./index.html", "/link.txt", "/up/secret.txt",
                     "/fifo.js", "//etc/passwd", "/nothing.html", "/index.html/", "/up", "/..%2fsecret.txt",
                     "/%00index.html"):
            status, _, data = _request(port, "GET", path)
            assert status == 404 and b"secret" not in data, path
        assert _request(port, "POST", "/index.html", "x")[0] == 405
    finally:
        server.stop()
    # The real package folder exists and has an index page.
    data, kind = RpcApp(lambda r: None, whitelist=("127.0.0.1",)).read_static("/")
    assert data and kind.startswith("text/html")


def test_listening_beyond_loopback_needs_auth_and_a_whitelist(tmp_path):
    env = {**os.environ, "TORRENTCORE_STATE_DIR": str(tmp_path / "state")}
    env.pop("TORRENTCORE_RPC_PASSWORD", None)
    base = [sys.executable, "-m", "torrentcore", "daemon", "--config-dir", str(tmp_path / "c"), "--rpc-port", "0",
            "--peer-port", "0", "--no-dht"]
    extras = (["--rpc-bind", "0.0.0.0"], ["--rpc-bind", "0.0.0.0", "--rpc-whitelist", "10.*"],
              ["--rpc-username", "alice"])
    procs = [subprocess.Popen(base + extra, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for extra in extras]
    for extra, p in zip(extras, procs):
        try:
            _, err = p.communicate(timeout=60)
        finally:
            p.kill()
        assert p.returncode == 2, (extra, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    res = subprocess.run([sys.executable, "-m", "torrentcore", "daemon", "--help"], capture_output=True, text=True,
                         timeout=30)
    assert "--rpc-password-file" in res.stdout and "--rpc-password " not in res.stdout


def test_daemon_with_basic_auth_from_a_file_and_from_the_environment(tmp_path):
    from daemon_harness import DaemonProcess, require_transmission_remote

    require_transmission_remote()
    secret = tmp_path / "rpc-password"
    secret.write_text("correct horse\n")
    secret.chmod(0o600)
    d = DaemonProcess(tmp_path / "file", "--rpc-username", "alice", "--rpc-password-file", str(secret))
    try:
        assert "401" in d.remote("-l", check=False)
        assert "ID" in d.remote("-n", "alice:correct horse", "-l")
        assert "401" in d.remote("-n", "alice:wrong", "-l", check=False)
    finally:
        d.kill()
    d = DaemonProcess(tmp_path / "env", "--rpc-username", "bob", env={"TORRENTCORE_RPC_PASSWORD": "from-env"})
    try:
        assert "ID" in d.remote("-n", "bob:from-env", "-l")
        assert "401" in d.remote("-l", check=False)
    finally:
        d.kill()
