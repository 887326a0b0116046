"""Real BitTorrent peers for integration tests: libtorrent sessions and aria2c processes.

Everything here talks to ``127.0.0.1`` only, every wait is bounded, and every session or process is
stopped at the end of a test when it is created through :class:`RealPeers` (or the :func:`real_peers`
fixture), even when the test fails.

The module works under gevent monkey-patching (``tests/conftest.py`` patches everything first):
libtorrent runs its own native threads and this module never blocks inside libtorrent waiting for
something, it polls with ``time.sleep`` (a cooperative ``gevent.sleep`` once patched) so other greenlets,
such as a torrentcore engine running in the same process, keep running while a test waits.
``aria2c`` is driven through ``subprocess`` (cooperative under gevent too), its output goes to a log file.

Facts this relies on are in ``shared/REAL-PEERS.md``; the non-obvious ones are repeated where they are used.
"""

from __future__ import annotations

import collections
import filecmp
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Self

import gevent
import libtorrent as lt
import pytest

#: The only address the harness ever listens on or connects to.
LOCALHOST = "127.0.0.1"

#: Bytes written per ``randbytes`` call when making payloads.
_CHUNK = 1 << 20

#: What :func:`make_payload` accepts: one file size, or relative path -> size (folders are created).
PayloadSpec = int | Mapping[str, int]

#: Trackers for :func:`make_torrent`: flat list (one tier each) or a list of tiers.
TrackerSpec = Sequence[str] | Sequence[Sequence[str]]


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def free_port() -> int:
    """Return a TCP port that was free on 127.0.0.1 a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is truthy or ``timeout`` seconds pass; return whether it became true.

    Sleeps with ``time.sleep`` between polls, which yields to other greenlets under gevent.
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def wait_port_open(port: int, timeout: float = 5.0, host: str = LOCALHOST) -> bool:
    """Wait (bounded) until something accepts TCP connections on ``host:port``; return whether it did."""

    def _accepts() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    return wait_until(_accepts, timeout, interval=0.05)


def make_payload(
    directory: str | os.PathLike, spec: PayloadSpec, seed: int = 0, name: str = "payload"
) -> str:
    """Write deterministic pseudo-random content under ``directory`` and return its root path.

    ``spec`` is either an ``int`` (one file ``directory/name`` of that many bytes) or a mapping of
    relative paths (``/``-separated, nested folders allowed) to sizes (``0`` makes an empty file), written
    under the folder ``directory/name``. Each file's bytes depend only on ``seed`` and its relative path,
    so the same call always produces the same data (about 250 MB/s).
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    root = os.path.join(directory, name)
    if isinstance(spec, int):
        _write_random_file(root, spec, f"{seed}:{name}")
        return root
    if not spec:
        raise ValueError("a multi-file payload needs at least one file")
    for rel, size in spec.items():
        parts = [p for p in rel.replace("\\", "/").split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise ValueError(f"bad relative path in payload spec: {rel!r}")
        _write_random_file(os.path.join(root, *parts), size, f"{seed}:{'/'.join(parts)}")
    return root


def _write_random_file(path: str, size: int, seed: str) -> None:
    if size < 0:
        raise ValueError(f"negative size for {path}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = random.Random(seed)
    with open(path, "wb") as f:
        remaining = size
        while remaining:
            n = min(_CHUNK, remaining)
            f.write(rng.randbytes(n))
            remaining -= n


def make_torrent(
    path: str | os.PathLike,
    trackers: TrackerSpec = (),
    piece_length: int | None = None,
    private: bool = False,
    out: str | os.PathLike | None = None,
    comment: str | None = None,
) -> tuple[bytes, bytes]:
    """Build a plain v1 .torrent for the file or folder ``path``; return ``(torrent_bytes, info_hash)``.

    ``trackers`` is a flat list (each URL its own tier, in order: the first becomes ``announce``) or a
    list of tiers (lists of URLs). ``piece_length`` ``None`` lets libtorrent choose; otherwise a
    multiple of 16 KiB. ``info_hash`` is the 20-byte SHA-1 v1 info-hash. ``out`` also writes the file.
    v1 only: libtorrent's default hybrid v1+v2 torrents have pad files that aria2 cannot handle well.
    """
    path = os.path.abspath(os.fspath(path))
    files = lt.list_files(path)  # 2.1 API (add_files/file_storage constructor are deprecated)
    if not files:
        raise ValueError(f"nothing to put in a torrent at {path}")
    ct = lt.create_torrent(files, piece_length or 0, flags=lt.create_torrent.v1_only)
    for tier, urls in enumerate(_tiers(trackers)):
        for url in urls:
            ct.add_tracker(url, tier)
    if private:
        ct.set_priv(True)
    if comment:
        ct.set_comment(comment)
    ct.set_creator("torrentcore tests")
    lt.set_piece_hashes(ct, os.path.dirname(path))
    data = bytes(lt.bencode(ct.generate()))
    info_hash = info_hash_of(data)
    if out is not None:
        with open(os.fspath(out), "wb") as f:
            f.write(data)
    return data, info_hash


def _tiers(trackers: TrackerSpec) -> list[list[str]]:
    if isinstance(trackers, str):
        return [[trackers]]
    return [[t] if isinstance(t, str) else list(t) for t in trackers]


def info_hash_of(torrent: bytes | str | os.PathLike) -> bytes:
    """Return the 20-byte v1 info-hash of a .torrent given as bytes or a path."""
    return _torrent_info(torrent).info_hashes().v1.to_bytes()


def _torrent_info(torrent: bytes | str | os.PathLike) -> lt.torrent_info:
    if isinstance(torrent, (bytes, bytearray, memoryview)):
        return lt.torrent_info(lt.bdecode(bytes(torrent)))
    return lt.torrent_info(os.fspath(torrent))


def tree_differences(expected: str | os.PathLike, actual: str | os.PathLike) -> list[str]:
    """Compare two files or folder trees byte for byte; return human-readable differences (empty if equal)."""
    expected, actual = os.fspath(expected), os.fspath(actual)
    if os.path.isfile(expected):
        if not os.path.isfile(actual):
            return [f"missing file {actual}"]
        if not filecmp.cmp(expected, actual, shallow=False):
            sizes = f"{os.path.getsize(actual)} bytes, expected {os.path.getsize(expected)}"
            return [f"content differs: {actual} ({sizes})"]
        return []
    problems = []
    want = set(_relative_files(expected))
    have = set(_relative_files(actual)) if os.path.isdir(actual) else set()
    problems += [f"missing file {rel}" for rel in sorted(want - have)]
    problems += [f"unexpected file {rel}" for rel in sorted(have - want)]
    for rel in sorted(want & have):
        problems += tree_differences(os.path.join(expected, rel), os.path.join(actual, rel))
    return problems


def assert_same_tree(expected: str | os.PathLike, actual: str | os.PathLike, context: str = "") -> None:
    """Assert two files or trees are byte-for-byte equal; ``context`` is appended to the failure message."""
    problems = tree_differences(expected, actual)
    assert not problems, "\n".join(problems[:20] + ([context] if context else []))


def _relative_files(root: str) -> Iterable[str]:
    for folder, _dirs, files in os.walk(root):
        for name in files:
            yield os.path.relpath(os.path.join(folder, name), root)


# --------------------------------------------------------------------------------------------------
# libtorrent
# --------------------------------------------------------------------------------------------------

_ALERT_MASK = (
    lt.alert.category_t.error_notification
    | lt.alert.category_t.status_notification
    | lt.alert.category_t.storage_notification
    | lt.alert.category_t.tracker_notification
    | lt.alert.category_t.connect_notification
    | lt.alert.category_t.performance_warning
)
#: Extra alert categories for exact per-peer payload accounting (one alert per 16 KiB block).
_BLOCK_ALERTS = lt.alert.category_t.block_progress_notification | lt.alert.category_t.upload_notification

#: Block size of the BitTorrent protocol (the last block of a piece may be shorter).
BLOCK_SIZE = 16 * 1024


def libtorrent_settings(port: int, **overrides: Any) -> dict[str, Any]:
    """Session settings for a fast, loopback-only libtorrent peer listening on ``127.0.0.1:port``."""
    settings: dict[str, Any] = {
        "listen_interfaces": f"{LOCALHOST}:{port}",
        "outgoing_interfaces": LOCALHOST,
        # Every peer is 127.0.0.1: without this libtorrent keeps one connection per IP.
        "allow_multiple_connections_per_ip": True,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        # Plain outgoing handshakes (an MSE attempt first costs a failed connection against a peer
        # without encryption); incoming encrypted or plain both accepted.
        "out_enc_policy": int(lt.enc_policy.pe_disabled),
        "in_enc_policy": int(lt.enc_policy.pe_enabled),
        "announce_to_all_trackers": True,
        "announce_to_all_tiers": True,
        "min_announce_interval": 1,
        # Loopback trackers on any path (the SSRF guard only allows ".../announce" on localhost).
        "ssrf_mitigation": False,
        "tracker_completion_timeout": 5,
        "tracker_receive_timeout": 5,
        "stop_tracker_timeout": 1,  # session shutdown waits this long for "stopped" announces
        "peer_connect_timeout": 2,
        "handshake_timeout": 5,
        # Reconnect quickly to a peer that went away and came back (default 60 s), and don't give up on it.
        "min_reconnect_time": 1,
        "max_failcount": 100,
        "smooth_connects": False,
        "connection_speed": 200,
        "torrent_connect_boost": 50,
        "unchoke_slots_limit": -1,
        "active_downloads": -1,
        "active_seeds": -1,
        "active_limit": -1,
        "upload_rate_limit": 0,
        "download_rate_limit": 0,
        "ignore_limits_on_local_network": True,
        "alert_mask": int(_ALERT_MASK | _BLOCK_ALERTS),
        "alert_queue_size": 200_000,
    }
    settings.update(overrides)
    return settings


class LibtorrentPeer:
    """One libtorrent session on ``127.0.0.1:port`` (a fresh port per peer by default).

    Use as a context manager or call :meth:`close`. Methods taking ``handle=None`` act on the most
    recently added torrent. Errors seen in alerts are kept for failure messages (:meth:`describe`).
    """

    def __init__(
        self, port: int | None = None, name: str = "libtorrent", background_poll: float | None = 0.05,
        **settings: Any,
    ) -> None:
        """Start the session; ``settings`` override :func:`libtorrent_settings` (libtorrent setting names).

        ``background_poll``: interval of a greenlet that keeps draining alerts so per-peer accounting
        stays exact while the test waits on something else (``None``: only drain inside this API's calls).
        """
        self.name = name
        self.port = port or free_port()
        self.settings = libtorrent_settings(self.port, **settings)
        self._session: lt.session | None = lt.session(self.settings)
        self._handles: list[lt.torrent_handle] = []
        self._infos: dict[str, lt.torrent_info] = {}
        self.errors: collections.deque[str] = collections.deque(maxlen=50)
        self.alerts: collections.deque[str] = collections.deque(maxlen=200)
        self._alert_counts: collections.Counter[tuple[str, str]] = collections.Counter()
        # (info-hash hex, ip, port) -> {"ip", "port", "pid", "client", "downloaded", "uploaded",
        # "seen_download"}: see transfers()
        self._transfers: dict[tuple[str, str, int], dict[str, Any]] = {}
        self._poller = None
        if background_poll:
            self._poller = gevent.spawn(self._poll_forever, background_poll)

    def _poll_forever(self, interval: float) -> None:
        while self._session is not None:
            try:
                self.poll()
                for h in list(self._handles):
                    if h.is_valid():
                        self._snapshot(h)
            except Exception as exc:  # noqa: BLE001 - the poller must not die silently
                self.errors.append(f"poller: {exc!r}")
            gevent.sleep(interval)

    # -- context manager -------------------------------------------------------------------------
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<LibtorrentPeer {self.name} {LOCALHOST}:{self.port}>"

    @property
    def endpoint(self) -> tuple[str, int]:
        """``(host, port)`` other peers can dial."""
        return (LOCALHOST, self.port)

    @property
    def session(self) -> lt.session:
        """The underlying ``libtorrent.session`` (raises once closed)."""
        if self._session is None:
            raise RuntimeError(f"{self!r} is closed")
        return self._session

    @property
    def handle(self) -> lt.torrent_handle:
        """The most recently added torrent's handle."""
        if not self._handles:
            raise RuntimeError(f"{self!r} has no torrent")
        return self._handles[-1]

    # -- torrents ----------------------------------------------------------------------------------
    def add_torrent(
        self, torrent: bytes | str | os.PathLike, save_path: str | os.PathLike, seed: bool = False
    ) -> lt.torrent_handle:
        """Add a torrent (bytes or .torrent path) saving under ``save_path``; started, not auto-managed.

        ``seed=True`` means the data is already complete in ``save_path``: ``seed_mode`` skips the check.
        """
        save_path = os.fspath(save_path)
        os.makedirs(save_path, exist_ok=True)
        params = lt.add_torrent_params()
        params.ti = _torrent_info(torrent)
        params.save_path = save_path
        flags = params.flags
        # The bindings' default flags include ``paused`` (it would never start) and ``auto_managed``
        # (the queue could pause or resume it behind the test's back, e.g. after pause()).
        flags &= ~lt.torrent_flags.paused
        flags &= ~lt.torrent_flags.auto_managed
        if seed:
            flags |= lt.torrent_flags.seed_mode
        params.flags = flags
        handle = self.session.add_torrent(params)
        self._handles.append(handle)
        self._infos[_handle_key(handle)] = params.ti
        self.poll()
        return handle

    def _h(self, handle: lt.torrent_handle | None) -> lt.torrent_handle:
        return handle if handle is not None else self.handle

    def poll(self) -> list[Any]:
        """Drain pending alerts (counting per-peer payload, remembering errors and history); return them."""
        if self._session is None:
            return []
        alerts = self._session.pop_alerts()
        for a in alerts:
            kind = type(a).__name__
            if kind in ("block_finished_alert", "block_uploaded_alert"):
                self._count_block(a, "downloaded" if kind == "block_finished_alert" else "uploaded")
                continue
            if kind in ("block_downloading_alert", "block_timeout_alert", "request_dropped_alert"):
                continue
            line = f"{kind}: {a.message()}"
            self.alerts.append(line)
            self._alert_counts[(kind, _alert_torrent(a))] += 1
            if a.category() & lt.alert.category_t.error_notification or kind.endswith(
                ("_error_alert", "_failed_alert")
            ):
                self.errors.append(line)
        return alerts

    def _count_block(self, alert: Any, direction: str) -> None:
        key = _handle_key(alert.handle)
        info = self._infos.get(key)
        if info is None:
            return
        size = min(BLOCK_SIZE, info.piece_size(alert.piece_index) - alert.block_index * BLOCK_SIZE)
        ip, port = alert.endpoint
        entry = self._transfer_entry(key, ip, port)
        entry[direction] += size
        if not entry["pid"].strip(b"\0"):
            entry["pid"] = bytes(alert.pid.to_bytes())

    def _transfer_entry(self, key: str, ip: str, port: int) -> dict[str, Any]:
        entry = self._transfers.get((key, ip, port))
        if entry is None:
            entry = self._transfers[(key, ip, port)] = {
                "ip": ip, "port": port, "pid": b"", "client": "", "downloaded": 0, "uploaded": 0,
                "seen_download": 0,
            }
        return entry

    def transfers(self, handle: lt.torrent_handle | None = None) -> list[dict[str, Any]]:
        """Payload bytes per remote endpoint ``(ip, port)``, connected or not, for the torrent.

        Each dict: ``ip``, ``port``, ``pid`` (20-byte peer id), ``client`` (if seen while connected),
        ``uploaded`` (bytes of blocks sent to it: exact, from ``block_uploaded_alert``, endgame
        duplicates included) and ``downloaded`` (bytes received from it: a *lower bound*; libtorrent
        2.1.1 posts no ``block_finished_alert`` for some blocks, typically those of the piece(s) that
        complete the torrent, so this is the larger of the block count and the last ``peer_info``
        total seen while connected). Entries survive disconnection (a finished libtorrent leecher drops
        its seeds at once). To check who served whom, prefer the uploader's ``uploaded``.
        """
        h = self._h(handle)
        self.poll()
        self._snapshot(h)
        key = _handle_key(h)
        result = []
        for (k, _ip, _port), v in self._transfers.items():
            if k == key and (v["uploaded"] or v["downloaded"] or v["seen_download"]):
                item = {x: v[x] for x in ("ip", "port", "pid", "client", "uploaded")}
                item["downloaded"] = max(v["downloaded"], v["seen_download"])
                result.append(item)
        return result

    def _snapshot(self, h: lt.torrent_handle) -> None:
        """Remember each connected peer's client name and largest payload total seen."""
        key = _handle_key(h)
        for p in h.get_peer_info():
            entry = self._transfers.get((key, p.ip[0], p.ip[1]))
            if entry is None:
                if not p.total_download:
                    continue
                entry = self._transfer_entry(key, p.ip[0], p.ip[1])
            entry["client"] = entry["client"] or _text(p.client)
            if not entry["pid"].strip(b"\0"):
                entry["pid"] = bytes(p.pid.to_bytes())
            entry["seen_download"] = max(entry["seen_download"], p.total_download)

    def _alert_count(self, kind: str, handle: lt.torrent_handle) -> int:
        return self._alert_counts[(kind, _handle_key(handle))]

    def wait_finished(self, timeout: float = 30.0, handle: lt.torrent_handle | None = None) -> bool:
        """Wait (bounded) until the torrent is complete *and its data is on disk*; return success.

        libtorrent reports "finished" before queued disk writes are done, so once finished this calls
        ``flush_cache()`` and waits for the ``cache_flushed_alert`` of that torrent. Returns ``False``
        at once if the torrent reports an error (see :meth:`describe`).
        """
        h = self._h(handle)
        deadline = time.monotonic() + timeout
        failed = []

        def _done() -> bool:
            self.poll()
            st = h.status()
            if st.errc.value():  # e.g. a file error: it will not finish, don't wait for the timeout
                failed.append(st.errc.message())
                return True
            return st.is_finished or st.is_seeding

        if not wait_until(_done, max(0.0, deadline - time.monotonic())) or failed:
            return False
        return self.flush(max(1.0, deadline - time.monotonic()), handle)

    def flush(self, timeout: float = 10.0, handle: lt.torrent_handle | None = None) -> bool:
        """Write the torrent's queued blocks to disk (``flush_cache()``) and wait (bounded) for its
        ``cache_flushed_alert``: a piece libtorrent reports as had may still be only in its write queue."""
        h = self._h(handle)
        before = self._alert_count("cache_flushed_alert", h)
        h.flush_cache()

        def _flushed() -> bool:
            self.poll()
            return self._alert_count("cache_flushed_alert", h) > before

        return wait_until(_flushed, timeout, interval=0.02)

    def wait_peers(
        self, count: int = 1, timeout: float = 10.0, handle: lt.torrent_handle | None = None
    ) -> bool:
        """Wait (bounded) until the torrent has at least ``count`` connected peers; return success."""
        h = self._h(handle)

        def _enough() -> bool:
            self.poll()
            return h.status().num_peers >= count

        return wait_until(_enough, timeout)

    def wait_announced(
        self, timeout: float = 10.0, count: int = 1, handle: lt.torrent_handle | None = None
    ) -> bool:
        """Wait (bounded) until ``count`` tracker replies (``tracker_reply_alert``) arrived; return success.

        Start the peer that needs this one's address from the tracker only after this, or it may get an
        empty peer list and (opentracker's interval being 30 minutes) not ask again in time.
        """
        h = self._h(handle)

        def _replied() -> bool:
            self.poll()
            return self._alert_count("tracker_reply_alert", h) >= count

        return wait_until(_replied, timeout)

    def status(self, handle: lt.torrent_handle | None = None) -> dict[str, Any]:
        """A plain-dict snapshot: progress, state, num_peers, num_seeds, totals, rates, error, paused."""
        self.poll()
        st = self._h(handle).status()
        return {
            "progress": st.progress,
            "state": str(st.state),
            "is_finished": st.is_finished,
            "is_seeding": st.is_seeding,
            "paused": bool(st.flags & lt.torrent_flags.paused),
            "num_peers": st.num_peers,
            "num_seeds": st.num_seeds,
            "total_upload": st.total_upload,
            "total_download": st.total_download,
            "total_payload_upload": st.total_payload_upload,
            "total_payload_download": st.total_payload_download,
            "all_time_upload": st.all_time_upload,
            "all_time_download": st.all_time_download,
            "download_rate": st.download_rate,
            "upload_rate": st.upload_rate,
            "error": st.errc.message() if st.errc.value() else "",
            "current_tracker": st.current_tracker,
        }

    def peer_info(self, handle: lt.torrent_handle | None = None) -> list[dict[str, Any]]:
        """One dict per connected peer: ip, port, client, pid, totals, progress, seed, outgoing, source."""
        self.poll()
        peers = []
        for p in self._h(handle).get_peer_info():
            ip, port = p.ip
            peers.append({
                "ip": ip,
                "port": port,
                "client": _text(p.client),
                "pid": bytes(p.pid.to_bytes()),
                "total_download": p.total_download,
                "total_upload": p.total_upload,
                "progress": p.progress,
                "seed": bool(p.flags & lt.peer_info.seed),
                "outgoing": bool(p.flags & lt.peer_info.outgoing_connection),
                "source": int(p.source),
            })
        return peers

    def connect_peer(self, host: str, port: int, handle: lt.torrent_handle | None = None) -> None:
        """Dial ``host:port`` directly for the torrent (no tracker needed)."""
        self._h(handle).connect_peer((host, port))

    def force_reannounce(self, handle: lt.torrent_handle | None = None) -> None:
        """Announce to every tracker now, ignoring the tracker's interval."""
        self._h(handle).force_reannounce(0, -1, lt.reannounce_flags_t.ignore_min_interval)

    def pause(self, handle: lt.torrent_handle | None = None) -> None:
        """Pause the torrent: all its connections close and a "stopped" event goes to trackers."""
        self._h(handle).pause()
        self.poll()

    def resume(self, handle: lt.torrent_handle | None = None) -> None:
        """Resume a paused torrent (it re-announces "started" and accepts/makes connections again)."""
        self._h(handle).resume()
        self.poll()

    def describe(self) -> str:
        """Multi-line diagnostics for failure messages: status per torrent, peers, recent errors/alerts."""
        lines = [repr(self)]
        if self._session is None:
            lines.append("  (closed)")
        else:
            for h in self._handles:
                try:
                    lines.append(f"  status: {self.status(h)}")
                    lines.append(f"  peers: {self.peer_info(h)}")
                except RuntimeError as exc:  # an invalid handle must not hide the real failure
                    lines.append(f"  status unavailable: {exc!r}")
        lines += [f"  error: {e}" for e in self.errors]
        lines += [f"  alert: {a}" for a in list(self.alerts)[-30:]]
        return "\n".join(lines)

    def close(self) -> None:
        """Stop the session (bounded by ``stop_tracker_timeout``); idempotent."""
        session, self._session = self._session, None
        if session is None:
            return
        if self._poller is not None:
            self._poller.kill(block=False)
        try:
            session.pause()
        finally:
            self._handles.clear()
            # Destroying the session is what shuts libtorrent down (the bindings have no abort()).
            del session


def _handle_key(handle: lt.torrent_handle) -> str:
    try:
        return str(handle.info_hashes().v1)
    except RuntimeError:  # invalid handle
        return ""


def _alert_torrent(alert: Any) -> str:
    handle = getattr(alert, "handle", None)
    return _handle_key(handle) if handle is not None and handle.is_valid() else ""


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# --------------------------------------------------------------------------------------------------
# aria2
# --------------------------------------------------------------------------------------------------

ARIA2C = shutil.which("aria2c") or "aria2c"


class Aria2Peer:
    """An ``aria2c`` process seeding or downloading one .torrent, on 127.0.0.1 only.

    Output goes to ``log_path`` (a file, never a pipe that could fill up); :meth:`log_text` returns it
    for failure messages. Use as a context manager or call :meth:`kill`: the process is always killed.
    A leecher exits by itself about 3 s after completing (``--seed-time=0``); a seeder runs until killed.
    aria2 cannot announce to ``udp://`` trackers with DHT off, and has no way to dial a given peer: give
    it an ``http://`` tracker, or let the other side dial :attr:`port`.
    """

    def __init__(
        self,
        torrent: bytes | str | os.PathLike,
        directory: str | os.PathLike,
        seed: bool = False,
        port: int | None = None,
        log_dir: str | os.PathLike | None = None,
        extra_args: Sequence[str] = (),
        name: str | None = None,
        debug_log: bool = True,
    ) -> None:
        """Start aria2c for ``torrent`` (bytes or path) with files in ``directory``.

        ``seed=True``: the data is complete in ``directory``; aria2 checks it and seeds until killed.
        ``log_dir`` (default ``directory``'s parent) receives ``<name>.log`` (console output), for bytes
        the .torrent, and with ``debug_log`` ``<name>.debug.log``: aria2's info-level log, which traces
        every tracker request and every peer message (about 130 bytes per 16 KiB block: turn it off for
        big benchmarks); :meth:`wait_announced` needs it.
        """
        self.directory = os.path.abspath(os.fspath(directory))
        os.makedirs(self.directory, exist_ok=True)
        self.seed = seed
        self.port = port or free_port()
        self.name = name or f"aria2-{'seed' if seed else 'leech'}-{self.port}"
        log_dir = os.fspath(log_dir) if log_dir is not None else os.path.dirname(self.directory)
        os.makedirs(log_dir, exist_ok=True)
        if isinstance(torrent, (bytes, bytearray, memoryview)):
            self.torrent_path = os.path.join(log_dir, f"{self.name}.torrent")
            with open(self.torrent_path, "wb") as f:
                f.write(bytes(torrent))
        else:
            self.torrent_path = os.path.abspath(os.fspath(torrent))
        self.log_path = os.path.join(log_dir, f"{self.name}.log")
        self.debug_log_path = os.path.join(log_dir, f"{self.name}.debug.log") if debug_log else None
        debug_args = [f"--log={self.debug_log_path}", "--log-level=info"] if debug_log else []
        options = self.base_args(self.directory, self.port, seed)
        self.args = [ARIA2C, *options, *debug_args, *extra_args, self.torrent_path]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the process
        try:
            self.process: subprocess.Popen[bytes] = subprocess.Popen(
                self.args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                cwd=self.directory,
            )
        except BaseException:
            self._log.close()
            raise

    @staticmethod
    def base_args(directory: str, port: int, seed: bool) -> list[str]:
        """The aria2c options used (from REAL-PEERS.md, plus isolation and loopback-only options)."""
        args = [
            "--no-conf=true",  # ignore any ~/.aria2/aria2.conf
            f"--dir={directory}",
            "--bt-enable-lpd=false",
            "--enable-dht=false",
            "--enable-dht6=false",
            "--enable-peer-exchange=false",
            "--file-allocation=none",
            f"--listen-port={port}",
            "--interface=127.0.0.1",  # listen and dial on loopback only
            "--disable-ipv6=true",
            "--summary-interval=0",
            "--show-console-readout=false",
            "--enable-color=false",
            "--console-log-level=notice",
            "--auto-save-interval=0",
            "--bt-stop-timeout=0",
        ]
        if seed:
            # Without --seed-time aria2 seeds until killed (seed-ratio 0.0 = regardless of share ratio).
            args += ["--check-integrity=true", "--seed-ratio=0.0", "--bt-hash-check-seed=true"]
        else:
            args += ["--seed-time=0"]
        return args

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def __repr__(self) -> str:
        return f"<Aria2Peer {self.name} pid={self.process.pid} rc={self.process.poll()}>"

    @property
    def endpoint(self) -> tuple[str, int]:
        """``(host, port)`` aria2 listens on."""
        return (LOCALHOST, self.port)

    @property
    def returncode(self) -> int | None:
        """The exit code, or ``None`` while running."""
        return self.process.poll()

    def wait(self, timeout: float) -> int | None:
        """Wait at most ``timeout`` seconds for the process to exit; return its code (``None`` if running)."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def wait_listening(self, timeout: float = 10.0) -> bool:
        """Wait (bounded) until aria2 accepts connections on its port (after its startup/hash check)."""
        return wait_port_open(self.port, timeout) and self.returncode is None

    def announces(self) -> int:
        """How many successful (HTTP 200) tracker responses aria2 has logged (needs ``debug_log``)."""
        if self.debug_log_path is None:
            raise RuntimeError("announces() needs Aria2Peer(debug_log=True)")
        return len(_ARIA2_TRACKER_OK.findall(_read_text(self.debug_log_path)))

    def wait_announced(self, timeout: float = 10.0, count: int = 1) -> bool:
        """Wait (bounded) until aria2 has had ``count`` successful tracker responses; return success.

        aria2 announces on its one-second tick, about 1 s after it starts listening (after the hash
        check for a seeder). A peer announcing before that gets no peers back from the tracker and,
        with opentracker's 30-minute interval, would not ask again soon: wait for this first.
        """
        return wait_until(lambda: self.announces() >= count or self.returncode is not None, timeout,
                          interval=0.05) and self.announces() >= count

    def kill(self) -> int | None:
        """Kill the process (SIGKILL, like a peer vanishing) and reap it; idempotent; return its code."""
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGKILL)
            return self.wait(10)
        finally:
            if not self._log.closed:
                self._log.close()

    def log_text(self, limit: int = 20000) -> str:
        """The last ``limit`` characters of aria2's console output."""
        return _read_text(self.log_path)[-limit:]

    def debug_log_text(self, limit: int = 20000) -> str:
        """The last ``limit`` characters of aria2's info-level log (empty without ``debug_log``)."""
        return _read_text(self.debug_log_path)[-limit:] if self.debug_log_path else ""

    def describe(self) -> str:
        """Diagnostics for failure messages: command line, return code and the log tails."""
        text = f"{self!r}\n  args: {' '.join(self.args)}\n  log:\n{self.log_text(4000)}"
        if self.debug_log_path:
            text += f"\n  debug log tail:\n{self.debug_log_text(4000)}"
        return text


_ARIA2_TRACKER_OK = re.compile(r"Response received:\s*\nHTTP/1\.[01] 200")


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"<no log: {exc}>"


# --------------------------------------------------------------------------------------------------
# Lifetime management
# --------------------------------------------------------------------------------------------------


class RealPeers:
    """Creates real peers and stops all of them on :meth:`close` (reverse order), even if a test fails.

    ``base_dir`` holds each peer's working folder and logs. :meth:`describe` gathers every peer's
    diagnostics for assertion messages.
    """

    def __init__(self, base_dir: str | os.PathLike) -> None:
        self.base_dir = os.fspath(base_dir)
        self._peers: list[LibtorrentPeer | Aria2Peer] = []
        self._counter = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def path(self, name: str) -> str:
        """A folder ``base_dir/name`` (created)."""
        folder = os.path.join(self.base_dir, name)
        os.makedirs(folder, exist_ok=True)
        return folder

    def libtorrent(self, name: str | None = None, port: int | None = None, **settings: Any) -> LibtorrentPeer:
        """Start a :class:`LibtorrentPeer` that will be closed with this pool."""
        self._counter += 1
        peer = LibtorrentPeer(port=port, name=name or f"libtorrent-{self._counter}", **settings)
        self._peers.append(peer)
        return peer

    def aria2(
        self,
        torrent: bytes | str | os.PathLike,
        directory: str | os.PathLike,
        seed: bool = False,
        **kwargs: Any,
    ) -> Aria2Peer:
        """Start an :class:`Aria2Peer` (logs under ``base_dir``) that will be killed with this pool."""
        kwargs.setdefault("log_dir", self.path("logs"))
        peer = Aria2Peer(torrent, directory, seed=seed, **kwargs)
        self._peers.append(peer)
        return peer

    def describe(self) -> str:
        """Diagnostics of every peer created so far."""
        return "\n".join(p.describe() for p in self._peers)

    def close(self) -> None:
        """Stop every peer (libtorrent sessions closed, aria2 processes killed); idempotent."""
        errors = []
        while self._peers:
            peer = self._peers.pop()
            try:
                if isinstance(peer, Aria2Peer):
                    peer.kill()
                else:
                    peer.close()
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                errors.append(f"{peer!r}: {exc!r}")
        if errors:
            raise RuntimeError("failed to stop real peers: " + "; ".join(errors))


@pytest.fixture
def real_peers(tmp_path):
    """A :class:`RealPeers` pool in ``tmp_path``; everything is stopped at teardown.

    Its diagnostics are printed at teardown, so pytest shows them (captured output) when a test fails.
    Make it available with ``from realpeers import real_peers  # noqa: F401`` in a conftest.py.
    """
    pool = RealPeers(tmp_path)
    try:
        yield pool
    finally:
        print(pool.describe())
        pool.close()


@pytest.fixture(name="peers")
def peers_fixture(tmp_path: str | os.PathLike) -> Iterator[RealPeers]:
    """A :class:`RealPeers` pool in ``tmp_path/peers`` for one test; described (printed, so pytest shows it
    when the test fails) and stopped at teardown.

    Use it with ``from realpeers import peers_fixture  # noqa: F401  (fixture "peers")``.
    """
    with RealPeers(os.path.join(tmp_path, "peers")) as pool:
        yield pool
        print(pool.describe())
