"""MSE/PE against real clients on 127.0.0.1: libtorrent and aria2c forced to RC4 as seeders and leechers,
Transmission 3.00 (encryption required) as seeder, qBittorrent-nox 4.5 (encryption required; optional, skipped
when not installed) both ways, ``--encryption require`` refusing plaintext peers (proved from the wire),
``prefer`` still downloading from plaintext-only peers.

Every download is compared byte for byte with the payload; no test asserts on timing. libtorrent forced to
``pe_forced`` with ``allowed_enc_level = pe_rc4`` closes any connection that is not RC4-encrypted, so a
finished transfer with it is itself proof of RC4; torrentcore's ``peer connected`` log says
``encrypted=true`` as well, and libtorrent's peer flags are checked while connected.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path

import gevent
import libtorrent as lt
import pytest
import requests
from opentracker_fixture import opentracker_factory  # noqa: F401  (fixture "opentracker")
from realpeers import (
    LOCALHOST,
    RealPeers,
    assert_same_tree,
    free_port,
    make_payload,
    make_torrent,
    peers_fixture,  # noqa: F401  (fixture "peers")
    wait_until,
)
from torrentcore_cli import (  # noqa: F401  (fixture "torrentcore")
    TorrentcoreLauncher,
    TorrentcoreProcess,
    torrentcore_factory,
    wait_tracker_count,
)

from torrentcore.peer import messages as msg

needs_aria2 = pytest.mark.skipif(shutil.which("aria2c") is None, reason="aria2c is not installed")
needs_opentracker = pytest.mark.skipif(shutil.which("opentracker") is None, reason="opentracker is not installed")
needs_transmission = pytest.mark.skipif(
    shutil.which("transmission-daemon") is None or shutil.which("transmission-remote") is None,
    reason="transmission-daemon / transmission-remote are not installed")

KiB = 1 << 10
MiB = 1 << 20
RUN_TIMEOUT = 40
#: libtorrent settings: RC4-encrypted connections only, both ways.
LT_FORCED_RC4 = {
    "out_enc_policy": int(lt.enc_policy.pe_forced),
    "in_enc_policy": int(lt.enc_policy.pe_forced),
    "allowed_enc_level": int(lt.enc_level.rc4),
}
#: libtorrent settings: plaintext only, both ways (an MSE handshake is closed at once).
LT_PLAINTEXT_ONLY = {
    "out_enc_policy": int(lt.enc_policy.pe_disabled),
    "in_enc_policy": int(lt.enc_policy.pe_disabled),
}
#: aria2c options: ARC4-encrypted connections only.
ARIA2_RC4 = ["--bt-require-crypto=true", "--bt-min-crypto-level=arc4"]
PLAIN_HEADER = b"\x13BitTorrent protocol"


def _payload(tmp_path: Path, size: int, seed: int, trackers=(), piece_length: int = 64 * KiB) -> tuple[str, Path]:
    root = make_payload(tmp_path / "seed", size, seed=seed, name="data.bin")
    torrent = tmp_path / "t.torrent"
    make_torrent(root, list(trackers), piece_length=piece_length, out=torrent)
    return root, torrent


def _finished(run: TorrentcoreProcess, context: str) -> None:
    rc = run.wait(RUN_TIMEOUT)
    full = f"{run.describe()}\n{context}"
    assert rc == 0, full
    summary = run.summary()
    assert summary is not None and summary["verdict"] == "done", full
    assert "Traceback" not in run.stderr, full


def _connected(run: TorrentcoreProcess) -> list[dict]:
    return run.events("peer connected")


def _rc4_flags_seen(peer, pid_prefix: bytes = b"-TC") -> list[bool]:
    """For each connected torrentcore peer of libtorrent ``peer``: whether libtorrent says it is RC4."""
    return [bool(p.flags & lt.peer_info.rc4_encrypted) for p in peer.handle.get_peer_info()
            if bytes(p.pid.to_bytes()).startswith(pid_prefix)]


def _start_seed(torrentcore: TorrentcoreLauncher, torrent: Path, data: Path, *extra: str) -> TorrentcoreProcess:
    seeder = torrentcore.seed(torrent, data, "--seed-ratio", "0", "--seed-time", "5", *extra, name="seeder")
    seeder.wait_listening()
    return seeder


# --------------------------------------------------------------------------------------------------
# libtorrent, forced RC4
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["require", "prefer"])
def test_download_from_libtorrent_forced_rc4(tmp_path, peers: RealPeers, torrentcore, policy):
    root, torrent = _payload(tmp_path, 4 * MiB + 4321, seed=61)
    seeder = peers.libtorrent("seeder", **LT_FORCED_RC4)
    seeder.add_torrent(torrent, tmp_path / "seed", seed=True)
    seen: list[bool] = []
    watcher = gevent.spawn(lambda: wait_until(lambda: seen.extend(_rc4_flags_seen(seeder)) or seen, RUN_TIMEOUT))

    run = torrentcore.run(torrent, tmp_path / "out", "--encryption", policy, peers=[seeder.endpoint])
    _finished(run, peers.describe())
    watcher.kill()
    assert_same_tree(root, tmp_path / "out" / "data.bin", run.describe())
    connected = _connected(run)
    assert connected and all(e["encrypted"] is True for e in connected), connected
    assert seen and all(seen), f"libtorrent's rc4_encrypted flags for our connections: {seen}"
    served = sum(t["uploaded"] for t in seeder.transfers() if t["pid"].startswith(b"-TC"))
    assert served >= 4 * MiB, seeder.transfers()


@pytest.mark.parametrize("policy", ["require", "prefer"])
def test_libtorrent_forced_rc4_downloads_from_us(tmp_path, peers: RealPeers, torrentcore, policy):
    root, torrent = _payload(tmp_path, 3 * MiB + 999, seed=62)
    # Rate-limited so the connection lives long enough for libtorrent's peer flags to be read.
    seeder = _start_seed(torrentcore, torrent, tmp_path / "seed", "--encryption", policy, "--max-upload-rate", "1M")
    leecher = peers.libtorrent("leecher", **LT_FORCED_RC4)
    leecher.add_torrent(torrent, tmp_path / "leech")
    leecher.connect_peer(LOCALHOST, seeder.listening_port())
    seen: list[bool] = []
    watcher = gevent.spawn(lambda: wait_until(lambda: seen.extend(_rc4_flags_seen(leecher)) or seen, 30))
    assert leecher.wait_finished(timeout=30), peers.describe() + seeder.describe()
    watcher.kill()
    assert_same_tree(root, tmp_path / "leech" / "data.bin", seeder.describe())
    connected = _connected(seeder)
    assert connected and all(e["encrypted"] is True for e in connected), connected
    assert any(e["incoming"] for e in connected), connected
    assert seen and all(seen), f"libtorrent's rc4_encrypted flags: {seen}"
    assert "Traceback" not in seeder.stderr


# --------------------------------------------------------------------------------------------------
# aria2c, --bt-require-crypto --bt-min-crypto-level=arc4
# --------------------------------------------------------------------------------------------------


@needs_aria2
def test_download_from_aria2_requiring_rc4(tmp_path, peers: RealPeers, torrentcore):
    root, torrent = _payload(tmp_path, 3 * MiB + 17, seed=63, piece_length=256 * KiB)
    aria2 = peers.aria2(torrent, tmp_path / "seed", seed=True, extra_args=ARIA2_RC4)
    assert aria2.wait_listening(timeout=15), peers.describe()

    run = torrentcore.run(torrent, tmp_path / "out", "--encryption", "require", peers=[aria2.endpoint])
    _finished(run, peers.describe())
    assert_same_tree(root, tmp_path / "out" / "data.bin", run.describe())
    connected = _connected(run)
    assert connected and all(e["encrypted"] is True for e in connected), connected


@needs_aria2
@needs_opentracker
def test_aria2_requiring_rc4_downloads_from_us(tmp_path, peers: RealPeers, opentracker, torrentcore):
    tracker = opentracker()
    root, torrent = _payload(tmp_path, 2 * MiB + 5, seed=64, trackers=[tracker.http_url], piece_length=32 * KiB)
    info_hash = make_torrent(root, [tracker.http_url], piece_length=32 * KiB)[1]
    tracker.add(info_hash)
    seeder = _start_seed(torrentcore, torrent, tmp_path / "seed", "--encryption", "require")
    assert wait_tracker_count(tracker, info_hash, seeders=1), seeder.describe()
    leecher = peers.aria2(torrent, tmp_path / "leech", extra_args=ARIA2_RC4)
    assert leecher.wait(timeout=30) == 0, peers.describe() + seeder.describe()
    assert_same_tree(root, tmp_path / "leech" / "data.bin", peers.describe())
    connected = _connected(seeder)
    assert connected and all(e["encrypted"] is True for e in connected), connected


# --------------------------------------------------------------------------------------------------
# --encryption require refuses plaintext peers, seen on the wire
# --------------------------------------------------------------------------------------------------


def _read_some(sock: socket.socket, n: int, timeout: float) -> bytes:
    """Up to ``n`` bytes, until the peer closes or ``timeout`` passes (bounded)."""
    data = b""
    with gevent.Timeout(timeout, False):
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                break
            data += chunk
    return data


def _closed_by_peer(sock: socket.socket, timeout: float) -> tuple[bool, bytes]:
    """(True if the peer closed the connection within ``timeout``, the bytes it sent before)."""
    data = b""
    with gevent.Timeout(timeout, False):
        while len(data) < 1 << 16:
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                return True, data
            if not chunk:
                return True, data
            data += chunk
    return False, data


def test_require_never_sends_a_plaintext_handshake_and_drops_a_plaintext_peer(tmp_path, torrentcore):
    """Outgoing: a plain socket we listen on gets an MSE public key (not ``\\x13BitTorrent protocol``) each
    time torrentcore dials it; when it answers with a plaintext handshake, torrentcore closes the connection."""
    root, torrent = _payload(tmp_path, 256 * KiB, seed=65)
    info_hash = make_torrent(root, [], piece_length=64 * KiB)[1]
    listener = socket.socket()
    listener.bind((LOCALHOST, 0))
    listener.listen(4)
    run = torrentcore.run(torrent, tmp_path / "out", "--encryption", "require",
                          peers=[(LOCALHOST, listener.getsockname()[1])])
    try:
        for attempt in range(2):  # the first dial, and the retry after it failed
            with gevent.Timeout(30, AssertionError(f"torrentcore did not dial (attempt {attempt})")):
                sock, _ = listener.accept()
            with sock:
                first = _read_some(sock, 96, timeout=10)
                assert len(first) == 96, first
                assert not first.startswith(PLAIN_HEADER[:1]) or first[:20] != PLAIN_HEADER, first
                sock.sendall(msg.handshake(info_hash, b"-XX0001-plainonly000", bytes(8)))
                closed, more = _closed_by_peer(sock, timeout=30)
                assert closed, "torrentcore kept the connection to a plaintext peer"
                assert b"BitTorrent protocol" not in first + more, first + more
    finally:
        listener.close()
        run.kill()
    assert "Traceback" not in run.stderr
    assert not _connected(run), _connected(run)


def test_require_refuses_an_incoming_plaintext_handshake(tmp_path, peers: RealPeers, torrentcore):
    """Incoming: a plaintext handshake for the right torrent gets the connection closed with not one byte
    back; a real plaintext-only libtorrent gets nothing either; an RC4 one downloads meanwhile."""
    root, torrent = _payload(tmp_path, 1 * MiB, seed=66)
    info_hash = make_torrent(root, [], piece_length=64 * KiB)[1]
    seeder = _start_seed(torrentcore, torrent, tmp_path / "seed", "--encryption", "require")
    port = seeder.listening_port()
    with socket.create_connection((LOCALHOST, port), timeout=5) as sock:
        sock.sendall(msg.handshake(info_hash, b"-XX0001-plainonly000", msg.reserved_bytes(msg.RESERVED_EXTENSIONS)))
        closed, answer = _closed_by_peer(sock, timeout=30)
    assert closed and answer == b"", answer

    plain = peers.libtorrent("plain", **LT_PLAINTEXT_ONLY)
    plain.add_torrent(torrent, tmp_path / "plain")
    plain.connect_peer(LOCALHOST, port)
    forced = peers.libtorrent("forced", **LT_FORCED_RC4)
    forced.add_torrent(torrent, tmp_path / "forced")
    forced.connect_peer(LOCALHOST, port)
    assert forced.wait_finished(timeout=30), peers.describe() + seeder.describe()
    assert_same_tree(root, tmp_path / "forced" / "data.bin", seeder.describe())
    assert plain.status()["total_payload_download"] == 0, peers.describe()
    connected = _connected(seeder)
    assert connected and all(e["encrypted"] is True for e in connected), connected  # the RC4 peer only


# --------------------------------------------------------------------------------------------------
# prefer (the default) with plaintext-only peers
# --------------------------------------------------------------------------------------------------


def test_prefer_falls_back_to_plaintext_for_a_plaintext_only_libtorrent(tmp_path, peers: RealPeers, torrentcore):
    root, torrent = _payload(tmp_path, 2 * MiB + 3, seed=67)
    seeder = peers.libtorrent("plain-seeder", **LT_PLAINTEXT_ONLY)
    seeder.add_torrent(torrent, tmp_path / "seed", seed=True)
    run = torrentcore.run(torrent, tmp_path / "out", peers=[seeder.endpoint])  # --encryption prefer by default
    _finished(run, peers.describe())
    assert_same_tree(root, tmp_path / "out" / "data.bin", run.describe())
    connected = _connected(run)
    assert connected and all(e["encrypted"] is False for e in connected), connected


@needs_aria2
def test_prefer_downloads_from_aria2_without_crypto(tmp_path, peers: RealPeers, torrentcore):
    root, torrent = _payload(tmp_path, 2 * MiB + 11, seed=68, piece_length=256 * KiB)
    aria2 = peers.aria2(torrent, tmp_path / "seed", seed=True,
                        extra_args=["--bt-require-crypto=false", "--bt-min-crypto-level=plain"])
    assert aria2.wait_listening(timeout=15), peers.describe()
    run = torrentcore.run(torrent, tmp_path / "out", peers=[aria2.endpoint])
    _finished(run, peers.describe())
    assert_same_tree(root, tmp_path / "out" / "data.bin", run.describe())
    # aria2 1.36 without --bt-require-crypto still accepts an incoming MSE handshake; offered plaintext and RC4
    # (prefer), it selects plaintext after the obfuscated header, so the payload is not RC4-encrypted. The
    # fallback to a plaintext handshake is proved with the plaintext-only libtorrent above and the fakes.
    connected = _connected(run)
    assert connected and all(e["encrypted"] is False for e in connected), connected


@needs_aria2
@needs_opentracker
def test_prefer_picks_plaintext_when_aria2_without_crypto_dials_in(tmp_path, peers: RealPeers, opentracker,
                                                                   torrentcore):
    """aria2c without --bt-require-crypto still opens MSE connections (offering plaintext and RC4 after the
    header): a prefer seeder takes them and selects plaintext, as libtorrent does (prefer_rc4 false)."""
    tracker = opentracker()
    root, torrent = _payload(tmp_path, 2 * MiB + 21, seed=74, trackers=[tracker.http_url], piece_length=32 * KiB)
    info_hash = make_torrent(root, [tracker.http_url], piece_length=32 * KiB)[1]
    tracker.add(info_hash)
    seeder = _start_seed(torrentcore, torrent, tmp_path / "seed")  # --encryption prefer by default
    assert wait_tracker_count(tracker, info_hash, seeders=1), seeder.describe()
    leecher = peers.aria2(torrent, tmp_path / "leech")
    assert leecher.wait(timeout=30) == 0, peers.describe() + seeder.describe()
    assert_same_tree(root, tmp_path / "leech" / "data.bin", peers.describe())
    incoming = [e for e in _connected(seeder) if e["incoming"]]
    assert incoming and all(e["obfuscated"] is True and e["encrypted"] is False for e in incoming), incoming


def test_disable_downloads_in_plaintext_and_refuses_incoming_mse(tmp_path, peers: RealPeers, torrentcore):
    root, torrent = _payload(tmp_path, 1 * MiB + 1, seed=69)
    seeder = _start_seed(torrentcore, torrent, tmp_path / "seed", "--encryption", "disable")
    forced = peers.libtorrent("forced", **LT_FORCED_RC4)
    forced.add_torrent(torrent, tmp_path / "forced")
    forced.connect_peer(LOCALHOST, seeder.listening_port())
    plain = peers.libtorrent("plain", **LT_PLAINTEXT_ONLY)
    plain.add_torrent(torrent, tmp_path / "plain")
    plain.connect_peer(LOCALHOST, seeder.listening_port())
    assert plain.wait_finished(timeout=30), peers.describe() + seeder.describe()
    assert_same_tree(root, tmp_path / "plain" / "data.bin", seeder.describe())
    assert forced.status()["total_payload_download"] == 0, peers.describe()
    connected = _connected(seeder)
    assert connected and all(e["encrypted"] is False for e in connected), connected  # the plaintext peer only
    assert free_port()  # the harness still works after the refusals


# --------------------------------------------------------------------------------------------------
# Transmission 3.00, encryption required
# --------------------------------------------------------------------------------------------------


class TransmissionDaemon:
    """``transmission-daemon -f`` with a private config folder on 127.0.0.1 (settings from REAL-PEERS.md),
    driven through ``transmission-remote``; killed by :meth:`stop`. ``encryption``: 0 tolerated,
    1 preferred, 2 required."""

    def __init__(self, folder: Path, encryption: int, utp: bool = False) -> None:
        self.folder = folder
        self.config = folder / "config"
        self.config.mkdir(parents=True)
        self.peer_port, self.rpc_port = free_port(), free_port()
        settings = {
            "dht-enabled": False, "lpd-enabled": False, "pex-enabled": False, "port-forwarding-enabled": False,
            "utp-enabled": utp, "peer-port": self.peer_port, "peer-port-random-on-start": False,
            "bind-address-ipv4": LOCALHOST, "download-dir": str(folder / "downloads"), "encryption": encryption,
            "rpc-enabled": True, "rpc-bind-address": LOCALHOST, "rpc-port": self.rpc_port,
            "rpc-authentication-required": False, "rpc-whitelist": LOCALHOST, "rpc-whitelist-enabled": True,
            "rpc-host-whitelist-enabled": False, "queue-stalled-enabled": False, "download-queue-enabled": False,
            "seed-queue-enabled": False, "ratio-limit-enabled": False, "idle-seeding-limit-enabled": False,
            "message-level": 2,
        }
        (self.config / "settings.json").write_text(json.dumps(settings))
        self.log_path = folder / "transmission.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(["transmission-daemon", "-f", "-g", str(self.config)],
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    @property
    def endpoint(self) -> tuple[str, int]:
        """Where it accepts peers."""
        return (LOCALHOST, self.peer_port)

    def remote(self, *args: str) -> str:
        """``transmission-remote 127.0.0.1:RPCPORT ARGS``; its output (bounded)."""
        out = subprocess.run(["transmission-remote", f"{LOCALHOST}:{self.rpc_port}", *args], capture_output=True,
                             text=True, timeout=20)
        return out.stdout + out.stderr

    def wait_rpc(self, timeout: float = 20) -> bool:
        """Wait (bounded) until the RPC interface answers."""
        return wait_until(lambda: "ID" in self.remote("-l"), timeout, interval=0.2)

    def seed(self, torrent: Path, data_dir: Path, timeout: float = 30) -> bool:
        """Add ``torrent`` with its data in ``data_dir``, verify it; wait (bounded) until 100% done."""
        self.remote("-a", str(torrent), "-w", str(data_dir))
        self.remote("-t", "all", "-v")
        return wait_until(lambda: "Percent Done: 100%" in self.remote("-t", "all", "-i"), timeout, interval=0.3)

    def describe(self) -> str:
        """Diagnostics: the torrent's info and the log tail."""
        try:
            info = self.remote("-t", "all", "-i", "-ip")
        except (OSError, subprocess.SubprocessError) as exc:
            info = repr(exc)
        return f"transmission rc={self.process.poll()}\n{info}\n{self.log_path.read_text(errors='replace')[-3000:]}"

    def stop(self) -> None:
        """Kill and reap (bounded)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def transmission(tmp_path) -> TransmissionDaemon:
    daemon = TransmissionDaemon(tmp_path / "transmission", encryption=2)
    try:
        yield daemon
    finally:
        print(daemon.describe())
        daemon.stop()


@needs_transmission
def test_download_from_transmission_requiring_encryption(tmp_path, transmission, torrentcore):
    root, torrent = _payload(tmp_path, 2 * MiB + 77, seed=71, piece_length=32 * KiB)
    assert transmission.wait_rpc(), transmission.describe()
    assert transmission.seed(torrent, tmp_path / "seed"), transmission.describe()
    # Transmission ignores tracker peers on 127.0.0.0/8: torrentcore dials it.
    run = torrentcore.run(torrent, tmp_path / "out", "--encryption", "require", peers=[transmission.endpoint])
    _finished(run, transmission.describe())
    assert_same_tree(root, tmp_path / "out" / "data.bin", run.describe())
    connected = _connected(run)
    assert connected and all(e["encrypted"] is True for e in connected), connected
    assert any("Transmission" in e["client"] or e["client"].startswith("TR") for e in connected), connected


# --------------------------------------------------------------------------------------------------
# qBittorrent-nox 4.5 (optional), encryption required
# --------------------------------------------------------------------------------------------------

needs_qbittorrent = pytest.mark.skipif(shutil.which("qbittorrent-nox") is None,
                                       reason="qbittorrent-nox is not installed")


class QBittorrent:
    """``qbittorrent-nox`` with a private profile on 127.0.0.1 (settings from REAL-PEERS.md), driven through
    its Web API; ``encryption``: 0 prefer, 1 require, 2 disable. Killed by :meth:`stop`."""

    def __init__(self, folder: Path, encryption: int, utp: bool = False) -> None:
        self.folder = folder
        self.peer_port, self.web_port = free_port(), free_port()
        config = folder / "qBittorrent" / "config"
        config.mkdir(parents=True)
        (config / "qBittorrent.conf").write_text("\n".join([
            "[LegalNotice]", "Accepted=true", "",
            "[BitTorrent]", "Session\\DHTEnabled=false", "Session\\LSDEnabled=false", "Session\\PeXEnabled=false",
            f"Session\\Port={self.peer_port}", "Session\\Interface=lo", "Session\\InterfaceAddress=127.0.0.1",
            "Session\\MultiConnectionsPerIp=true", "Session\\BTProtocol=TCP", f"Session\\Encryption={encryption}",
            f"Session\\DefaultSavePath={folder / 'downloads'}", "Session\\QueueingSystemEnabled=false", "",
            "[Preferences]", "WebUI\\Address=127.0.0.1", f"WebUI\\Port={self.web_port}", "WebUI\\LocalHostAuth=false",
            "WebUI\\CSRFProtection=false", "WebUI\\HostHeaderValidation=false", "",
        ]))
        self.log_path = folder / "qbittorrent.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                ["qbittorrent-nox", f"--profile={folder}", f"--webui-port={self.web_port}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    @property
    def endpoint(self) -> tuple[str, int]:
        """Where it accepts peers."""
        return (LOCALHOST, self.peer_port)

    def _api(self, path: str, **kwargs) -> requests.Response:
        return requests.post(f"http://{LOCALHOST}:{self.web_port}/api/v2/{path}", timeout=5, **kwargs)

    def wait_api(self, timeout: float = 30) -> bool:
        """Wait (bounded) until the Web API answers."""
        def _up() -> bool:
            try:
                return self._api("app/version").ok
            except requests.RequestException:
                return False
        return wait_until(_up, timeout, interval=0.2)

    def info(self) -> list[dict]:
        """``torrents/info``."""
        try:
            return self._api("torrents/info").json()
        except (requests.RequestException, ValueError):
            return []

    def add(self, torrent: Path, save_path: Path) -> None:
        """Add ``torrent`` saving in ``save_path``."""
        with open(torrent, "rb") as f:
            self._api("torrents/add", files={"torrents": ("t.torrent", f.read())}, data={"savepath": str(save_path)})

    def complete(self, timeout: float = 30) -> bool:
        """Wait (bounded) until the torrent is complete."""
        return wait_until(lambda: any(t.get("progress") == 1.0 for t in self.info()), timeout, interval=0.3)

    def seed(self, torrent: Path, data_dir: Path, timeout: float = 30) -> bool:
        """Add ``torrent`` with its data in ``data_dir``; wait (bounded) until it is checked and complete."""
        self.add(torrent, data_dir)
        return self.complete(timeout)

    def add_peer(self, info_hash: bytes, address: tuple[str, int]) -> None:
        """Ask it to connect to ``address`` for the torrent (Web API ``torrents/addPeers``)."""
        self._api("torrents/addPeers", data={"hashes": info_hash.hex(), "peers": f"{address[0]}:{address[1]}"})

    def describe(self) -> str:
        """Diagnostics: torrents and the log tail."""
        log = self.log_path.read_text(errors="replace")[-3000:]
        return f"qbittorrent rc={self.process.poll()}\n{self.info()}\n{log}"

    def stop(self) -> None:
        """Kill and reap (bounded)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def qbittorrent(tmp_path) -> QBittorrent:
    client = QBittorrent(tmp_path / "qbittorrent", encryption=1)
    try:
        yield client
    finally:
        print(client.describe())
        client.stop()


@needs_qbittorrent
def test_download_from_qbittorrent_requiring_encryption(tmp_path, qbittorrent, torrentcore):
    root, torrent = _payload(tmp_path, 3 * MiB + 5, seed=72, piece_length=64 * KiB)
    assert qbittorrent.wait_api(), qbittorrent.describe()
    assert qbittorrent.seed(torrent, tmp_path / "seed"), qbittorrent.describe()
    run = torrentcore.run(torrent, tmp_path / "out", "--encryption", "require", peers=[qbittorrent.endpoint])
    _finished(run, qbittorrent.describe())
    assert_same_tree(root, tmp_path / "out" / "data.bin", run.describe())
    connected = _connected(run)
    assert connected and all(e["encrypted"] is True for e in connected), connected


@needs_qbittorrent
def test_qbittorrent_requiring_encryption_downloads_from_us(tmp_path, qbittorrent, torrentcore):
    root, torrent = _payload(tmp_path, 2 * MiB + 9, seed=73, piece_length=64 * KiB)
    info_hash = make_torrent(root, [], piece_length=64 * KiB)[1]
    seeder = _start_seed(torrentcore, torrent, tmp_path / "seed", "--encryption", "require")
    assert qbittorrent.wait_api(), qbittorrent.describe()
    qbittorrent.add(torrent, tmp_path / "leech")
    assert wait_until(lambda: qbittorrent.info(), 15), qbittorrent.describe()
    qbittorrent.add_peer(info_hash, (LOCALHOST, seeder.listening_port()))
    assert qbittorrent.complete(timeout=40), qbittorrent.describe() + seeder.describe()
    assert_same_tree(root, tmp_path / "leech" / "data.bin", seeder.describe())
    connected = _connected(seeder)
    assert connected and all(e["encrypted"] is True for e in connected), connected
